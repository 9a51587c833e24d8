"""SynerGenVLProcessor: images and text -> what `SynerGenVLForCausalLM.generate(**inputs)` and
`generate_images(**inputs)` take, laid out exactly as synergen_jax lays out its prompts.

  processor = AutoProcessor.from_pretrained(DIR, trust_remote_code=True)
  inputs = processor(images=image, text="", return_tensors="pt")        # caption an image
  ids = model.generate(**inputs, max_new_tokens=32, do_sample=False)
  text = processor.batch_decode(ids[:, inputs["input_ids"].shape[1]:])
  inputs = processor(text="a red circle", generate_image=True, return_tensors="pt")
  grids = model.generate_images(**inputs, cfg_scale=7.5)                 # [N, h, w] codes
  pixels = processor.decode_images(grids)                               # uint8 [N, S, S, C]

Images (PIL images or uint8 arrays HxW / HxWx3 / HxWx4) are made RGB (RGBA composited on white),
fitted as prepare fitted them (config.json's image_fit / background, or InternVL's dynamic tiles when
max_tiles > 1) and encoded into code grids by the export's image tokenizer
(image_tokenizer_synergen_vl.py). Each image becomes `<boi> [windows] <eoi>` per tile; a window slot
holds fold_h x fold_w codes (`image_codes`, `window_ids`, `modality` 1) and the pad id in `input_ids`.

Text: `<image>` in the text marks where each image goes (images without placeholders go first, as
the caption prompt puts them). An empty text asks for a caption: config.json's caption_prompt. A
chat-trained export (config.json's trained_on_chat) asks through its chat template
(`apply_chat_template`, InternLM2's `<|im_start|>` turns; the answer stops at `<|im_end|>`, which
generation_config.json lists as an end token): a text that is not already a rendered conversation
becomes one user turn holding the images and the text. `chat=False|True` overrides.

Several prompts are left-padded together (attention_mask 0 on the padding).
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch
from PIL import Image as PILImage
from transformers import AutoTokenizer, BatchFeature

from .image_tokenizer_synergen_vl import load_image_tokenizer

IMAGE_PLACEHOLDER = "<image>"
TURN_START = "<|im_start|>"


# -- pixels, as synergen_jax/data/images.py makes them ---------------------------------------------

def to_rgb(image) -> np.ndarray:
  """PIL image / uint8 array -> uint8 [H, W, 3]; RGBA is composited on white."""
  if isinstance(image, torch.Tensor):
    image = image.cpu().numpy()
  if isinstance(image, np.ndarray):
    array = image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image
    if array.dtype != np.uint8:
      raise ValueError(f"image array of dtype {array.dtype}; expected uint8")
    image = PILImage.fromarray(array)
  if image.mode in ("RGBA", "LA", "P", "PA"):
    image = image.convert("RGBA")
    image = PILImage.alpha_composite(PILImage.new("RGBA", image.size, (255, 255, 255, 255)), image)
  return np.asarray(image.convert("RGB"), np.uint8)


def fit(image: np.ndarray, size: int, channels: int, mode: str, background: int) -> np.ndarray:
  """uint8 [H, W, 3] -> uint8 [size, size, channels] (resize: stretch; pad: centre on background).
  A copy of synergen_jax/data/images.py's fitting: remote code travels without synergen_jax, and
  tests/convert/test_full_export.py holds the two to the same prompts."""
  h, w = image.shape[:2]
  if mode == "exact":
    if (h, w) != (size, size):
      raise ValueError(f"image of {w}x{h} pixels; image_fit 'exact' needs {size}x{size}")
    out = image
  elif mode == "resize":
    out = np.asarray(PILImage.fromarray(image).resize((size, size), PILImage.BICUBIC), np.uint8)
  elif mode == "pad":
    if max(h, w) > size:
      scale = size / max(h, w)
      nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
      image = np.asarray(PILImage.fromarray(image).resize((nw, nh), PILImage.BICUBIC), np.uint8)
      h, w = nh, nw
    out = np.full((size, size, 3), background, np.uint8)
    top, left = (size - h) // 2, (size - w) // 2
    out[top:top + h, left:left + w] = image
  else:
    raise ValueError(f"image_fit {mode!r}; expected resize, pad or exact")
  if channels == 1:
    return np.asarray(PILImage.fromarray(out).convert("L"), np.uint8)[..., None]
  return out


def tile_grid(width: int, height: int, max_tiles: int, tile_size: int) -> tuple[int, int]:
  """InternVL-1.5's (cols, rows) grid closest to the aspect ratio, ties as InternVL breaks them."""
  aspect = width / height
  grids = sorted({(i, j) for n in range(1, max_tiles + 1) for i in range(1, n + 1)
                  for j in range(1, n + 1) if 1 <= i * j <= max_tiles}, key=lambda g: g[0] * g[1])
  best, best_diff, area = (1, 1), float("inf"), width * height
  for cols, rows in grids:
    diff = abs(aspect - cols / rows)
    if diff < best_diff:
      best, best_diff = (cols, rows), diff
    elif diff == best_diff and area > 0.5 * tile_size * tile_size * cols * rows:
      best = (cols, rows)
  return best


def dynamic_tiles(image: np.ndarray, tile: int, max_tiles: int, thumbnail: bool) -> list:
  h, w = image.shape[:2]
  cols, rows = tile_grid(w, h, max_tiles, tile)
  resize = lambda im, size: np.asarray(PILImage.fromarray(im).resize(size, PILImage.BICUBIC), np.uint8)
  if cols * rows == 1:
    return [resize(image, (tile, tile))]
  big = resize(image, (cols * tile, rows * tile))
  tiles = [big[r * tile:(r + 1) * tile, c * tile:(c + 1) * tile] for r in range(rows)
           for c in range(cols)]
  return tiles + ([resize(image, (tile, tile))] if thumbnail else [])


# -- the processor -------------------------------------------------------------------------------

class SynerGenVLProcessor:
  """Made by `from_pretrained(DIR)`; `tokenizer` is the export's text tokenizer (AutoTokenizer),
  `image_tokenizer` its image tokenizer, `config` config.json as a dict."""

  def __init__(self, config: dict, tokenizer, image_tokenizer):
    self.config, self.tokenizer, self.image_tokenizer = config, tokenizer, image_tokenizer
    self.special = dict(config["special"])
    self.fold = list(config["fold"])
    self.chat_template = getattr(tokenizer, "chat_template", None)

  @classmethod
  def register_for_auto_class(cls, auto_class="AutoProcessor"):
    """What AutoProcessor calls on remote-code classes (ProcessorMixin's hook); nothing to record."""

  @classmethod
  def from_pretrained(cls, path, device=None, **kwargs) -> "SynerGenVLProcessor":
    path = os.fspath(path)
    config = json.load(open(os.path.join(path, "config.json")))
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=True)
    image_tokenizer = load_image_tokenizer(os.path.join(path, "image_tokenizer"), device)
    return cls(config, tokenizer, image_tokenizer)

  # -- text --

  def encode(self, text: str) -> list[int]:
    """Text -> ids as synergen_jax encodes it (no <s>: the layout adds it)."""
    return list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []

  def decode(self, ids, **kwargs) -> str:
    """Ids -> text; the six sequence-format ids (<pad> <s> </s> <boi> <eoi> <UNCOND>) dropped."""
    drop = set(self.special.values())
    ids = [int(i) for i in (ids.tolist() if hasattr(ids, "tolist") else ids) if int(i) not in drop]
    return self.tokenizer.decode(ids, skip_special_tokens=False).strip()

  def batch_decode(self, rows, **kwargs) -> list[str]:
    return [self.decode(r) for r in rows]

  def apply_chat_template(self, messages, add_generation_prompt: bool = True, tokenize=False,
                          **kwargs) -> str:
    """OpenAI-style messages (content a string or parts {"type": "text" | "image"}) -> the prompt
    text, `<image>` where each image goes; pass it with the images to the processor."""
    if not self.chat_template:
      raise ValueError("this export was not trained on conversations: it has no chat template; "
                       "prompt it with plain text")
    return self.tokenizer.apply_chat_template(messages, tokenize=False,
                                              add_generation_prompt=add_generation_prompt, **kwargs)

  # -- images --

  def image_codes(self, image) -> list[torch.Tensor]:
    """One image -> its tiles' code grids, as prepare makes them."""
    c, tok = self.config, self.image_tokenizer
    size, channels = tok.image_size, tok.channels
    pixels = to_rgb(image)
    if c.get("max_tiles", 1) > 1:
      tiles = [fit(t, size, channels, "exact")
               for t in dynamic_tiles(pixels, size, c["max_tiles"], c.get("thumbnail", False))]
    else:
      tiles = [fit(pixels, size, channels, c.get("image_fit", "resize"), c.get("background", 255))]
    return list(tok.encode(np.stack(tiles)).cpu())

  def decode_images(self, grids) -> np.ndarray:
    """Code grids [N, h, w] (generate_images' output) -> uint8 pixels [N, S, S, C]."""
    return self.image_tokenizer.decode(grids).cpu().numpy()

  # -- prompts --

  def _windows(self, grid: torch.Tensor) -> torch.Tensor:
    fh, fw = self.fold
    h, w = grid.shape
    return grid.reshape(h // fh, fh, w // fw, fw).transpose(1, 2).reshape(-1, fh * fw)

  def _layout(self, text: str, images: list) -> dict:
    """One prompt's slots: <s>, then text ids and `<boi> windows <eoi>` per tile where each
    `<image>` stands."""
    r = self.fold[0] * self.fold[1]
    sp = self.special
    ids, codes, windows, modality = [sp["bos"]], [[0] * r], [0], [0]

    def text_slots(chunk):
      for i in self.encode(chunk):
        ids.append(i); codes.append([0] * r); windows.append(0); modality.append(0)

    chunks = text.split(IMAGE_PLACEHOLDER)
    if len(chunks) - 1 != len(images):
      raise ValueError(f"the text has {len(chunks) - 1} {IMAGE_PLACEHOLDER} placeholders for "
                       f"{len(images)} images")
    for k, chunk in enumerate(chunks):
      if k:
        for grid in self.image_codes(images[k - 1]):
          ids.append(sp["boi"]); codes.append([0] * r); windows.append(0); modality.append(0)
          for w, window in enumerate(self._windows(torch.as_tensor(grid))):
            ids.append(sp["pad"]); codes.append(window.tolist()); windows.append(w); modality.append(1)
          ids.append(sp["eoi"]); codes.append([0] * r); windows.append(0); modality.append(0)
      text_slots(chunk)
    if len(ids) > 1 and ids[1] == sp["bos"]:      # a rendered template starts with <s> itself
      for field in (ids, codes, windows, modality):
        del field[1]
    return dict(input_ids=ids, image_codes=codes, window_ids=windows, modality=modality)

  def _prompt_text(self, text: str, images: list, chat: bool) -> str:
    if chat and TURN_START not in text:
      question = text or self.config.get("caption_prompt", "")
      content = [dict(type="image")] * len(images) + [dict(type="text", text=question)]
      return self.apply_chat_template([dict(role="user", content=content)])
    if IMAGE_PLACEHOLDER in text:
      return text
    return IMAGE_PLACEHOLDER * len(images) + (text or (self.config.get("caption_prompt", "")
                                                       if images else ""))

  def _pad(self, rows: list[dict], prefix: str = "") -> dict:
    length = max(len(r["input_ids"]) for r in rows)
    r = self.fold[0] * self.fold[1]
    out = {}
    for key, fill in (("input_ids", self.special["pad"]), ("image_codes", [0] * r),
                      ("window_ids", 0), ("modality", 0)):
      if key in rows[0]:
        out[prefix + key] = torch.tensor([[fill] * (length - len(x[key])) + list(x[key])
                                          for x in rows], dtype=torch.long)
    out[prefix + "attention_mask"] = torch.tensor(
        [[0] * (length - len(x["input_ids"])) + [1] * len(x["input_ids"]) for x in rows],
        dtype=torch.long)
    return out

  def __call__(self, images=None, text=None, return_tensors="pt", generate_image: bool = False,
               chat: bool | None = None, **kwargs) -> BatchFeature:
    """Understanding (default): `images` (one per prompt, a list per prompt, or None) and `text`
    (str or list) -> input_ids, attention_mask, image_codes, window_ids, modality.
    generate_image=True: `text` -> input_ids, attention_mask and the unconditional prompt's
    uncond_input_ids, uncond_attention_mask (for generate_images' classifier-free guidance)."""
    if return_tensors not in (None, "pt"):
      raise ValueError(f"return_tensors={return_tensors!r}: this processor returns torch tensors")
    texts = [text] if text is None or isinstance(text, str) else list(text)
    sp = self.special
    if generate_image:
      if images is not None:
        raise ValueError("generate_image=True draws from text alone; pass no images")
      prefix = self.encode(self.config.get("generation_prompt", ""))
      rows = [dict(input_ids=[sp["bos"], *prefix, *self.encode(t or ""), sp["boi"]]) for t in texts]
      uncond = [sp["bos"], *self.encode(self.config.get("uncond_prompt", "")), sp["boi"]]
      return BatchFeature({**self._pad(rows), **self._pad([dict(input_ids=uncond)], "uncond_")})
    if images is None:
      per_prompt = [[] for _ in texts]
    elif isinstance(images, (list, tuple)) and len(texts) > 1:
      per_prompt = [list(x) if isinstance(x, (list, tuple)) else [x] for x in images]
    else:
      per_prompt = [list(images) if isinstance(images, (list, tuple)) else [images]]
    if len(texts) == 1 and len(per_prompt) > 1:
      texts = texts * len(per_prompt)
    if len(per_prompt) != len(texts):
      raise ValueError(f"{len(texts)} texts for {len(per_prompt)} prompts' images")
    chat = bool(self.config.get("trained_on_chat")) if chat is None else chat
    rows = [self._layout(self._prompt_text(t or "", imgs, chat), imgs)
            for t, imgs in zip(texts, per_prompt)]
    return BatchFeature(self._pad(rows))
