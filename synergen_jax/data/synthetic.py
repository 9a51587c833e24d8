"""Random examples in the real batch layout, for benchmarks and the model summary (not for training)."""

from __future__ import annotations

import itertools

import numpy as np

from synergen_jax.data.layout import Image, Text, fill_row, layout_example, stack_rows


def synthetic_batch(mc, rows: int, seq_len: int, seed: int = 0):
  """Rows packed with alternating generation and captioning examples of random codes and tokens."""
  rng = np.random.default_rng(seed)

  def examples(row):
    for i in itertools.count():
      text = Text(rng.integers(6, mc.text_vocab, 12), loss=(i + row) % 2 == 1)
      image = Image(rng.integers(0, mc.codebook_size, mc.code_grid), loss=not text.loss)
      yield layout_example([text, image] if image.loss else [image, text], mc.fold)

  return stack_rows([fill_row(examples(row), seq_len, mc.fold) for row in range(rows)])
