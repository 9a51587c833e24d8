"""Pixels in, pixels out: decoding, size normalisation, dynamic-resolution tiles, PNG grids.

Every image that enters the framework goes through `decode` (bytes, path or array -> uint8 HxWx3) and
then `fit` (-> the tokenizer's square size and channel count). Failures raise `BadImage` with a reason
that `prepare` counts under that name in meta.json. A path may be local or on a bucket (gs://...,
read through core/storage); http(s) URLs are never fetched (nothing is downloaded at prepare time),
so they count as missing files.
"""

from __future__ import annotations

import io
import os
from typing import Sequence

import numpy as np
from PIL import Image as PILImage

from synergen_jax.core import storage
from synergen_jax.core.errors import BadRecord, ConfigError


class BadImage(BadRecord):
  """An image that cannot be used; `reason` is the key it is counted under."""


def decode(image, min_size: int = 4) -> np.ndarray:
  """bytes / path / array -> uint8 [H, W, 3]; RGBA is composited on white (clip art, emoji)."""
  if isinstance(image, np.ndarray):
    array = image
    if array.ndim == 2:
      array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
      raise BadImage("wrong_shape", f"image array of shape {image.shape}; expected HxW, HxWx1/3/4")
    if array.dtype != np.uint8:
      raise BadImage("wrong_dtype", f"image array of dtype {array.dtype}; expected uint8")
    pil = PILImage.fromarray(array[..., 0] if array.shape[-1] == 1 else array)
  else:
    try:
      pil = PILImage.open(_image_source(image))
      pil.load()  # PIL decodes lazily: force it here so a truncated file fails now.
    except ConfigError:
      raise          # a bucket this account may not read: every image would fail, so stop (a ValueError)
    except FileNotFoundError as e:
      raise BadImage("missing_file", f"image file not found: {image}") from e
    except (OSError, SyntaxError, ValueError, PILImage.DecompressionBombError) as e:
      where = image if not isinstance(image, (bytes, bytearray)) else f"{len(image)} bytes"
      raise BadImage("undecodable_image", f"cannot decode image {where}: {e}") from e
  if min(pil.size) < min_size:
    raise BadImage("too_small", f"image of {pil.size[0]}x{pil.size[1]} pixels is below {min_size}")
  if pil.mode in ("RGBA", "LA", "P", "PA"):
    pil = pil.convert("RGBA")
    canvas = PILImage.new("RGBA", pil.size, (255, 255, 255, 255))
    pil = PILImage.alpha_composite(canvas, pil)
  return np.asarray(pil.convert("RGB"), np.uint8)


def _is_bucket(path: str) -> bool:
  return storage.is_remote(path) and not path.startswith(("http://", "https://"))


def _image_source(image):
  """What PIL opens: bytes wrapped, a local path as it is, a bucket object read whole (PIL wants a
  seekable file, and an image is small); a missing object raises FileNotFoundError like a file."""
  if isinstance(image, (bytes, bytearray)):
    return io.BytesIO(image)
  path = os.fspath(image)
  if not _is_bucket(path):
    return path
  try:
    return io.BytesIO(storage.path(path, "image").read_bytes())
  except FileNotFoundError:
    raise
  except Exception as e:              # one bad object is a counted skip, a refused bucket is not
    error = storage.explain(e, path, "image")
    if error is not None:
      raise error from e
    raise OSError(f"{type(e).__name__}: {e}") from e


def fit(image: np.ndarray, size: int, channels: int, mode: str = "resize",
        background: int = 255) -> np.ndarray:
  """uint8 [H, W, 3] -> uint8 [size, size, channels].

  mode "resize": stretch to size x size (InternVL's choice for tiles). "pad": centre on a size x size
  canvas of `background` (MNIST's 28x28 -> 32x32 keeps the stroke scale), shrinking the longer side
  first when the image is larger than the canvas. "exact": the image must already be size x size.
  """
  h, w = image.shape[:2]
  if mode == "exact":
    if (h, w) != (size, size):
      raise BadImage("wrong_size", f"image of {w}x{h} pixels; data.image_fit='exact' needs {size}x{size}")
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
    raise ValueError(f"fit mode {mode!r}; choose resize, pad or exact")
  if channels == 1:
    return np.asarray(PILImage.fromarray(out).convert("L"), np.uint8)[..., None]
  if channels == 3:
    return out
  raise ValueError(f"channels={channels}; choose 1 or 3")


# ---------------------------------------------------------------------------------------------------
# Dynamic resolution (InternVL-1.5), used for understanding images.
# ---------------------------------------------------------------------------------------------------

def tile_grid(width: int, height: int, max_tiles: int, tile_size: int,
              min_tiles: int = 1) -> tuple[int, int]:
  """The (cols, rows) grid with min_tiles <= cols*rows <= max_tiles closest to the aspect ratio.

  InternVL-1.5's rule, ties included: grids are tried in order of tile count, and a later grid with
  the same aspect error wins only when the image has more than half the pixels that grid holds at
  tile_size, so small images are not blown up into many tiles.
  """
  aspect = width / height
  grids = sorted({(i, j) for n in range(min_tiles, max_tiles + 1) for i in range(1, n + 1)
                  for j in range(1, n + 1) if min_tiles <= i * j <= max_tiles},
                 key=lambda g: g[0] * g[1])
  best, best_diff = (1, 1), float("inf")
  area = width * height
  for cols, rows in grids:
    diff = abs(aspect - cols / rows)
    if diff < best_diff:
      best, best_diff = (cols, rows), diff
    elif diff == best_diff and area > 0.5 * tile_size * tile_size * cols * rows:
      best = (cols, rows)
  return best


def dynamic_tiles(image: np.ndarray, tile_size: int, max_tiles: int, thumbnail: bool) -> list[np.ndarray]:
  """uint8 [H, W, 3] -> tiles of [tile_size, tile_size, 3] in raster order, thumbnail last.

  The image is resized to (cols*tile, rows*tile) for the grid `tile_grid` picks, then cut. A thumbnail
  (the whole image at tile size) is appended only when there is more than one tile.
  """
  h, w = image.shape[:2]
  cols, rows = tile_grid(w, h, max_tiles, tile_size)
  if cols * rows == 1:
    return [np.asarray(PILImage.fromarray(image).resize((tile_size, tile_size), PILImage.BICUBIC))]
  big = np.asarray(PILImage.fromarray(image).resize((cols * tile_size, rows * tile_size),
                                                     PILImage.BICUBIC), np.uint8)
  tiles = [big[r * tile_size:(r + 1) * tile_size, c * tile_size:(c + 1) * tile_size]
           for r in range(rows) for c in range(cols)]
  if thumbnail:
    tiles.append(np.asarray(PILImage.fromarray(image).resize((tile_size, tile_size), PILImage.BICUBIC)))
  return tiles


# ---------------------------------------------------------------------------------------------------
# Output.
# ---------------------------------------------------------------------------------------------------

def save_grid(images: np.ndarray, path: str, cols: int | None = None, pad: int = 2) -> None:
  """Writes uint8 [N, H, W, C] (C = 1 or 3) as one PNG grid."""
  images = np.asarray(images)
  n, h, w, c = images.shape
  cols = cols or int(np.ceil(np.sqrt(n)))
  rows = -(-n // cols)
  canvas = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 128, np.uint8)
  for i, img in enumerate(images):
    r, col = divmod(i, cols)
    canvas[pad + r * (h + pad):pad + r * (h + pad) + h, pad + col * (w + pad):pad + col * (w + pad) + w] = img
  _save_image(PILImage.fromarray(canvas[..., 0] if c == 1 else canvas), path)


def _save_image(pil, path: str) -> None:
  """An image at `path`, local or on a bucket, never seen half-written; the format follows the
  extension as PIL's own save would pick it (PNG when it names none)."""
  suffix = os.path.splitext(os.fspath(path))[1].lower()
  buf = io.BytesIO()
  pil.save(buf, PILImage.registered_extensions().get(suffix, "PNG"))
  storage.write_bytes(path, buf.getvalue())


def save_captioned(images: np.ndarray, captions: Sequence[str], path: str, cols: int = 8,
                   scale: int = 3) -> None:
  """Writes uint8 [N, H, W, C] images, each enlarged `scale` times with its caption underneath."""
  from PIL import ImageDraw, ImageFont
  images = np.asarray(images)
  n, h, w, c = images.shape
  font = ImageFont.load_default()
  cell_w, cell_h, text_h = w * scale + 8, h * scale + 8, 28
  rows = -(-n // cols)
  sheet = PILImage.new("RGB", (cols * cell_w, rows * (cell_h + text_h)), (255, 255, 255))
  draw = ImageDraw.Draw(sheet)
  for i, (img, text) in enumerate(zip(images, captions)):
    r, col = divmod(i, cols)
    tile = PILImage.fromarray(img[..., 0] if c == 1 else img).convert("RGB")
    tile = tile.resize((w * scale, h * scale), PILImage.NEAREST)
    x, y = col * cell_w + 4, r * (cell_h + text_h) + 4
    sheet.paste(tile, (x, y))
    words, lines = text.split(), [""]
    for word in words:                       # wrap to the cell width
      trial = (lines[-1] + " " + word).strip()
      if draw.textlength(trial, font=font) > cell_w - 4 and lines[-1]:
        lines.append(word)
      else:
        lines[-1] = trial
    draw.multiline_text((x, y + h * scale + 2), "\n".join(lines[:2]), fill=(0, 0, 0), font=font)
  _save_image(sheet, path)
