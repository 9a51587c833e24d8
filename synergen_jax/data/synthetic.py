"""Random examples in the real batch layout, for benchmarks, AOT and the model summary (not for
training), packed within the config's per-row budgets (data/budgets.py)."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np

from synergen_jax.core.config import CAPACITIES
from synergen_jax.data import budgets
from synergen_jax.data.layout import Image, Text, layout_example, pack, stack_rows

TEXT_LEN = 12


def _examples(mc, rng, row: int):
  """Alternating generation and captioning examples of random codes and 12-token texts."""
  for i in itertools.count():
    text = Text(rng.integers(6, mc.text_vocab, TEXT_LEN), loss=(i + row) % 2 == 1)
    image = Image(rng.integers(0, mc.codebook_size, mc.code_grid), loss=not text.loss)
    yield layout_example([text, image] if image.loss else [image, text], mc.fold)


def _fill_row(examples, mc, seq_len: int) -> dict:
  """Examples in order until the next would break the row's slots or one of its budgets."""
  limits = budgets.row_budgets(mc, seq_len)
  chosen, used, slots = [], dict.fromkeys(CAPACITIES, 0), 0
  for ex in examples:
    counts = budgets.slot_counts(ex)
    if slots + len(ex["text_tokens"]) > seq_len or any(used[k] + counts[k] > limits[k] for k in used):
      break
    chosen.append(ex)
    slots += len(ex["text_tokens"])
    used = {k: used[k] + counts[k] for k in used}
  return pack(chosen, seq_len, mc.fold)


def synthetic_batch(mc, rows: int, seq_len: int, seed: int = 0):
  """Rows packed with alternating generation and captioning examples, within mc's budgets."""
  rng = np.random.default_rng(seed)
  return stack_rows([_fill_row(_examples(mc, rng, row), mc, seq_len) for row in range(rows)])


def with_synthetic_budgets(mc, seq_len: int):
  """mc with its None budgets derived, by the training rule, from this synthetic mix (what AOT and
  the benchmarks compile: a stand-in for the prepared data's index)."""
  examples = list(itertools.islice(_examples(mc, np.random.default_rng(0), 0), 2))
  counts = {name: np.asarray([budgets.slot_counts(ex)[name] for ex in examples]) for name in CAPACITIES}
  slots = np.asarray([len(ex["text_tokens"]) for ex in examples])
  derived = budgets.derive([(counts, slots, 1.0)], seq_len, budgets.floors_of(mc))
  return dataclasses.replace(mc, **{name: getattr(mc, name) or derived[name] for name in CAPACITIES})
