"""The MSCOCO-30k FID protocol of `evaluate --suite coco_fid`, fixed here and stated in its report.

The same model's COCO FID moves by 2x with the choices below, so each one is made once:

  captions    from an MSCOCO captions file (annotations/captions_val2014.json): `count` distinct
              images (30,000 unless told) that have captions, and one caption of each. The images
              are ranked by sha256("<seed>/image/<image id>") and the first `count` taken; the
              caption is number sha256("<seed>/caption/<image id>") mod n of the image's captions
              in annotation-id order. Hashes, not a random generator: the draw is the same on every
              machine, Python and numpy version. Captions are whitespace-collapsed, nothing else.
              The drawn list is written next to the report (`coco_fid_captions.jsonl`, one
              {"id", "prompt", "image_id", "caption_id", "file_name"} per line), so later runs and
              other models can take it as --data; a given list is used as it is.
  generation  one image per caption (unless --per_prompt says otherwise) at the image tokenizer's
              own size (its decoder's output, never resized), with the suite's cfg and sampling.
  Inception   both sides as pytorch-fid reads a folder: PIL RGB, / 255, torch's bilinear resize
              to 299x299 (align_corners=False, no antialiasing), pool3 features (eval/fid.py).
  reference   the val2014 images of the drawn ids (--coco_images DIR), each centre-cropped to the
              generated images' aspect ratio (the largest centred box) and resized to the generated
              size with PIL's bicubic filter, kept as uint8 as a saved PNG would be, then read as
              above: both sides reach Inception through the same resize from the same size. Their
              statistics are computed once and cached next to the report
              (`coco_fid_reference_<key>.npz`, the key a hash of the image ids, the size, this
              resize and the Inception weight file's name and size). A given folder or .npz
              (--reference) is used instead, as it is.
"""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
from PIL import Image

from synergen_jax.core import storage
from synergen_jax.core.errors import DataError
from synergen_jax.eval.fid import read_rgb   # the generated side's reader opens files the same way
from synergen_jax.eval.inception import INPUT_SIZE, resize_like_torch

DEFAULT_COUNT = 30_000
CAPTIONS_FILE = "coco_fid_captions.jsonl"
REFERENCE_RESIZE = "centre crop to the generated aspect ratio, PIL bicubic to the generated size"
INCEPTION_RESIZE = ("PIL RGB / 255, torch bilinear (align_corners=False, no antialiasing) to "
                    f"{INPUT_SIZE}x{INPUT_SIZE}, as pytorch-fid reads a folder")


def _rank(seed: int, kind: str, image_id: int) -> bytes:
  return hashlib.sha256(f"{seed}/{kind}/{image_id}".encode()).digest()


def read_annotations(path: str) -> tuple[dict[int, str], dict[int, list[tuple[int, str]]]]:
  """({image id: file name}, {image id: [(annotation id, caption)] sorted by id}) of an MSCOCO
  captions file; errors name the file and the entry."""
  try:
    data = json.loads(storage.path(path, "--captions_from").read_text())
  except (OSError, ValueError) as e:
    raise DataError(f"{path}: cannot read it as an MSCOCO captions file (JSON): {e}") from None
  if not isinstance(data, dict) or not all(isinstance(data.get(k), list)
                                           for k in ("images", "annotations")):
    raise DataError(f"{path}: an MSCOCO captions file holds \"images\" and \"annotations\" lists")
  files, captions = {}, {}
  for n, image in enumerate(data["images"]):
    if not isinstance(image, dict) or not isinstance(image.get("id"), int) \
        or not isinstance(image.get("file_name"), str):
      raise DataError(f"{path}: images[{n}] needs an integer \"id\" and a \"file_name\", got {image!r}")
    files[image["id"]] = image["file_name"]
  for n, ann in enumerate(data["annotations"]):
    if not isinstance(ann, dict) or not isinstance(ann.get("id"), int) \
        or not isinstance(ann.get("image_id"), int) or not isinstance(ann.get("caption"), str):
      raise DataError(f"{path}: annotations[{n}] needs integer \"id\" and \"image_id\" and a "
                      f"\"caption\", got {ann!r}")
    if ann["image_id"] not in files:
      raise DataError(f"{path}: annotations[{n}] is of image {ann['image_id']}, not in \"images\"")
    if ann["caption"].strip():
      captions.setdefault(ann["image_id"], []).append((ann["id"], " ".join(ann["caption"].split())))
  return files, {i: sorted(c) for i, c in captions.items()}


def draw_captions(annotations_path: str, count: int, seed: int) -> list[dict]:
  """`count` records {"id", "prompt", "image_id", "caption_id", "file_name"}: distinct images, one
  caption each, in the hashes' order (see the module docstring)."""
  files, captions = read_annotations(annotations_path)
  if count < 1 or count > len(captions):
    raise DataError(f"{annotations_path}: --count {count} captions asked for, but "
                    f"{len(captions)} images have captions")
  chosen = sorted(captions, key=lambda i: _rank(seed, "image", i))[:count]
  records = []
  for image_id in chosen:
    options = captions[image_id]
    pick = int.from_bytes(_rank(seed, "caption", image_id)[:8], "big") % len(options)
    caption_id, caption = options[pick]
    records.append({"id": f"{image_id:012d}", "prompt": caption, "image_id": image_id,
                    "caption_id": caption_id, "file_name": files[image_id]})
  return records


def write_records(records: list[dict], path: str) -> None:
  storage.write_text(path, "".join(json.dumps(r) + "\n" for r in records))


def reference_files(records: list[dict], images_dir: str, where: str) -> list[str]:
  """The val2014 image of each record (its "file_name" under images_dir), each image once, in the
  records' order; every one must exist."""
  missing_name = [r["id"] for r in records if not isinstance(r.get("file_name"), str)]
  if missing_name:
    raise DataError(f"{where}: records without a \"file_name\" (e.g. id {missing_name[0]!r}), so "
                    "the reference images cannot be found; draw the captions with --captions_from "
                    "or give --reference")
  names = list(dict.fromkeys(r["file_name"] for r in records))
  folder = storage.path(images_dir, "--coco_images")
  listed = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
  absent = [n for n in names if n not in listed]
  if absent:
    raise DataError(f"--coco_images {images_dir}: {len(absent)} of the {len(names)} drawn images "
                    f"are not there (e.g. {absent[0]})")
  return [os.fspath(folder / n) for n in names]


def centre_crop_resize(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  """uint8 [H, W, 3] -> uint8 [h, w, 3]: the largest centred box of aspect w / h, PIL bicubic."""
  height, width = size
  src_h, src_w = pixels.shape[:2]
  if src_w * height > src_h * width:          # wider than the target: cut the sides
    crop_w, crop_h = max(1, round(src_h * width / height)), src_h
  else:
    crop_w, crop_h = src_w, max(1, round(src_w * height / width))
  top, left = (src_h - crop_h) // 2, (src_w - crop_w) // 2
  box = Image.fromarray(pixels[top:top + crop_h, left:left + crop_w])
  return np.asarray(box.resize((width, height), Image.BICUBIC), np.uint8)


def reference_reader(size: tuple[int, int]):
  """file -> the network's input for a reference image, as if it had been saved as a PNG at the
  generated size and then read as pytorch-fid reads a folder."""
  def read(path: str) -> np.ndarray:
    small = centre_crop_resize(read_rgb(path), size).astype(np.float32) / np.float32(255)
    return resize_like_torch(small[None], INPUT_SIZE)[0]
  return read


def reference_key(records: list[dict], size: tuple[int, int], weights_path: str | None) -> str:
  """What the cached reference statistics depend on, hashed: the image ids, the generated size, the
  resize and the Inception weights (by file name and byte size)."""
  weights = None
  if weights_path:
    weights = [os.path.basename(weights_path), os.path.getsize(weights_path)]
  ids = sorted({r["file_name"] for r in records})
  text = json.dumps(dict(images=ids, size=list(size), resize=REFERENCE_RESIZE, weights=weights))
  return hashlib.sha256(text.encode()).hexdigest()[:16]
