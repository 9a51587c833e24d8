"""Flash attention for TPUs in Pallas (Mosaic TPU backend): forward and backward, custom_vjp.

The kernels run on [batch, heads, length, head_dim] (the wrapper transposes our [B, T, H, D]), so a
block's last two dims are (rows, head_dim) as Mosaic's (8, 128) tiling wants. Every kernel walks the
reduction in the innermost grid dimension ("arbitrary") with float32 accumulators in VMEM scratch:

  forward  grid (b, h, q block, k block): online softmax; writes o and the logsumexp.
  dK/dV    grid (b, kv head, k block, query head of the group, q block): sums over the group's
           query heads and the q blocks, so GQA needs neither atomics nor repeated k/v.
  dQ       grid (b, h, q block, k block).

Skipping: a block entirely above the diagonal, or (with segment ids) one sharing no segment with the
block being computed, is skipped (`pl.when`) and its index map is clamped to the nearest useful
block, so its DMA is not issued either. The segment ranges (`segment_blocks.py`) are
scalar-prefetched into SMEM: two int32 per (row, block), 8 KiB for 32 rows of 4,096 in 128-blocks.
Segment ids of packed rows travel lane- and sublane-broadcast ([B, T, 128] for queries, [B, 8, T]
for keys: the layouts Mosaic tiles) and mask keys of other examples; every query sees at least
itself, so each softmax row has a real maximum. Per-row statistics (max, sum, logsumexp, delta) are kept 128 lanes wide for the same reason.

`interpret=True` runs the same kernels in Pallas' TPU interpret mode (TPU memory spaces and grid
semantics simulated on any backend): how the CPU tests run them. On a CPU host with libtpu they also
compile for TPU topologies ahead of time (tests/kernels/test_flash_tpu.py).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import tpu as pltpu

from synergen_jax.kernels.flash_vjp import check_self_attention, flash_with_vjp
from synergen_jax.kernels.segment_blocks import kernel_block_ranges

MASKED = -1e30          # finite: a row masked within one block must not produce NaNs
LANES, SUBLANES = 128, 8
DEFAULT_BLOCKS = (128, 128)
_NT = (((1,), (1,)), ((), ()))   # a @ b.T
_TN = (((0,), (0,)), ((), ()))   # a.T @ b


def _dot(a, b, dims=None):
  if dims is None:
    return jax.lax.dot(a, b, preferred_element_type=jnp.float32)
  return jax.lax.dot_general(a, b, dims, preferred_element_type=jnp.float32)


def _mask(i, j, block_q, block_k, qseg_ref, kseg_ref, causal):
  """[block_q, block_k] visibility of k block j to q block i (None: everything visible)."""
  mask = None
  if causal:
    rows = i * block_q + jax.lax.broadcasted_iota(jnp.int32, (block_q, block_k), 0)
    cols = j * block_k + jax.lax.broadcasted_iota(jnp.int32, (block_q, block_k), 1)
    mask = rows >= cols
  if qseg_ref is not None:
    same = qseg_ref[:, :1] == kseg_ref[:1, :]          # [bq, 1] == [1, bk]
    mask = same if mask is None else mask & same
  return mask


def _visible(i, j, block_q, block_k):
  """Whether k block j holds any key at or before q block i's last row."""
  return j * block_k <= (i + 1) * block_q - 1


def _block_range(ranges_ref, b, row, rows):
  """[start, stop) of the column blocks that share a segment with row block `row` of batch row b
  (segment_blocks.py; scalar-prefetched into SMEM, flattened)."""
  at = 2 * (b * rows + row)
  return ranges_ref[at], ranges_ref[at + 1]


def _run_if(condition, step):
  if condition is None:
    step()
  else:
    pl.when(condition)(step)


def _and(a, b):
  return b if a is None else a & b


def _k_step_visible(ranges_ref, b, i, j, causal, segmented, block_q, block_k, q_blocks):
  """Whether k block j can hold a key visible to q block i (None: always)."""
  condition = _visible(i, j, block_q, block_k) if causal else None
  if segmented:
    start, stop = _block_range(ranges_ref, b, i, q_blocks)
    condition = _and(condition, (j >= start) & (j < stop))
  return condition


def _fwd_kernel(ranges_ref, *refs, scale, causal, segmented, block_q, block_k):
  if segmented:
    q_ref, k_ref, v_ref, qseg_ref, kseg_ref, o_ref, lse_ref, m_sc, l_sc, acc_sc = refs
  else:
    q_ref, k_ref, v_ref, o_ref, lse_ref, m_sc, l_sc, acc_sc = refs
    qseg_ref = kseg_ref = None
  b, i, j = pl.program_id(0), pl.program_id(2), pl.program_id(3)

  @pl.when(j == 0)
  def _init():
    m_sc[...] = jnp.full(m_sc.shape, MASKED, jnp.float32)
    l_sc[...] = jnp.zeros(l_sc.shape, jnp.float32)
    acc_sc[...] = jnp.zeros(acc_sc.shape, jnp.float32)

  def _step():
    s = _dot(q_ref[...], k_ref[...], _NT) * scale                       # [bq, bk]
    mask = _mask(i, j, block_q, block_k, qseg_ref, kseg_ref, causal)
    if mask is not None:
      s = jnp.where(mask, s, MASKED)
    m_prev = m_sc[...]                                                   # [bq, 128], lanes equal
    m_new = jnp.maximum(m_prev, s.max(axis=-1, keepdims=True))
    p = jnp.exp(s - m_new[:, :1])
    correction = jnp.exp(m_prev - m_new)
    l_sc[...] = correction * l_sc[...] + p.sum(axis=-1, keepdims=True)
    m_sc[...] = m_new
    v = v_ref[...]
    acc_sc[...] = acc_sc[...] * correction[:, :1] + _dot(p.astype(v.dtype), v)

  _run_if(_k_step_visible(ranges_ref, b, i, j, causal, segmented, block_q, block_k,
                          pl.num_programs(2)), _step)

  @pl.when(j == pl.num_programs(3) - 1)
  def _finish():
    l = l_sc[...]
    o_ref[...] = (acc_sc[...] / l[:, :1]).astype(o_ref.dtype)
    lse_ref[...] = m_sc[...] + jnp.log(l)


def _dkv_kernel(ranges_ref, *refs, scale, causal, segmented, block_q, block_k):
  if segmented:
    (q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, qseg_ref, kseg_ref, dk_ref, dv_ref,
     dk_sc, dv_sc) = refs
  else:
    q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, dk_ref, dv_ref, dk_sc, dv_sc = refs
    qseg_ref = kseg_ref = None
  b, j, g, i = pl.program_id(0), pl.program_id(2), pl.program_id(3), pl.program_id(4)

  @pl.when((g == 0) & (i == 0))
  def _init():
    dk_sc[...] = jnp.zeros(dk_sc.shape, jnp.float32)
    dv_sc[...] = jnp.zeros(dv_sc.shape, jnp.float32)

  def _step():
    q, k, v, do = q_ref[...], k_ref[...], v_ref[...], do_ref[...]
    p = jnp.exp(_dot(q, k, _NT) * scale - lse_ref[...][:, :1])           # [bq, bk]
    mask = _mask(i, j, block_q, block_k, qseg_ref, kseg_ref, causal)
    if mask is not None:
      p = jnp.where(mask, p, 0.0)
    dv_sc[...] += _dot(p.astype(do.dtype), do, _TN)
    ds = p * (_dot(do, v, _NT) - delta_ref[...][:, :1]) * scale
    dk_sc[...] += _dot(ds.astype(q.dtype), q, _TN)

  condition = _visible(i, j, block_q, block_k) if causal else None
  if segmented:   # only q blocks that share a segment with k block j
    start, stop = _block_range(ranges_ref, b, j, pl.num_programs(2))
    condition = _and(condition, (i >= start) & (i < stop))
  _run_if(condition, _step)

  @pl.when((g == pl.num_programs(3) - 1) & (i == pl.num_programs(4) - 1))
  def _finish():
    dk_ref[...] = dk_sc[...].astype(dk_ref.dtype)
    dv_ref[...] = dv_sc[...].astype(dv_ref.dtype)


def _dq_kernel(ranges_ref, *refs, scale, causal, segmented, block_q, block_k):
  if segmented:
    q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, qseg_ref, kseg_ref, dq_ref, dq_sc = refs
  else:
    q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, dq_ref, dq_sc = refs
    qseg_ref = kseg_ref = None
  b, i, j = pl.program_id(0), pl.program_id(2), pl.program_id(3)

  @pl.when(j == 0)
  def _init():
    dq_sc[...] = jnp.zeros(dq_sc.shape, jnp.float32)

  def _step():
    q, k, v, do = q_ref[...], k_ref[...], v_ref[...], do_ref[...]
    p = jnp.exp(_dot(q, k, _NT) * scale - lse_ref[...][:, :1])
    mask = _mask(i, j, block_q, block_k, qseg_ref, kseg_ref, causal)
    if mask is not None:
      p = jnp.where(mask, p, 0.0)
    ds = p * (_dot(do, v, _NT) - delta_ref[...][:, :1]) * scale
    dq_sc[...] += _dot(ds.astype(k.dtype), k)

  _run_if(_k_step_visible(ranges_ref, b, i, j, causal, segmented, block_q, block_k,
                          pl.num_programs(2)), _step)

  @pl.when(j == pl.num_programs(3) - 1)
  def _finish():
    dq_ref[...] = dq_sc[...].astype(dq_ref.dtype)


# ---------------------------------------------------------------------------------------------------
# pallas_call wrappers and the custom_vjp. Arrays here are [B, H, T, D].
# ---------------------------------------------------------------------------------------------------

def _call(kernel, grid, in_specs, out_specs, out_shape, scratch, semantics, interpret, ranges,
          *args):
  """pallas_call with the flattened block ranges scalar-prefetched into SMEM: kernels and index maps
  get them as their first / last argument."""
  return pl.pallas_call(
      kernel, out_shape=out_shape,
      grid_spec=pltpu.PrefetchScalarGridSpec(num_scalar_prefetch=1, grid=grid, in_specs=in_specs,
                                             out_specs=out_specs, scratch_shapes=scratch),
      compiler_params=pltpu.CompilerParams(dimension_semantics=semantics),
      interpret=pltpu.InterpretParams() if interpret else False)(ranges.reshape(-1), *args)


def _clamp_k(ranges_ref, b, i, j, causal, segmented, block_q, block_k, q_blocks):
  """The k block to fetch at step j of q block i: j itself while visible, else the nearest visible
  block, so skipped steps repeat a block index and Pallas issues no DMA for them."""
  if causal:
    j = jnp.minimum(j, _last_k_block(i, block_q, block_k))
  if segmented:
    start, stop = _block_range(ranges_ref, b, i, q_blocks)
    j = jnp.maximum(jnp.minimum(j, stop - 1), start)
  return j


def _segment_layouts(seg):
  """[B, T] ids -> queries' [B, T, 128] and keys' [B, 8, T] broadcasts."""
  return (jnp.broadcast_to(seg[:, :, None], seg.shape + (LANES,)),
          jnp.broadcast_to(seg[:, None, :], (seg.shape[0], SUBLANES, seg.shape[1])))


def _floordiv(x, d: int):
  """x // d for non-negative traced ints: a shift for powers of two (Mosaic lowers integer division
  through sign(), which needs a TPU device to trace and so breaks ahead-of-time compilation)."""
  if d & (d - 1) == 0:
    return jax.lax.shift_right_logical(x, jnp.int32(d.bit_length() - 1))
  return jax.lax.div(x, d)


def _last_k_block(i, block_q, block_k):
  return _floordiv((i + 1) * block_q - 1, block_k)


def _forward(q, k, v, seg, causal, scale, block_q, block_k, interpret):
  batch, heads, length, head_dim = q.shape
  groups = heads // k.shape[1]
  nq, nk = length // block_q, length // block_k
  segmented = seg is not None
  k_j = lambda b, i, j, r: _clamp_k(r, b, i, j, causal, segmented, block_q, block_k, nq)
  kv_spec = pl.BlockSpec((None, None, block_k, head_dim),
                         lambda b, h, i, j, r: (b, _floordiv(h, groups), k_j(b, i, j, r), 0))
  q_spec = pl.BlockSpec((None, None, block_q, head_dim), lambda b, h, i, j, r: (b, h, i, 0))
  in_specs = [q_spec, kv_spec, kv_spec]
  args = [q, k, v]
  if segmented:
    qseg, kseg = _segment_layouts(seg)
    in_specs += [pl.BlockSpec((None, block_q, LANES), lambda b, h, i, j, r: (b, i, 0)),
                 pl.BlockSpec((None, SUBLANES, block_k),
                              lambda b, h, i, j, r: (b, 0, k_j(b, i, j, r)))]
    args += [qseg, kseg]
  kernel = functools.partial(_fwd_kernel, scale=scale, causal=causal, segmented=segmented,
                             block_q=block_q, block_k=block_k)
  o, lse = _call(
      kernel, (batch, heads, nq, nk), in_specs,
      [q_spec, pl.BlockSpec((None, None, block_q, LANES), lambda b, h, i, j, r: (b, h, i, 0))],
      [jax.ShapeDtypeStruct(q.shape, q.dtype),
       jax.ShapeDtypeStruct((batch, heads, length, LANES), jnp.float32)],
      [pltpu.VMEM((block_q, LANES), jnp.float32), pltpu.VMEM((block_q, LANES), jnp.float32),
       pltpu.VMEM((block_q, head_dim), jnp.float32)],
      ("parallel", "parallel", "parallel", "arbitrary"), interpret,
      kernel_block_ranges(seg, batch, length, block_q, block_k), *args)
  return o, lse


def _backward(q, k, v, seg, o, lse, do, causal, scale, block_q, block_k, interpret):
  batch, heads, length, head_dim = q.shape
  kv_heads = k.shape[1]
  groups = heads // kv_heads
  nq, nk = length // block_q, length // block_k
  delta = jnp.einsum("bhtd,bhtd->bht", o.astype(jnp.float32), do.astype(jnp.float32))
  delta = jnp.broadcast_to(delta[..., None], delta.shape + (LANES,))
  segmented = seg is not None
  if segmented:
    qseg, kseg = _segment_layouts(seg)

  # dK/dV: grid (b, kv head, k block j, group member g, q block i); q blocks that cannot see k block
  # j (before the diagonal, or sharing none of its segments) are clamped to the nearest one that can
  # (no DMA) and skipped.
  def q_i(b, j, i, r):
    if causal:
      i = jnp.maximum(i, _floordiv(j * block_k, block_q))
    if segmented:
      start, stop = _block_range(r, b, j, nk)
      i = jnp.maximum(jnp.minimum(i, stop - 1), start)
    return i
  q_spec = pl.BlockSpec((None, None, block_q, head_dim),
                        lambda b, kh, j, g, i, r: (b, kh * groups + g, q_i(b, j, i, r), 0))
  row_spec = pl.BlockSpec((None, None, block_q, LANES),
                          lambda b, kh, j, g, i, r: (b, kh * groups + g, q_i(b, j, i, r), 0))
  kv_spec = pl.BlockSpec((None, None, block_k, head_dim), lambda b, kh, j, g, i, r: (b, kh, j, 0))
  in_specs = [q_spec, kv_spec, kv_spec, q_spec, row_spec, row_spec]
  args = [q, k, v, do, lse, delta]
  if segmented:
    in_specs += [pl.BlockSpec((None, block_q, LANES),
                              lambda b, kh, j, g, i, r: (b, q_i(b, j, i, r), 0)),
                 pl.BlockSpec((None, SUBLANES, block_k), lambda b, kh, j, g, i, r: (b, 0, j))]
    args += [qseg, kseg]
  dkv = functools.partial(_dkv_kernel, scale=scale, causal=causal, segmented=segmented,
                          block_q=block_q, block_k=block_k)
  dk, dv = _call(
      dkv, (batch, kv_heads, nk, groups, nq), in_specs, [kv_spec, kv_spec],
      [jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype)],
      [pltpu.VMEM((block_k, head_dim), jnp.float32), pltpu.VMEM((block_k, head_dim), jnp.float32)],
      ("parallel", "parallel", "parallel", "arbitrary", "arbitrary"), interpret,
      kernel_block_ranges(seg, batch, length, block_k, block_q), *args)

  # dQ: grid (b, h, q block i, k block j), invisible k blocks clamped and skipped as in the forward.
  k_j = lambda b, i, j, r: _clamp_k(r, b, i, j, causal, segmented, block_q, block_k, nq)
  q_spec = pl.BlockSpec((None, None, block_q, head_dim), lambda b, h, i, j, r: (b, h, i, 0))
  row_spec = pl.BlockSpec((None, None, block_q, LANES), lambda b, h, i, j, r: (b, h, i, 0))
  kv_spec = pl.BlockSpec((None, None, block_k, head_dim),
                         lambda b, h, i, j, r: (b, _floordiv(h, groups), k_j(b, i, j, r), 0))
  in_specs = [q_spec, kv_spec, kv_spec, q_spec, row_spec, row_spec]
  args = [q, k, v, do, lse, delta]
  if segmented:
    in_specs += [pl.BlockSpec((None, block_q, LANES), lambda b, h, i, j, r: (b, i, 0)),
                 pl.BlockSpec((None, SUBLANES, block_k),
                              lambda b, h, i, j, r: (b, 0, k_j(b, i, j, r)))]
    args += [qseg, kseg]
  dq_kernel = functools.partial(_dq_kernel, scale=scale, causal=causal, segmented=segmented,
                                block_q=block_q, block_k=block_k)
  dq = _call(dq_kernel, (batch, heads, nq, nk), in_specs, q_spec,
             jax.ShapeDtypeStruct(q.shape, q.dtype), [pltpu.VMEM((block_q, head_dim), jnp.float32)],
             ("parallel", "parallel", "parallel", "arbitrary"), interpret,
             kernel_block_ranges(seg, batch, length, block_q, block_k), *args)
  return dq, dk, dv


_flash = flash_with_vjp(_forward, _backward)


def flash_attention(q, k, v, *, segment_ids=None, causal=True, block_q=None, block_k=None,
                    interpret=False):
  """[batch, length, heads, head_dim] flash attention on TPU (see the module docstring)."""
  length = q.shape[1]
  check_self_attention("pallas_tpu", q, k)
  block_q = min(block_q or DEFAULT_BLOCKS[0], length)
  block_k = min(block_k or DEFAULT_BLOCKS[1], length)
  sublanes = 16 if q.dtype == jnp.bfloat16 else SUBLANES
  tiled = lambda block, unit: block % unit == 0 or block == length   # a whole-length block is fine
  if length % block_q or length % block_k or not tiled(block_k, LANES) or not tiled(block_q, sublanes):
    raise ValueError(
        f"pallas_tpu attention: length {length} must be a multiple of block_q={block_q} and "
        f"block_k={block_k}, with block_k a multiple of {LANES} and block_q of {sublanes} unless "
        f"they span the whole length (Mosaic tiles {q.dtype} as ({sublanes}, {LANES})); pad the "
        f"sequence to a multiple of {LANES}")
  if segment_ids is not None:
    segment_ids = segment_ids.astype(jnp.int32)
  t = lambda x: jnp.swapaxes(x, 1, 2)        # [B, T, H, D] <-> [B, H, T, D]
  out = _flash(t(q), t(k), t(v), segment_ids, causal, q.shape[-1] ** -0.5, block_q, block_k, interpret)
  return t(out)
