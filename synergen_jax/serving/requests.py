"""Request bodies -> checked settings. Every refusal is a 400 naming the field (`param`) and value.

The fields are OpenAI's (chat completions and image generations) with their ranges; fields OpenAI
has but this server cannot honour are accepted only at their neutral value (n=1, penalties 0,
logprobs false), and unknown fields are refused, as OpenAI does, so a typo is not silently ignored.
Extensions: `guidance_scale` (classifier-free guidance of image generation) and `top_k`.
"""

from __future__ import annotations

import dataclasses
import math
import secrets
from typing import Any

from synergen_jax.serving.errors import ApiError, bad

MAX_SEED = 2**32 - 1          # a row's PRNG key is made from a uint32 seed (decode.row_keys)
MAX_STOP = 4


@dataclasses.dataclass(frozen=True)
class ChatRequest:
  messages: list                 # OpenAI-form messages, structure checked; images not yet decoded
  max_tokens: int | None         # None: as many as the context and the server's cap allow
  temperature: float
  top_p: float
  top_k: int
  seed: int
  stop: tuple[str, ...]
  stream: bool
  include_usage: bool


@dataclasses.dataclass(frozen=True)
class ImageRequest:
  prompt: str
  n: int
  seed: int
  guidance_scale: float | None   # None: the server's --cfg


_CHAT_FIELDS = {"model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p",
                "top_k", "seed", "stop", "stream", "stream_options", "n", "user", "logprobs",
                "presence_penalty", "frequency_penalty"}
_IMAGE_FIELDS = {"model", "prompt", "n", "seed", "guidance_scale", "response_format", "size", "user",
                 "quality", "style"}


def _is_int(x) -> bool:
  return isinstance(x, int) and not isinstance(x, bool)


def _number(body: dict, name: str, default: float, low: float, high: float, *,
            low_open: bool = False) -> float:
  x = body.get(name, default)
  if x is None:
    return default
  if not (_is_int(x) or isinstance(x, float)) or not math.isfinite(x):
    raise bad(f"'{name}' must be a number, got {x!r}", name)
  if x > high or x < low or (low_open and x == low):
    raise bad(f"'{name}' must be in {'(' if low_open else '['}{low}, {high}], got {x!r}", name)
  return float(x)


def _integer(body: dict, name: str, default: int | None, low: int, high: int) -> int | None:
  x = body.get(name, default)
  if x is None:
    return default
  if not _is_int(x):
    raise bad(f"'{name}' must be an integer, got {x!r}", name)
  if not low <= x <= high:
    raise bad(f"'{name}' must be in [{low}, {high}], got {x!r}", name)
  return x


def _seed(body: dict) -> int:
  seed = _integer(body, "seed", None, 0, MAX_SEED)
  return secrets.randbelow(MAX_SEED + 1) if seed is None else seed


def _known(body: Any, fields: set[str]) -> dict:
  if not isinstance(body, dict):
    raise bad(f"the request body must be a JSON object, got {type(body).__name__}")
  unknown = sorted(set(body) - fields)
  if unknown:
    raise bad(f"unrecognized request argument: {unknown[0]!r}", unknown[0])
  return body


def _neutral(body: dict, name: str, value) -> None:
  if name in body and body[name] is not None and body[name] != value:
    raise bad(f"'{name}' is not supported by this server (only {value!r}), got {body[name]!r}", name)


def check_model(body: dict, served: str) -> None:
  model = body.get("model")
  if model is None:
    return
  if not isinstance(model, str):
    raise bad(f"'model' must be a string, got {model!r}", "model")
  if model != served:
    raise ApiError(404, f"the model {model!r} does not exist; this server serves {served!r}",
                   "model", "model_not_found")


def chat_request(body: Any, served: str, max_tokens_cap: int) -> ChatRequest:
  body = _known(body, _CHAT_FIELDS)
  check_model(body, served)
  for name, value in (("n", 1), ("logprobs", False), ("presence_penalty", 0),
                      ("frequency_penalty", 0)):
    _neutral(body, name, value)
  if body.get("user") is not None and not isinstance(body["user"], str):
    raise bad(f"'user' must be a string, got {body['user']!r}", "user")
  messages = check_messages(body.get("messages"))
  name = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
  max_tokens = _integer(body, name, None, 1, max_tokens_cap)
  stop = body.get("stop")
  if stop is None:
    stop = ()
  elif isinstance(stop, str):
    stop = (stop,)
  elif (isinstance(stop, list) and len(stop) <= MAX_STOP and
        all(isinstance(s, str) for s in stop)):
    stop = tuple(stop)
  else:
    raise bad(f"'stop' must be a string or a list of at most {MAX_STOP} strings, got {stop!r}", "stop")
  if any(not s for s in stop):
    raise bad("'stop' strings must not be empty", "stop")
  stream = body.get("stream", False)
  if stream is None:
    stream = False
  if not isinstance(stream, bool):
    raise bad(f"'stream' must be a boolean, got {stream!r}", "stream")
  options = body.get("stream_options") or {}
  if not isinstance(options, dict) or set(options) - {"include_usage"} or not isinstance(
      options.get("include_usage", False), bool):
    raise bad(f"'stream_options' must be {{\"include_usage\": bool}}, got {options!r}",
              "stream_options")
  return ChatRequest(
      messages=messages, max_tokens=max_tokens,
      temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
      top_p=_number(body, "top_p", 1.0, 0.0, 1.0, low_open=True),
      top_k=_integer(body, "top_k", 0, 0, 1 << 20), seed=_seed(body), stop=stop, stream=stream,
      include_usage=options.get("include_usage", False))


def check_messages(messages: Any) -> list:
  """OpenAI's message shapes: role, then content as a string or a list of text / image_url parts."""
  if not isinstance(messages, list) or not messages:
    raise bad(f"'messages' must be a non-empty list, got {messages!r:.80}", "messages")
  for i, m in enumerate(messages):
    where = f"messages[{i}]"
    if not isinstance(m, dict):
      raise bad(f"{where} must be an object, got {m!r:.80}", where)
    if m.get("role") not in ("system", "user", "assistant", "developer"):
      raise bad(f"{where}.role must be system, developer, user or assistant, got {m.get('role')!r:.80}",
                f"{where}.role")
    extra = sorted(set(m) - {"role", "content", "name"})
    if extra:
      raise bad(f"{where}: unrecognized field {extra[0]!r}", f"{where}.{extra[0]}")
    content = m.get("content")
    if isinstance(content, str):
      continue
    if not isinstance(content, list) or not content:
      raise bad(f"{where}.content must be a string or a non-empty list of parts, got "
                f"{content!r:.80}", f"{where}.content")
    for k, part in enumerate(content):
      here = f"{where}.content[{k}]"
      kind = part.get("type") if isinstance(part, dict) else None
      if kind == "text" and isinstance(part.get("text"), str) and set(part) == {"type", "text"}:
        continue
      if kind == "image_url" and set(part) == {"type", "image_url"} and image_url_of(part):
        continue
      raise bad(f"{here} must be {{\"type\": \"text\", \"text\": str}} or {{\"type\": \"image_url\", "
                f"\"image_url\": {{\"url\": str}}}}, got {part!r:.120}", here)
  return messages


def image_url_of(part: dict) -> str | None:
  """The URL of an image_url part ({"url": ..., "detail": ...} or a bare string), None if malformed."""
  value = part.get("image_url")
  if isinstance(value, str):
    return value
  if (isinstance(value, dict) and isinstance(value.get("url"), str) and
      set(value) <= {"url", "detail"}):
    return value["url"]
  return None


def image_request(body: Any, served: str, image_size: int, max_n: int) -> ImageRequest:
  body = _known(body, _IMAGE_FIELDS)
  check_model(body, served)
  prompt = body.get("prompt")
  if not isinstance(prompt, str) or not prompt.strip():
    raise bad(f"'prompt' must be a non-empty string, got {prompt!r:.80}", "prompt")
  fmt = body.get("response_format", "b64_json")
  if fmt not in ("b64_json", None):
    raise bad(f"'response_format' must be \"b64_json\" (this server keeps no files to link to), "
              f"got {fmt!r:.80}", "response_format")
  size = body.get("size")
  if size not in (None, "auto", f"{image_size}x{image_size}"):
    raise bad(f"'size' must be \"{image_size}x{image_size}\" (the image tokenizer's size), got "
              f"{size!r:.80}", "size")
  for name in ("user", "quality", "style"):
    if body.get(name) is not None and not isinstance(body[name], str):
      raise bad(f"'{name}' must be a string, got {body[name]!r:.80}", name)
  return ImageRequest(prompt=prompt, n=_integer(body, "n", 1, 1, max_n), seed=_seed(body),
                      guidance_scale=_number(body, "guidance_scale", None, 1.0, 20.0)
                      if body.get("guidance_scale") is not None else None)
