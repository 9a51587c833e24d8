"""The model's two user-facing tasks as plain functions: text -> images, images -> text.

Both run in fixed-size chunks with one padded prompt length, so a long list compiles once.
Prompts follow the training format (prepare/writer.py): generation reads
`config.data.generation_prompt` followed by the user's text (the "<UNCOND>" prompt is the
unconditional stream of classifier-free guidance); captioning reads the image span(s) followed by
`config.data.caption_prompt`, or by a question. A run trained on conversations (chat.trained_on_chat)
is asked through its chat template instead, one user turn holding the image(s) and the question (or
the caption prompt), and its answer ends at `<|im_end|>`; `chat=True|False` overrides.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from synergen_jax.data import images as image_ops
from synergen_jax.infer import chat as chat_lib
from synergen_jax.infer.decode import GREEDY, Sampling, caption_prompt, generation_prompt
from synergen_jax.infer.loader import Loaded


def _chunks(items: list, size: int):
  """Fixed-size chunks, the last one filled up with copies of its first item; yields (chunk, real)."""
  for start in range(0, len(items), size):
    chunk = items[start:start + size]
    real = len(chunk)
    yield chunk + [chunk[0]] * (size - real), real


def generate(loaded: Loaded, texts: Sequence[str], *, cfg_scale: float = 7.5,
             sampling: Sampling = Sampling(), seed: int = 0, batch_size: int = 64,
             **layout) -> np.ndarray:
  """One image per text: uint8 [N, S, S, C] (the image tokenizer decodes the sampled codes)."""
  return loaded.image_tokenizer.decode(
      generate_codes(loaded, texts, cfg_scale=cfg_scale, sampling=sampling, seed=seed,
                     batch_size=batch_size, **layout))


def generation_pad_to(loaded: Loaded, texts: Sequence[str]) -> int:
  """The prompt length (slots) that `texts` are padded to: the longest, or the unconditional one."""
  d = loaded.config.data
  prefix = loaded.encode_text(d.generation_prompt)
  prompts = [prefix + loaded.encode_text(t) for t in texts] + [loaded.encode_text(d.uncond_prompt)]
  return max(len(generation_prompt(p, loaded.mc.fold, loaded.special)["text_tokens"]) for p in prompts)


def generate_codes(loaded: Loaded, texts: Sequence[str], *, cfg_scale: float = 7.5,
                   sampling: Sampling = Sampling(), seed: int = 0, batch_size: int = 64,
                   seeds: Sequence[int] | None = None, pad_to: int | None = None,
                   rows: int | None = None) -> np.ndarray:
  """Code grids [N, h, w]. `seeds` (one per text) make each image depend on its own seed only, and
  `pad_to` (generation_pad_to of a larger list) fixes the prompt length: together they give a job
  the same images whichever texts share a batch, e.g. after a resume. Else `seed` seeds each chunk.
  `rows`: every chunk filled up to exactly that many prompts (one compiled shape, divisible by the
  mesh's batch devices); default min(batch_size, len(texts))."""
  d = loaded.config.data
  prefix = loaded.encode_text(d.generation_prompt)
  prompts = [prefix + loaded.encode_text(t) for t in texts]
  uncond = loaded.encode_text(d.uncond_prompt)
  pad_to = pad_to or generation_pad_to(loaded, texts)
  size = rows or min(batch_size, len(prompts))
  seed_chunks = _chunks(list(seeds), size) if seeds is not None else None
  out = []
  for k, (chunk, real) in enumerate(_chunks(prompts, size)):
    chunk_seed = next(seed_chunks)[0] if seeds is not None else seed * 1_000_003 + k
    codes = loaded.decoder.generate_images(chunk, uncond_prompt=uncond, cfg_scale=cfg_scale,
                                           sampling=sampling, seed=chunk_seed, pad_to=pad_to)
    out.append(codes[:real])
  return np.concatenate(out)


def image_codes(loaded: Loaded, pixels: np.ndarray) -> list[np.ndarray]:
  """One decoded image (uint8 [H, W, 3]) -> its tiles' code grids, as prepare makes them."""
  d, tok = loaded.config.data, loaded.image_tokenizer
  size, channels = tok.image_size, tok.channels
  if d.max_tiles > 1:
    tiles = [image_ops.fit(t, size, channels, "exact")
             for t in image_ops.dynamic_tiles(pixels, size, d.max_tiles, d.thumbnail)]
  else:
    # The padding colour the training images got (prepare records the source's background).
    tiles = [image_ops.fit(pixels, size, channels, d.image_fit, loaded.meta.get("background", 255))]
  return list(tok.encode(np.stack(tiles)))


def use_chat(loaded: Loaded, chat: bool | None) -> bool:
  """`chat` as given, else whether the run was trained on conversations."""
  return chat_lib.trained_on_chat(loaded) if chat is None else bool(chat)


def answer_prompt(loaded: Loaded, codes: Sequence[np.ndarray], question: str | None,
                  chat: bool) -> dict[str, np.ndarray]:
  """The laid-out prompt asking `question` (None: the caption prompt) about one image's tiles."""
  text = loaded.config.data.caption_prompt if question is None else question
  if chat:
    return chat_lib.messages_prompt(loaded, chat_lib.question_messages(text, codes))
  ids = loaded.encode_text(text)
  return caption_prompt(codes, ids, loaded.mc.fold, loaded.special)


def caption(loaded: Loaded, tile_codes: Sequence[Sequence[np.ndarray]], *,
            question: str | Sequence[str | None] | None = None, max_new_tokens: int = 32,
            sampling: Sampling = GREEDY, seed: int = 0, batch_size: int = 128,
            seeds: Sequence[int] | None = None, pad_to: int | None = None,
            rows: int | None = None, chat: bool | None = None) -> list[str]:
  """Per image (a list of tile code grids): the generated caption, or the answer to `question` (one
  for all images, or one per image, None: the caption prompt). `seeds` / `pad_to` / `rows` as in
  generate_codes; `chat` as in use_chat."""
  chat = use_chat(loaded, chat)
  laid = [answer_prompt(loaded, codes, _question(question, i), chat)
          for i, codes in enumerate(tile_codes)]
  stops = chat_lib.stop_ids(loaded) if chat else None
  pad_to = pad_to or max(len(x["text_tokens"]) for x in laid)
  size = rows or min(batch_size, len(laid))
  seed_chunks = _chunks(list(seeds), size) if seeds is not None else None
  texts = []
  for chunk, real in _chunks(laid, size):
    chunk_seed = next(seed_chunks)[0] if seeds is not None else seed
    ids = loaded.decoder.generate_text(chunk, max_new_tokens, sampling=sampling, seed=chunk_seed,
                                       pad_to=pad_to, stop_tokens=stops)
    texts += [loaded.tokenizer().decode(x).strip() for x in ids[:real]]
  return texts


def caption_pad_to(loaded: Loaded, questions: Sequence[str | None], chat: bool | None = None) -> int:
  """The longest caption prompt any image could need with these questions: every tile an image can
  have (data.max_tiles, and the thumbnail) and the longest question."""
  d, mc = loaded.config.data, loaded.mc
  chat = use_chat(loaded, chat)
  tiles = 1 if d.max_tiles <= 1 else d.max_tiles + int(d.thumbnail)
  grids = [np.zeros(mc.code_grid, np.int32)] * tiles
  return max(len(answer_prompt(loaded, grids, q, chat)["text_tokens"]) for q in set(questions))


def _question(question: str | Sequence[str | None] | None, i: int) -> str | None:
  """Image i's question (None: the caption prompt)."""
  if question is not None and not isinstance(question, str):
    return question[i]
  return question
