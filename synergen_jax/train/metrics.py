"""metrics.jsonl + TensorBoard events (train/events.py) + optional W&B (train/wandb_run.py) + a host-0
progress line; previews (train/previews.py) into all three and the workdir; MFU against
synergen_jax/core/hardware.py; per-component example counts of a data mixture."""

from __future__ import annotations

import json
import math
import os
import sys

import jax
import numpy as np
from etils import epath

from synergen_jax.core import storage
from synergen_jax.core.hardware import peak_flops
from synergen_jax.train import wandb_run
from synergen_jax.train.events import EventFiles


def peak_flops_per_device() -> float | None:
  return peak_flops(jax.devices()[0].device_kind)


def component_examples(data) -> dict:
  """`data/examples/<component>`: examples of each config.data.mixture component in the batches the
  trainer has taken so far (a resumed run included), summed over processes; {} without a mixture.

  Counted on the host from the component id each example carries through packing (data/pipeline.py),
  so nothing extra goes to the device. Every process must call this (a collective under several)."""
  seen = data.examples_seen()
  if not seen:
    return {}
  counts = np.asarray(list(seen.values()), np.int64)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    counts = np.sum(multihost_utils.process_allgather(counts), axis=0)
  return {f"data/examples/{name}": int(n) for name, n in zip(seen, counts)}


class MetricWriter:
  """Writes on process 0 only: one JSON object per logged step, the same scalars to TensorBoard (and
  W&B when config.train.wandb.mode asks for it), and the previews of each held-out pass.

  `config` (None: defaults, no W&B) supplies config.train.events_every_secs and config.train.wandb."""

  def __init__(self, workdir: str, total_steps: int, config=None):
    self.enabled = jax.process_index() == 0
    self.total, self.workdir = total_steps, workdir
    self._wandb = None
    if config is not None:
      wandb_run.check(config)            # on every process: they all raise alike
    if not self.enabled:
      return
    if "://" in workdir:
      # Object stores (gs://) cannot append: the file is rewritten whole after each logged step
      # (it holds one short line per step).
      self._path = epath.Path(workdir) / "metrics.jsonl"
      self._lines = self._path.read_text().splitlines(keepends=True) if self._path.exists() else []
      self._file = None
    else:
      self._file = open(os.path.join(workdir, "metrics.jsonl"), "a")
    every = config.train.events_every_secs if config is not None else 60.0
    self._events = EventFiles(workdir, every)
    if config is not None and config.train.wandb.mode != "disabled":
      self._wandb = wandb_run.WandbRun(config, workdir)

  def write(self, step: int, scalars: dict) -> None:
    if not self.enabled:
      return
    row = {"step": step, **{k: (None if v is None or (isinstance(v, float) and not math.isfinite(v))
                                else v) for k, v in scalars.items()}}
    if self._file is None:
      self._lines.append(json.dumps(row) + "\n")
      self._path.write_text("".join(self._lines))
    else:
      self._file.write(json.dumps(row) + "\n")
      self._file.flush()
    finite = {k: v for k, v in scalars.items() if isinstance(v, (int, float)) and math.isfinite(v)}
    self._events.scalars(step, finite)
    if self._wandb is not None:
      self._wandb.scalars(step, finite)
    self._events.sync()                  # a bucket workdir: at most every events_every_secs

  def previews(self, step: int, previews) -> None:
    """Grids of train/previews.py: `<workdir>/previews/step_<N>_<name>.png`, TensorBoard images with
    their texts, W&B images. Then the events go out to a bucket workdir (called at each held-out
    pass, with or without previews)."""
    if not self.enabled:
      return
    if previews:
      folder = storage.path(self.workdir) / "previews"
      folder.mkdir(parents=True, exist_ok=True)
    for p in previews:
      storage.write_bytes(folder / f"step_{step}_{p.name}.png", p.png)
      self._events.image(step, f"previews/{p.name}", p.pixels)
      self._events.text(step, f"previews/{p.name}", p.markdown)
    if self._wandb is not None and previews:
      self._wandb.images(step, {f"previews/{p.name}": (p.pixels, p.caption) for p in previews})
    self._events.sync(force=True)

  def progress(self, step: int, loss: float, tokens_per_sec: float, eta_s: float) -> None:
    if self.enabled:
      print(f"\rstep {step}/{self.total}  loss {loss:.4f}  {tokens_per_sec:,.0f} tok/s  "
            f"ETA {int(eta_s // 60)}m{int(eta_s % 60):02d}s", end="", file=sys.stderr, flush=True)

  def close(self) -> None:
    if self.enabled:
      print(file=sys.stderr)
      if self._file is not None:
        self._file.close()
      self._events.close()               # a bucket workdir: the last copy of the events
      if self._wandb is not None:
        self._wandb.close()
