"""The model's two user-facing tasks as plain functions: text -> images, images -> text.

Both run in fixed-size chunks with one padded prompt length, so a long list compiles once.
Prompts follow the training format (data/prepare.py): generation reads
`config.data.generation_prompt` followed by the user's text (the "<UNCOND>" prompt is the
unconditional stream of classifier-free guidance); captioning reads the image span(s) followed by
`config.data.caption_prompt`, or by a question.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from synergen_jax.data import images as image_ops
from synergen_jax.infer.decode import GREEDY, Sampling, caption_prompt, generation_prompt
from synergen_jax.infer.loader import Loaded


def _chunks(items: list, size: int):
  """Fixed-size chunks, the last one filled up with copies of its first item; yields (chunk, real)."""
  for start in range(0, len(items), size):
    chunk = items[start:start + size]
    real = len(chunk)
    yield chunk + [chunk[0]] * (size - real), real


def generate(loaded: Loaded, texts: Sequence[str], *, cfg_scale: float = 7.5,
             sampling: Sampling = Sampling(), seed: int = 0, batch_size: int = 64) -> np.ndarray:
  """One image per text: uint8 [N, S, S, C] (the image tokenizer decodes the sampled codes)."""
  return loaded.image_tokenizer.decode(
      generate_codes(loaded, texts, cfg_scale=cfg_scale, sampling=sampling, seed=seed,
                     batch_size=batch_size))


def generate_codes(loaded: Loaded, texts: Sequence[str], *, cfg_scale: float = 7.5,
                   sampling: Sampling = Sampling(), seed: int = 0, batch_size: int = 64) -> np.ndarray:
  d = loaded.config.data
  prefix = loaded.encode_text(d.generation_prompt)
  prompts = [prefix + loaded.encode_text(t) for t in texts]
  uncond = loaded.encode_text(d.uncond_prompt)
  pad_to = max(len(generation_prompt(p, loaded.mc.fold, loaded.special)["text_tokens"])
               for p in prompts + [uncond])
  out = []
  for k, (chunk, real) in enumerate(_chunks(prompts, min(batch_size, len(prompts)))):
    codes = loaded.decoder.generate_images(chunk, uncond_prompt=uncond, cfg_scale=cfg_scale,
                                           sampling=sampling, seed=seed * 1_000_003 + k, pad_to=pad_to)
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


def caption(loaded: Loaded, tile_codes: Sequence[Sequence[np.ndarray]], *, question: str | None = None,
            max_new_tokens: int = 32, sampling: Sampling = GREEDY, seed: int = 0,
            batch_size: int = 128) -> list[str]:
  """Per image (a list of tile code grids): the generated caption, or the answer to `question`."""
  prompt_ids = loaded.encode_text(question if question is not None else
                                  loaded.config.data.caption_prompt)
  laid = [caption_prompt(codes, prompt_ids, loaded.mc.fold, loaded.special) for codes in tile_codes]
  pad_to = max(len(x["text_tokens"]) for x in laid)
  texts = []
  for chunk, real in _chunks(laid, min(batch_size, len(laid))):
    ids = loaded.decoder.generate_text(chunk, max_new_tokens, sampling=sampling, seed=seed,
                                       pad_to=pad_to)
    texts += [loaded.tokenizer().decode(x).strip() for x in ids[:real]]
  return texts
