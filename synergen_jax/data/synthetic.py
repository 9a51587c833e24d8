"""Random examples in the real batch layout, for benchmarks and the model summary (not for training)."""

from __future__ import annotations

import numpy as np

from synergen_jax.data.layout import Image, Text, layout_example, pack, stack_rows


def synthetic_batch(mc, rows: int, seq_len: int, seed: int = 0):
  """Rows packed with alternating generation and captioning examples of random codes and tokens."""
  rng = np.random.default_rng(seed)
  out = []
  for row in range(rows):
    examples, used = [], 0
    while True:
      text = Text(rng.integers(6, mc.text_vocab, 12), loss=(len(examples) + row) % 2 == 1)
      image = Image(rng.integers(0, mc.codebook_size, mc.code_grid), loss=not text.loss)
      ex = layout_example([text, image] if image.loss else [image, text], mc.fold)
      if used + len(ex["text_tokens"]) > seq_len:
        break
      examples.append(ex)
      used += len(ex["text_tokens"])
    out.append(pack(examples, seq_len, mc.fold))
  return stack_rows(out)
