"""Per-row budgets: what one packed row may hold, so that every head runs on a static capacity.

A row of seq_len slots holds at most

  config.model.text_target_capacity   text-target slots   (the LM head and its loss run on these)
  config.model.image_slot_capacity    image slots         (the fold MLP runs on these)
  config.model.unfold_capacity        image-target windows (the unfold head and its loss run on these)

The packer (data/pipeline.py) never places an example in a row where it would exceed one of them,
and an example that alone exceeds one is skipped up front and counted with the too-long examples, so
no target is ever cut or dropped inside the model. Every host batch is checked again before it goes
to the devices (`check_batch`), so a batch from anywhere else that breaks a budget fails loudly.

A budget left None is derived from the prepared data's index when the trainer opens it (`resolve`):

  budget = min(seq_len, max(largest single example, round_up(1.25 * seq_len * density, step)))

where density is the budget's count per slot over the training examples (under a mixture, each
component weighted by its mixture weight). 25% headroom over the mean keeps rows filling to their
slots: a row only closes early on a budget when its examples are 25% denser than the data's mean.
step = seq_len / 64, at least 8 (64 at 4,096 slots): few distinct shapes, multiples of the TPU's
8-row tiles.
Without prepared data (AOT, benchmarks) a None budget is the whole row.
"""

from __future__ import annotations

import math

import numpy as np

from synergen_jax.core.batch import IMAGE
from synergen_jax.core.config import CAPACITIES, ModelConfig
from synergen_jax.core.errors import DataError

HEADROOM = 1.25
STEPS_PER_ROW = 64

# capacity key -> what it counts in one laid-out example / one row
COUNTED = {"text_target_capacity": "text-target slots", "image_slot_capacity": "image slots",
           "unfold_capacity": "image-target windows"}


def slot_counts(example: dict) -> dict:
  """The budgeted counts of one laid-out example or packed row (ints), or per row of a batch."""
  counts = {"text_target_capacity": (example["text_weights"] > 0).sum(-1),
            "image_slot_capacity": (example["modality"] == IMAGE).sum(-1),
            "unfold_capacity": (example["image_weights"] > 0).sum(-1)}
  return {k: int(v) if np.ndim(v) == 0 else v for k, v in counts.items()}


def index_counts(split, mc: ModelConfig) -> dict[str, np.ndarray]:
  """Per-example budgeted counts from a prepared split's index, as data/layout.py lays them out:
  text targets are the loss-bearing text tokens, each loss image's <eoi>, and </s> after loss text;
  every window of an image is an image slot, and of a loss image also a target window."""
  windows = mc.windows_per_image
  return {"text_target_capacity": split.loss_text_len + split.n_loss_images
                                  + (split.loss_text_len > 0),
          "image_slot_capacity": split.n_images * windows,
          "unfold_capacity": split.n_loss_images * windows}


def row_budgets(mc: ModelConfig, seq_len: int) -> dict[str, int]:
  """Every budget of a row, None resolved to the whole row."""
  return {name: min(getattr(mc, name) or seq_len, seq_len) for name in CAPACITIES}


def over_budget(counts: dict[str, np.ndarray], mc: ModelConfig, seq_len: int) -> np.ndarray:
  """Per example: does it alone exceed one of the budgets (it can then never be packed)."""
  budgets = row_budgets(mc, seq_len)
  return np.any([np.asarray(counts[name]) > budgets[name] for name in CAPACITIES], axis=0)


def derive(groups, seq_len: int, floors: dict[str, int] | None = None) -> dict[str, int]:
  """Budgets by the rule in the module docstring from (counts, slots, weight) groups: per-example
  budgeted counts (name -> array), slots per example, and the group's weight (a mixture
  component's; 1 for one folder). Examples longer than seq_len are left out, as the packer does.
  floors: smallest values to return (an image's windows for image_slot_capacity)."""
  totals = {name: 0.0 for name in CAPACITIES}
  largest = {name: 0 for name in CAPACITIES}
  slots_total = 0.0
  for counts, slots, weight in groups:
    fits = np.asarray(slots) <= seq_len
    if not fits.any():
      continue
    slots_total += weight * np.asarray(slots)[fits].mean()
    for name in CAPACITIES:
      kept = np.asarray(counts[name])[fits]
      totals[name] += weight * kept.mean()
      largest[name] = max(largest[name], int(kept.max()))
  step = max(8, seq_len // STEPS_PER_ROW)
  out = {}
  for name in CAPACITIES:
    density = totals[name] / slots_total if slots_total else 1.0
    rounded = step * max(1, math.ceil(HEADROOM * seq_len * density / step))
    out[name] = min(seq_len, max(largest[name], rounded, (floors or {}).get(name, 0)))
  return out


def floors_of(mc: ModelConfig) -> dict[str, int]:
  """A derived image-slot budget holds at least one image (validate_config asks that of it)."""
  return {"image_slot_capacity": mc.windows_per_image}


def check_batch(batch: dict, mc: ModelConfig, seq_len: int, where: str = "batch") -> None:
  """Raises DataError naming the row and the budget when a host batch breaks one."""
  budgets = row_budgets(mc, seq_len)
  for name, counts in slot_counts(batch).items():           # [rows] each, one pass per budget
    over = np.flatnonzero(counts > budgets[name])
    if over.size:
      row, count = int(over[0]), int(counts[over[0]])
      raise DataError(f"{where} row {row} holds {count} {COUNTED[name]}, over "
                      f"config.model.{name}={budgets[name]}: the model would leave targets out. "
                      "Pack rows with data/pipeline.py (which keeps the budgets) or raise it.")
