"""The config's image side follows its image tokenizer, as its text vocabulary follows its tokenizer.

`model.code_grid`, `model.codebook_size`, `vq.channels` and `vq.downsample` (image size = grid x
downsample) are facts of the image tokenizer a run uses, not choices: `follow` reads them from

  1. the image tokenizer the run names (prepare's --vq_workdir, else config.vq.workdir): its
     vq_config.json only, no weights;
  2. else the prepared data the run reads (config.data.path, or the first component of
     config.data.mixture): the meta.json prepare wrote from that tokenizer;

and sets them on the config, with one line per changed value. A value given on the command line
(`--config.model.code_grid=...`, passed as `explicit`) that disagrees is refused naming both: the
user asked for something this tokenizer cannot give. Values set by the config file are its defaults
for its own tokenizer and give way. The train and prepare commands call it before any device work.
"""

from __future__ import annotations

from typing import Iterable

from synergen_jax.core import storage
from synergen_jax.core.errors import ConfigError
from synergen_jax.data import mixture
from synergen_jax.vq.tokenizer import describe

FIELDS = ("model.code_grid", "model.codebook_size", "vq.channels", "vq.downsample")


def _values(grid: int, codebook_size: int, channels: int, image_size: int) -> dict:
  return {"model.code_grid": (int(grid), int(grid)), "model.codebook_size": int(codebook_size),
          "vq.channels": int(channels), "vq.downsample": int(image_size) // int(grid)}


def of_tokenizer(workdir: str) -> dict:
  """FIELDS -> value, read from an image tokenizer workdir's vq_config.json."""
  t = describe(workdir)
  return _values(t["grid"], t["codebook_size"], t["channels"], t["image_size"])


def of_prepared(folder: str) -> dict:
  """FIELDS -> value, read from a prepared folder's meta.json."""
  meta = mixture.read_meta(folder)
  grid = tuple(meta["code_grid"])
  if grid[0] != grid[1]:
    raise ConfigError(f"{folder}/meta.json: code_grid {grid} is not square")
  return _values(grid[0], meta["codebook_size"], meta.get("channels", 3),
                 meta.get("image_size", grid[0] * 4))


def _get(config, dotted: str):
  section, name = dotted.split(".")
  value = config[section][name]
  return tuple(value) if isinstance(value, (list, tuple)) else value


def adopt(config, found: dict, source: str, explicit: Iterable[str] = ()) -> list[str]:
  """Sets `found` (FIELDS -> value) on `config`; returns a line per changed value. A key in
  `explicit` (given on the command line) whose value differs is a ConfigError naming both."""
  explicit, notes = set(explicit), []
  for dotted, value in found.items():
    current = _get(config, dotted)
    if current == value:
      continue
    if dotted in explicit:
      raise ConfigError(f"--config.{dotted}={current} disagrees with {source}, which has {value}: "
                        f"drop the override (the value comes from the image tokenizer) or use a "
                        f"tokenizer that makes {current}")
    section, name = dotted.split(".")
    config[section][name] = value
    notes.append(f"config.{dotted}: {current} -> {value} (from {source})")
  return notes


def follow(config, explicit: Iterable[str] = (), vq_workdir: str | None = None) -> list[str]:
  """Adopts the image side of the run's image tokenizer (vq_workdir, else config.vq.workdir), else
  of its prepared data; nothing when the run names neither (the cache trains its own tokenizer from
  the config). Returns the lines saying what changed."""
  vq_workdir = vq_workdir or config.vq.workdir
  if vq_workdir:
    return adopt(config, of_tokenizer(vq_workdir), f"the image tokenizer at {vq_workdir}", explicit)
  components = mixture.parse_mixture(config.data)
  folder = config.data.path or (components[0].path if components else None)
  if folder and (storage.path(folder) / "meta.json").exists():
    return adopt(config, of_prepared(folder), f"the prepared data at {folder}", explicit)
  return []
