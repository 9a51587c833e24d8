"""The block ranges the GPU flash kernels skip by, against a brute-force [T, T] check."""

import numpy as np
import pytest

from synergen_jax.kernels.segment_blocks import visible_block_ranges


def brute_force(seg, block_rows, block_cols):
  length = seg.shape[0]
  same = seg[:, None] == seg[None, :]
  out = []
  for r in range(length // block_rows):
    rows = same[r * block_rows:(r + 1) * block_rows].any(axis=0)
    cols = [c for c in range(length // block_cols)
            if rows[c * block_cols:(c + 1) * block_cols].any()]
    out.append((min(cols), max(cols) + 1))
  return np.array(out)


@pytest.mark.parametrize("layout", ["packed", "padded", "scattered", "one"])
@pytest.mark.parametrize("blocks", [(16, 16), (32, 8), (8, 32)])
def test_ranges_span_the_first_to_the_last_visible_block(rng, layout, blocks):
  length = 128
  segs = []
  for _ in range(3):
    if layout == "packed":      # examples back to back, ids increasing
      cuts = np.sort(rng.choice(np.arange(1, length), 4, replace=False))
      seg = np.repeat(np.arange(1, 6), np.diff([0, *cuts, length]))
    elif layout == "padded":    # examples then padding with id 0 at the end
      cut = rng.integers(length // 2, length)
      seg = np.concatenate([np.sort(rng.integers(1, 4, cut)), np.zeros(length - cut, int)])
    elif layout == "scattered":  # ids in any order, segments in pieces
      seg = rng.integers(0, 4, length) * 1000 - 7
    else:
      seg = np.full(length, 5)
    segs.append(seg)
  seg = np.stack(segs).astype(np.int32)
  got = np.asarray(visible_block_ranges(seg, *blocks))
  for row in range(3):
    # The range spans exactly the first to the last visible block (with pieces of a segment spread
    # out, blocks in between are inside it without being visible).
    np.testing.assert_array_equal(got[row], brute_force(seg[row], *blocks))
