"""metrics.jsonl + TensorBoard events + a host-0 progress line; MFU against synergen_jax/core/hardware.py;
per-component example counts of a data mixture."""

from __future__ import annotations

import json
import math
import os
import sys

import jax
import numpy as np
from etils import epath

from synergen_jax.core.hardware import peak_flops


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
  """Writes on process 0 only: one JSON object per logged step, and the same scalars to TensorBoard."""

  def __init__(self, workdir: str, total_steps: int):
    self.enabled = jax.process_index() == 0
    self.total = total_steps
    self._tb = None
    if self.enabled:
      if "://" in workdir:
        # Object stores (gs://) cannot append: the file is rewritten whole after each logged step
        # (it holds one short line per step), and TensorBoard events stay local-only.
        self._path = epath.Path(workdir) / "metrics.jsonl"
        self._lines = self._path.read_text().splitlines(keepends=True) if self._path.exists() else []
        self._file = None
        print(f"metrics: {self._path} (TensorBoard events are written for local workdirs only)")
      else:
        self._file = open(os.path.join(workdir, "metrics.jsonl"), "a")
        from tensorboardX import SummaryWriter
        self._tb = SummaryWriter(workdir, flush_secs=30)

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
    for k, v in scalars.items():
      if self._tb is not None and isinstance(v, (int, float)) and v is not None and math.isfinite(v):
        self._tb.add_scalar(k, v, step)

  def progress(self, step: int, loss: float, tokens_per_sec: float, eta_s: float) -> None:
    if self.enabled:
      print(f"\rstep {step}/{self.total}  loss {loss:.4f}  {tokens_per_sec:,.0f} tok/s  "
            f"ETA {int(eta_s // 60)}m{int(eta_s % 60):02d}s", end="", file=sys.stderr, flush=True)

  def close(self) -> None:
    if self.enabled:
      print(file=sys.stderr)
      if self._file is not None:
        self._file.close()
      if self._tb is not None:
        self._tb.close()
