"""Dataset mixtures: `config.data.mixture`, the rules it must follow, and what its components share.

A mixture is a sequence of (prepared folder, weight) pairs, e.g.

  --config.data.mixture="(('data/mnist5k', 3.0), ('data/emoji', 1.0))"

Weights are relative (they need not sum to 1). The pipeline (data/pipeline.py) reads the training
stream from the components through Grain's mixing, one example at a time, each component shuffled
with its own seed and repeating on its own; this module holds the parts that need no Grain:

  parse_mixture    the config rules, checked before anything is read: pairs of a non-empty path and a
                   positive finite weight, no folder twice, and not together with config.data.path
                   (a mixture reads only its components; put that folder in as one of them)
  component names  each folder's basename, lengthened by parent folders where two are equal
                   ("a/data", "b/data"): the keys of the iterator state and of `data/examples/<name>`
  shared_meta      every component must be prepared with the same text tokenizer (fingerprint, special
                   ids, vocabulary) and image tokenizer (fingerprint, code grid, codebook): the model
                   has one embedding table, so an id must mean the same thing in every component
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
import os

import numpy as np

from synergen_jax.core import storage
from synergen_jax.core.errors import ConfigError, DataError

# meta.json fields that must be equal across a mixture's components, each with how to make them so.
_TEXT_FIX = ("prepare every component with one text tokenizer: --config.data.tokenizer="
             "{first} (the folder: its tokenizer.model or tokenizer.json)")
_IMAGE_FIX = "prepare every component with one image tokenizer (the same --vq_workdir)"
SHARED_FIELDS = {"text_tokenizer": _TEXT_FIX, "special": _TEXT_FIX, "text_vocab": _TEXT_FIX,
                 "image_tokenizer": _IMAGE_FIX, "code_grid": _IMAGE_FIX, "codebook_size": _IMAGE_FIX}

_EXAMPLE = "e.g. --config.data.mixture=\"(('data/a', 3.0), ('data/b', 1.0))\""


@dataclasses.dataclass(frozen=True)
class Component:
  name: str          # unique within the mixture: metrics key and iterator-state key
  path: str          # a prepared folder (meta.json, shards, {split}-index.npz)
  weight: float      # relative share of the training stream's examples


# ---------------------------------------------------------------------------------------------------
# The config rules.
# ---------------------------------------------------------------------------------------------------

def parse_mixture(data_config) -> tuple[Component, ...]:
  """config.data.mixture as Components, () when unset; a ConfigError says what is wrong and how to fix
  it. Cheap and touches no file, so it runs with the rest of the config validation."""
  raw = data_config.get("mixture", ()) or ()
  if isinstance(raw, (str, bytes)) or not isinstance(raw, (tuple, list)):
    raise ConfigError(f"config.data.mixture={raw!r} must be a sequence of (prepared path, weight) "
                      f"pairs, {_EXAMPLE}")
  if not raw:
    return ()
  if data_config.get("path"):
    raise ConfigError(f"config.data.path={data_config.path!r} and config.data.mixture are both set; a "
                      "mixture reads only its components: add that folder to the mixture as "
                      f"(path, weight) and unset config.data.path (--config.data.path='')")
  paths, weights = [], []
  for i, pair in enumerate(raw):
    where = f"config.data.mixture[{i}]={pair!r}"
    if isinstance(pair, (str, bytes)) or not isinstance(pair, (tuple, list)) or len(pair) != 2:
      raise ConfigError(f"{where} is not a (prepared path, weight) pair, {_EXAMPLE}")
    path, weight = pair
    if not isinstance(path, str) or not path.strip():
      raise ConfigError(f"{where}: the path must be a non-empty string naming a prepare output folder")
    if (isinstance(weight, bool) or not isinstance(weight, numbers.Real) or not math.isfinite(weight)
        or weight <= 0):
      raise ConfigError(f"{where}: the weight must be a positive number (weights are relative and "
                        f"need not sum to 1); drop the pair to leave that folder out")
    paths.append(path)
    weights.append(float(weight))
  _check_distinct(paths)
  return tuple(Component(n, p, w) for n, p, w in zip(component_names(paths), paths, weights))


def _same_place(path: str) -> str:
  return path.rstrip("/") if "://" in path else os.path.realpath(path)


def _check_distinct(paths: list[str]) -> None:
  seen = {}
  for i, path in enumerate(paths):
    key = _same_place(path)
    if key in seen:
      raise ConfigError(f"config.data.mixture lists {path!r} twice (entries {seen[key]} and {i}); give "
                        "it one entry whose weight is the sum of both")
    seen[key] = i


def component_names(paths) -> list[str]:
  """Basenames, each lengthened by parent folders until no two are equal ("a/data" vs "b/data":
  cache entries all end in /data)."""
  parts = [p.rstrip("/").split("/") for p in paths]
  depth = [1] * len(parts)
  while True:
    names = ["/".join(pp[-k:]) for pp, k in zip(parts, depth)]
    clash = [i for i, n in enumerate(names) if names.count(n) > 1]
    if not clash:
      return names
    grown = [i for i in clash if depth[i] < len(parts[i])]
    if not grown:       # equal spellings of different places (only via symlinks): number them
      return [f"{n}#{i}" if i in clash else n for i, n in enumerate(names)]
    for i in grown:
      depth[i] += 1


def component_seed(seed: int, name: str) -> int:
  """A component's shuffle seed, from config.data.seed and its name: well apart from the other
  components' (Grain shuffles epoch e with seed + e, so seed + index would replay another component's
  orders), and unchanged when the mixture's entries are reordered (Grain's mix orders its parents by
  name too, so a reordered mixture is the same stream)."""
  digest = hashlib.sha256(name.encode()).digest()
  return int(np.random.SeedSequence((seed, int.from_bytes(digest[:8], "little"))).generate_state(1)[0])


# ---------------------------------------------------------------------------------------------------
# The prepared folders.
# ---------------------------------------------------------------------------------------------------

def read_meta(directory: str, what: str = "config.data.path") -> dict:
  """A prepared folder's meta.json (local or on a bucket), or a DataError saying how to make one;
  a bucket that cannot be reached is a ConfigError naming `what` (the config key that names it)."""
  storage.check_reachable(directory, what)
  meta_file = storage.path(directory, what) / "meta.json"
  try:
    text = meta_file.read_text()
  except (FileNotFoundError, NotADirectoryError):
    raise DataError(f"{directory} holds no prepared data (no meta.json); run python -m "
                    "synergen_jax.prepare --config ... --out " + directory) from None
  try:
    return json.loads(text)
  except json.JSONDecodeError as e:
    raise DataError(f"{meta_file} is not valid JSON ({e}); rerun python -m synergen_jax.prepare "
                    f"--config ... --out {directory} to write it again") from None


def check_shared(components, metas) -> None:
  """Every component's meta.json agrees with the first one's on SHARED_FIELDS; a DataError names the
  two folders, the field, both values and the fix."""
  first, ref = components[0], metas[0]
  for comp, meta in zip(components[1:], metas[1:]):
    for field, fix in SHARED_FIELDS.items():
      if meta.get(field) != ref.get(field):
        raise DataError(f"mixture components {first.path} and {comp.path} differ in meta.json "
                        f"{field}: {ref.get(field)!r} vs {meta.get(field)!r}; " +
                        fix.format(first=first.path))


def shared_meta(components) -> dict:
  """The components' meta.json files after check_shared: the first one's (its special ids and
  tokenizers are everyone's)."""
  metas = [read_meta(c.path, f"config.data.mixture[{i}]") for i, c in enumerate(components)]
  check_shared(components, metas)
  return metas[0]
