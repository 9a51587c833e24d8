"""Chat messages -> one laid-out prompt (unbatched arrays, as decode.caption_prompt gives).

A run trained on conversations is prompted with its chat template (infer/chat.py) and stops at its
end-of-turn id. A run that never saw a conversation (the demo, configs/tiny.py) is prompted the way
`sample --image --question` does: the last user message's images, then its text as the question (the
caption prompt when it has no text); earlier turns are not part of such a prompt. `--chat` picks
(auto: the chat template exactly when the run trained on chat data).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from synergen_jax.core.errors import DataError
from synergen_jax.infer import chat, tasks
from synergen_jax.infer.decode import caption_prompt
from synergen_jax.infer.loader import Loaded
from synergen_jax.serving.errors import bad
from synergen_jax.serving.image_input import ImageLimits, pixels_of
from synergen_jax.serving.requests import image_url_of


async def decoded_messages(messages: list, limits: ImageLimits) -> list[dict]:
  """OpenAI messages (checked by requests.check_messages) -> infer/chat.py's form: image_url parts
  become {"type": "image", "pixels": uint8 [H, W, 3]}, "developer" turns "system" ones."""
  out = []
  for i, m in enumerate(messages):
    content = m["content"]
    if isinstance(content, list):
      parts = []
      for k, part in enumerate(content):
        if part["type"] == "image_url":
          where = f"messages[{i}].content[{k}].image_url"
          parts.append({"type": "image", "pixels": await pixels_of(image_url_of(part), limits, where)})
        else:
          parts.append(part)
      content = parts
    out.append({"role": "system" if m["role"] == "developer" else m["role"], "content": content})
  return out


def chat_prompt(loaded: Loaded, messages: list[dict], use_template: bool) -> dict[str, np.ndarray]:
  """The laid-out prompt (runs the image tokenizer: call it off the event loop)."""
  if use_template:
    try:
      return chat.messages_prompt(loaded, messages)
    except DataError as e:
      raise bad(f"messages: {e}", "messages") from e
  last = messages[-1]
  if last["role"] != "user":
    raise bad(f"the last message must be the user's, got {last['role']!r}", "messages")
  content = last["content"]
  parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
  images = [p["pixels"] for p in parts if p["type"] == "image"]
  text = "".join(p["text"] for p in parts if p["type"] == "text").strip()
  question = text or loaded.config.data.caption_prompt
  codes = [grid for pixels in images for grid in tasks.image_codes(loaded, pixels)]
  return caption_prompt(codes, loaded.encode_text(question), loaded.mc.fold, loaded.special)


def stop_ids(loaded: Loaded, use_template: bool) -> Sequence[int]:
  return chat.stop_ids(loaded) if use_template else [loaded.special.eos]
