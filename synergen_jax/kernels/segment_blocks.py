"""Which blocks of a packed row can see each other: the block ranges the flash kernels loop over.

A query only sees keys of its own segment, so with several examples packed in a row most (q block,
k block) pairs are fully masked. For each block of rows this gives the half-open range of column
blocks that holds every position sharing a segment with one of the block's positions; the kernels
intersect it with the causal range and skip everything outside. Segment ids may be any ints in any
layout (a segment split in pieces only widens the range), and the work is O(T log T) per row: no
[T, T] comparison is built.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _segment_spans(seg):
  """first[t], last[t]: the first and last position of t's segment in a row [T]."""
  length = seg.shape[0]
  order = jnp.argsort(seg, stable=True)
  sorted_ids = seg[order]
  starts = jnp.concatenate([jnp.ones((1,), bool), sorted_ids[1:] != sorted_ids[:-1]])
  group = jnp.cumsum(starts) - 1                        # dense rank of each sorted position's id
  first = jax.ops.segment_min(order, group, num_segments=length)
  last = jax.ops.segment_max(order, group, num_segments=length)
  rank = jnp.zeros((length,), jnp.int32).at[order].set(group.astype(jnp.int32))
  return first[rank], last[rank]


def visible_block_ranges(segment_ids: jax.Array, block_rows: int, block_cols: int) -> jax.Array:
  """[batch, length // block_rows, 2] int32: for each block of block_rows positions, the range
  [start, stop) of block_cols-sized blocks that can hold a position of one of its segments.
  Symmetric in use: rows may be queries (k-block ranges) or keys (q-block ranges)."""
  batch, length = segment_ids.shape
  first, last = jax.vmap(_segment_spans)(segment_ids)
  first = first.reshape(batch, length // block_rows, block_rows).min(axis=-1)
  last = last.reshape(batch, length // block_rows, block_rows).max(axis=-1)
  return jnp.stack([first // block_cols, last // block_cols + 1], axis=-1).astype(jnp.int32)


def kernel_block_ranges(segment_ids: jax.Array | None, batch: int, length: int, block_rows: int,
                        block_cols: int) -> jax.Array:
  """visible_block_ranges for a kernel's operand; without segment ids, zeros of the same shape (the
  kernels then never read them, but their pallas_call still takes the operand)."""
  if segment_ids is None:
    return jnp.zeros((batch, length // block_rows, 2), jnp.int32)
  return visible_block_ranges(segment_ids, block_rows, block_cols)
