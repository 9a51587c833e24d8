"""Optional Weights & Biases logging (config.train.wandb): the scalars and previews the TensorBoard
events get, in one W&B run per workdir.

The run id is drawn once and kept in `<workdir>/wandb_run_id`; every later process on the workdir
(a resume after preemption, a rerun) opens the same run with `resume="allow"`. Charts use the
logged `step` as their x axis rather than W&B's own counter, which only grows: a resumed run repeats
the steps after its last checkpoint, and those rows must land on the same x, not be refused.

wandb is imported only when the mode is not "disabled", so it is not a dependency of the trainer.
"""

from __future__ import annotations

import json
import os
import uuid

import numpy as np

from synergen_jax.core import storage
from synergen_jax.core.errors import ConfigError

MODES = ("disabled", "offline", "online")
ID_FILE = "wandb_run_id"


def check(config) -> None:
  """The mode is known, and wandb is installed when it is needed: a ConfigError naming the key."""
  mode = config.train.wandb.mode
  if mode not in MODES:
    raise ConfigError(f"config.train.wandb.mode={mode!r}; choose one of {MODES}")
  if mode != "disabled":
    try:
      import wandb  # noqa: F401
    except ImportError as e:
      raise ConfigError(f"config.train.wandb.mode={mode!r} needs the wandb package: pip install "
                        "wandb (or set config.train.wandb.mode=disabled)") from e


def run_id(workdir: str) -> str:
  """The workdir's W&B run id, drawn and written on first use."""
  path = storage.path(workdir) / ID_FILE
  if path.exists():
    return path.read_text().strip()
  new = uuid.uuid4().hex[:12]
  storage.write_text(path, new + "\n")
  return new


class WandbRun:
  """One process's handle on the workdir's W&B run (process 0 only: the caller decides)."""

  def __init__(self, config, workdir: str):
    import wandb
    self._wandb = wandb
    w = config.train.wandb
    # Offline files go beside a local workdir (`wandb sync <workdir>/wandb/offline-run-*`); for a
    # bucket workdir, where wandb cannot write, to $WANDB_DIR or the current folder.
    folder = os.environ.get("WANDB_DIR") or (None if storage.is_remote(workdir) else workdir)
    try:
      self.run = wandb.init(project=w.project, entity=w.entity, mode=w.mode, id=run_id(workdir),
                            resume="allow", dir=folder, name=os.path.basename(workdir.rstrip("/")),
                            config=json.loads(config.to_json_best_effort()))
    except Exception as e:       # wandb's own error types vary: the usual cause is the login
      raise ConfigError(f"config.train.wandb.mode={w.mode!r}: wandb.init failed ({type(e).__name__}: "
                        f"{e}); run `wandb login` (or set WANDB_API_KEY), or use mode=offline") from e
    self.run.define_metric("step")
    self.run.define_metric("*", step_metric="step")

  def scalars(self, step: int, values: dict) -> None:
    self.run.log({"step": step, **values})

  def images(self, step: int, images: dict[str, tuple[np.ndarray, str]]) -> None:
    """{name: (uint8 [H, W, C] pixels, caption)}."""
    self.run.log({"step": step, **{name: self._wandb.Image(pixels, caption=caption)
                                   for name, (pixels, caption) in images.items()}})

  def close(self) -> None:
    self.run.finish()
