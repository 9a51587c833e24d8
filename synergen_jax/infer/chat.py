"""Chat-formatted prompts: OpenAI-style messages rendered with the run's chat template.

A run trained on conversation data (`config.data.name="chat"`, data/formats.py) learned InternLM2's
template, `<|im_start|>role\\n ... <|im_end|>\\n`, with the loss on the answers and their closing
`<|im_end|>`. Prompting it the same way, and stopping at `<|im_end|>`, is what makes it answer as it
was taught. The prompt is rendered by the training renderer itself (`formats.chat_document`) and
tokenized span by span as prepare does (`prepare.writer.document_parts`), so it equals the training
example's prefix up to the answer, token for token.

Messages: `[{"role": "system" | "user" | "assistant", "content": str | [part, ...]}]`, a part being
`{"type": "text", "text": str}` or `{"type": "image", "pixels": uint8 [H, W, 3]}` (also accepted:
`{"type": "image", "codes": [tile code grids]}`, images already encoded as `tasks.image_codes` does).
Images may appear in user turns only (training put them there); turns alternate user / assistant
after an optional system turn, and the last one is the user's. The rendered prompt ends with the
assistant header, ready for `Decoder.generate_text` with `stop_ids`.

Whether a run was trained on chat data is read from its prepared data: meta.json counts the chat
examples of each split (`splits.train.tasks.chat`), for `config.data.path` or every mixture component.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

import numpy as np

from synergen_jax.core import storage
from synergen_jax.core.errors import DataError
from synergen_jax.data import formats
from synergen_jax.data.documents import ImageSpan, TextSpan
from synergen_jax.data.layout import Image, Text, layout_example
from synergen_jax.data.mixture import parse_mixture
from synergen_jax.infer.loader import Loaded, prepared_dir

ROLES = ("system", "user", "assistant")
END_PIECE = formats.ASSISTANT_END            # "<|im_end|>"
# The answer that closes the rendered conversation so that the training renderer accepts it; the
# prompt stops before it.
_PLACEHOLDER_ANSWER = "."


def trained_on_chat(loaded: Loaded) -> bool:
  """Whether the run's training data held conversations: any prepared folder it trained on
  (config.data.path, or a mixture's components) counts chat examples in its train split."""
  config = loaded.config
  paths = [config.data.path] if config.data.path else [c.path for c in parse_mixture(config.data)]
  for path in paths:
    meta = loaded.meta if path == prepared_dir(config) else _read_meta(path)
    if (meta or {}).get("splits", {}).get("train", {}).get("tasks", {}).get("chat", 0) > 0:
      return True
  return False


def _read_meta(path: str) -> dict | None:
  meta = storage.path(path) / "meta.json"
  return json.loads(meta.read_text()) if meta.exists() else None


def stop_ids(loaded: Loaded) -> list[int]:
  """The ids that end an answer: `</s>`, and `<|im_end|>` where the tokenizer has it."""
  tok = loaded.tokenizer()
  ids = [tok.special.eos]
  if END_PIECE in tok.pieces:
    ids.append(tok.pieces[END_PIECE])
  return ids


def _check_pixels(pixels: Any, where: str) -> np.ndarray:
  arr = np.asarray(pixels)
  if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[-1] != 3:
    raise DataError(f"{where}: an image's \"pixels\" must be uint8 [H, W, 3], got "
                    f"{arr.dtype} {list(arr.shape)}")
  return arr


def _turn(message: Any, i: int, images: list) -> tuple[str, str]:
  """(role, text with one <image> per image part); appends each image part to `images`."""
  where = f"messages[{i}]"
  if not isinstance(message, dict):
    raise DataError(f"{where} must be a dict with \"role\" and \"content\", got {type(message).__name__}")
  role, content = message.get("role"), message.get("content")
  if role not in ROLES:
    raise DataError(f"{where}: role {role!r} is not one of {', '.join(ROLES)}")
  if isinstance(content, str):
    content = [dict(type="text", text=content)]
  if not isinstance(content, list):
    raise DataError(f"{where}: content must be a string or a list of parts, got "
                    f"{type(content).__name__}")
  pieces = []
  for k, part in enumerate(content):
    here = f"{where}.content[{k}]"
    kind = part.get("type") if isinstance(part, dict) else None
    if kind == "text":
      if not isinstance(part.get("text"), str):
        raise DataError(f"{here}: a text part needs a string \"text\"")
      if formats.IMAGE_PLACEHOLDER in part["text"]:
        raise DataError(f"{here}: the text holds {formats.IMAGE_PLACEHOLDER!r}; give images as "
                        "{\"type\": \"image\", \"pixels\": ...} parts")
      pieces.append(part["text"])
    elif kind == "image":
      if role != "user":
        raise DataError(f"{here}: images go in user turns only (the chat data puts them there)")
      if "codes" in part:
        images.append([np.asarray(c, np.int32) for c in part["codes"]])
      elif "pixels" in part:
        images.append(_check_pixels(part["pixels"], here))
      else:
        raise DataError(f"{here}: an image part needs \"pixels\" (uint8 [H, W, 3])")
      pieces.append(formats.IMAGE_PLACEHOLDER)
    else:
      raise DataError(f"{here}: part type {kind!r} is not \"text\" or \"image\"")
  return role, "".join(pieces)


def render_spans(messages: Sequence[dict]) -> tuple[list, list]:
  """(spans of the prompt: TextSpan | ImageSpan(index), the images in order) by the training
  renderer; raises DataError for what the template cannot render."""
  if not isinstance(messages, (list, tuple)) or not messages:
    raise DataError("messages must be a non-empty list of {\"role\", \"content\"} dicts")
  images: list = []
  turns = [_turn(m, i, images) for i, m in enumerate(messages)]
  if turns[-1][0] != "user":
    raise DataError(f"the last message must be the user's (got {turns[-1][0]!r}): the prompt ends "
                    "with the assistant header, and the model writes the answer")
  record = dict(images=[str(k) for k in range(len(images))], conversations=[
      dict(role=role, content=text) for role, text in turns] + [
      dict(role="assistant", content=_PLACEHOLDER_ANSWER)])
  doc = formats.chat_document(record, "messages", "")
  if not hasattr(doc, "spans"):              # a Skipped: the renderer's reason
    raise DataError(f"messages cannot be rendered with the chat template: {doc.where}")
  last_answer = max(k for k, s in enumerate(doc.spans) if s.loss)
  return list(doc.spans[:last_answer]), images


def messages_prompt(loaded: Loaded, messages: Sequence[dict]) -> dict[str, np.ndarray]:
  """OpenAI-style messages -> a laid-out prompt (unbatched arrays, as decode.caption_prompt gives),
  `<s>` + the rendered conversation + the assistant header, images as their tiles' code spans."""
  tok = loaded.tokenizer()
  missing = [p for p in ("<|im_start|>", END_PIECE) if p not in tok.pieces]
  if missing:
    raise DataError(f"{loaded.workdir}: the text tokenizer has no {', '.join(missing)}; this run "
                    "cannot be prompted with the chat template (use --chat=false)")
  spans, images = render_spans(messages)
  parts = []
  for span in spans:
    if isinstance(span, TextSpan):
      ids = tok.encode(span.text)
      if ids:
        parts.append(Text(ids))
    elif isinstance(span, ImageSpan):
      image = images[int(span.image)]
      grids = image if isinstance(image, list) else _image_codes(loaded, image)
      parts += [Image(np.asarray(g)) for g in grids]
  return layout_example(parts, loaded.mc.fold, loaded.special, add_eos=False)


def _image_codes(loaded: Loaded, pixels: np.ndarray) -> list[np.ndarray]:
  # tasks.py prompts through this module (tasks.caption), so it is imported when first needed.
  from synergen_jax.infer import tasks
  return tasks.image_codes(loaded, pixels)


def question_messages(question: str, codes: Sequence[np.ndarray] | None = None) -> list[dict]:
  """One user turn: the image (tile code grids, when given) followed by `question`."""
  content = ([dict(type="image", codes=list(codes))] if codes is not None else [])
  return [dict(role="user", content=content + [dict(type="text", text=question)])]
