"""Flash attention for Hopper GPUs in Pallas Mosaic GPU: forward and backward, custom_vjp.

Layout [batch, length, heads, head_dim]; k/v may have fewer heads (GQA). Every kernel is one
warpgroup per grid point; its matmuls are wgmma (scores and accumulators float32), its loads are TMA
copies into swizzled SMEM, double-buffered: step n+1's tiles are in flight while step n computes.

  forward   grid (heads, q blocks, batch): online softmax over k blocks in base 2 (the scale folded
            with log2(e)); saves the base-2 logsumexp per query.
  dQ        grid (heads, q blocks, batch): loop over k blocks.
  dK/dV     grid (kv heads, k blocks, batch): one loop over the group's query heads x the q blocks
            that can see the block, so a kv head's gradient is summed in registers (no atomics, no
            per-query-head dK that XLA would have to add up).

The loops visit only blocks that can hold a visible key: causal masking ends them at the diagonal,
and with segment ids they also skip blocks that share no segment (`segment_blocks.py`: with several
examples packed in a row, most blocks). Inside the visited blocks segment ids mask keys of other
packed examples; every query sees at least itself (padding carries its own id), which keeps each
softmax row non-empty.

Constraints (checked with a message): bf16 or f16 inputs (wgmma; f32 goes to `pallas_gpu`), head_dim
64 or 128, block_q 64 and block_k 64 or 128 for the forward (the backward runs 64 x 64: see
DEFAULT_BLOCKS for why), length a multiple of the blocks, q_len == kv_len.

`interpret=True` runs the same kernels in Pallas' Mosaic GPU interpret mode on any backend, with its
race detector on: TMA copies, barriers, slots, loop bounds and masks are all exercised. That
interpreter takes neither register operands nor transposed refs in wgmma, has no `run_state` (the
in-place accumulation) and no lowering for layout casts, so there (and only there) `_Ops.mma` is a
plain dot of the same operands and layouts are left out; the wgmma/layout path is checked by
lowering the kernels for CUDA (tests do it on CPU hosts).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import mosaic_gpu as plgpu

from synergen_jax.kernels.flash_vjp import check_self_attention, flash_with_vjp
from synergen_jax.kernels.segment_blocks import kernel_block_ranges

LOG2E = math.log2(math.e)
MASKED = -1e30          # finite: a row masked within one block must not produce NaNs
# One warpgroup holds a 64-row tile of scores plus its float32 accumulators in registers. What ptxas
# fits without spilling (bench/gpu_compile.py, H100, head_dim 64 and 128): the forward with 64 x 64
# or 64 x 128 blocks, the backward only with 64 x 64 (its dK/dV keeps two [block_k, head_dim]
# accumulators), and no kernel with 128-row q blocks or head_dim 256.
DEFAULT_BLOCKS = (64, 128)            # forward (block_q, block_k); block_q is always 64
FORWARD_BLOCK_K = (64, 128)
BACKWARD_BLOCKS = (64, 64)
HEAD_DIMS = (64, 128)
WGMMA = plgpu.Layout.WGMMA
ROWS = WGMMA.reduce(1)  # one value per row of a WGMMA-layout tile
COLS = WGMMA.reduce(0)  # one value per column


def _interpret_params():
  # Not yet exported under jax.experimental in the pinned JAX.
  from jax._src.pallas.mosaic_gpu.interpret.params import InterpretGPUParams
  return InterpretGPUParams(detect_races=True)


class _Ops:
  """The pieces that differ between compiled and interpret mode (see the module docstring)."""

  def __init__(self, interpret: bool):
    self.interpret = interpret

  def cast(self, x, layout):
    return x if self.interpret else plgpu.layout_cast(x, layout)

  def iota(self, shape, dim):
    return self.cast(lax.broadcasted_iota(jnp.int32, shape, dim), WGMMA)

  def mma(self, a, b, *, transpose_b=False, acc=None):
    """acc + a @ b (b.T if transpose_b) in float32; a from registers or SMEM, b from SMEM. Given acc,
    wgmma accumulates into it in place, so the product never needs registers of its own."""
    if self.interpret:
      a = a if isinstance(a, jax.Array) else a[...]
      dims = (((1,), (1 if transpose_b else 0,)), ((), ()))
      out = lax.dot_general(a, b[...], dims, preferred_element_type=jnp.float32)
      return out if acc is None else acc + out

    def run(acc_ref):
      plgpu.wgmma(acc_ref, a, plgpu.transpose_ref(b, (1, 0)) if transpose_b else b)
    if acc is not None:
      return pl.run_state(run)(plgpu.ACC.init(acc))

    def run_fresh(acc_ref):
      run(acc_ref)
      return acc_ref[...]
    return pl.run_scoped(run_fresh,
                         plgpu.ACC((a.shape[0], b.shape[0 if transpose_b else 1]), jnp.float32))

  def mask(self, shape, row_pos, col_pos, row_seg, col_seg, causal, q_on_rows):
    """Visible (query, key) pairs of a [rows, cols] tile whose first row/column sit at row_pos/col_pos;
    queries on rows (forward, dQ) or on columns (dK/dV). None when nothing is masked."""
    mask = None
    if causal:
      rows = self.iota(shape, 0) + row_pos
      cols = self.iota(shape, 1) + col_pos
      mask = rows >= cols if q_on_rows else cols >= rows
    if row_seg is not None:
      same = (lax.broadcast_in_dim(row_seg, shape, [0]) == lax.broadcast_in_dim(col_seg, shape, [1]))
      mask = same if mask is None else mask & same
    return mask


def _tiles():
  return (plgpu.TilingTransform((8, 64)), plgpu.SwizzleTransform(128))


def _smem(shape, dtype, tiled=False):
  return plgpu.SMEM(shape, dtype, transforms=_tiles() if tiled else ())


def _kernel(body, out_type, grid, names, scratch, interpret):
  return plgpu.kernel(body, out_type=out_type, grid=grid, grid_names=names, scratch_types=scratch,
                      compiler_params=plgpu.CompilerParams(approx_math=True),
                      interpret=_interpret_params() if interpret else None)


def _k_block_range(ranges_ref, b, i, causal, block_q, block_k, k_blocks):
  """[start, stop) of the k blocks q block i can see: causal blocks end at the diagonal, and with
  segment ids (ranges_ref given) only blocks that hold one of its segments count."""
  start, stop = 0, k_blocks
  if causal:
    stop = lax.div((i + 1) * block_q + block_k - 1, jnp.int32(block_k))
  if ranges_ref is not None:
    start, stop = ranges_ref[b, i, 0], jnp.minimum(stop, ranges_ref[b, i, 1])
  return start, stop


def _kv_fetcher(k_ref, v_ref, seg_ref, k_smem, v_smem, kseg_smem, k_bar, v_bar, kseg_bar, b, kh,
                block_k):
  """fetch(step, slot): TMA copies of k block `step` of kv head kh (and its key segment ids when
  seg_ref is given) into SMEM slot `slot`, each arriving on that slot's barrier."""
  def fetch(step, slot):
    rows = pl.ds(step * block_k, block_k)
    plgpu.copy_gmem_to_smem(k_ref.at[b, rows, kh], k_smem.at[slot], k_bar.at[slot])
    plgpu.copy_gmem_to_smem(v_ref.at[b, rows, kh], v_smem.at[slot], v_bar.at[slot])
    if seg_ref is not None:
      plgpu.copy_gmem_to_smem(seg_ref.at[b, rows], kseg_smem.at[slot], kseg_bar.at[slot])
  return fetch


# ---------------------------------------------------------------------------------------------------
# Forward.
# ---------------------------------------------------------------------------------------------------

def _forward(q, k, v, seg, causal, scale, block_q, block_k, interpret):
  batch, length, heads, head_dim = q.shape
  groups = heads // k.shape[2]
  dtype = q.dtype
  segmented = seg is not None
  ops = _Ops(interpret)
  c = scale * LOG2E

  def kernel(q_ref, k_ref, v_ref, seg_ref, ranges_ref, o_ref, lse_ref, q_smem, k_smem, v_smem,
             qseg_smem, kseg_smem, lse_smem, q_bar, k_bar, v_bar, kseg_bar):
    h, i, b = lax.axis_index("heads"), lax.axis_index("q"), lax.axis_index("batch")
    kh = lax.div(h, jnp.int32(groups))
    q_rows = pl.ds(i * block_q, block_q)
    start, stop = _k_block_range(ranges_ref if segmented else None, b, i, causal, block_q, block_k,
                                 length // block_k)
    fetch = _kv_fetcher(k_ref, v_ref, seg_ref if segmented else None, k_smem, v_smem, kseg_smem,
                        k_bar, v_bar, kseg_bar, b, kh, block_k)

    fetch(start, 0)
    plgpu.copy_gmem_to_smem(q_ref.at[b, q_rows, h], q_smem, q_bar.at[0])
    q_seg = None
    if segmented:
      plgpu.copy_gmem_to_smem(seg_ref.at[b, q_rows], qseg_smem, q_bar.at[1])
      plgpu.barrier_wait(q_bar.at[1])
      q_seg = ops.cast(qseg_smem[...], ROWS)
    plgpu.barrier_wait(q_bar.at[0])

    def body(step, carry):
      acc, m, l = carry
      slot = lax.rem(step - start, 2)

      @pl.when(step + 1 < stop)
      def _prefetch():   # into the other slot, whose readers (step - 1's wgmmas) have finished
        fetch(step + 1, 1 - slot)

      plgpu.barrier_wait(k_bar.at[slot])
      s = ops.mma(q_smem, k_smem.at[slot], transpose_b=True) * c
      k_seg = None
      if segmented:
        plgpu.barrier_wait(kseg_bar.at[slot])
        k_seg = ops.cast(kseg_smem.at[slot][...], COLS)
      mask = ops.mask(s.shape, i * block_q, step * block_k, q_seg, k_seg, causal, True)
      if mask is not None:
        s = jnp.where(mask, s, MASKED)
      m_new = jnp.maximum(m, s.max(axis=1))
      alpha = jnp.exp2(m - m_new)
      p = jnp.exp2(s - lax.broadcast_in_dim(m_new, s.shape, [0]))
      l = l * alpha + p.sum(axis=1)
      plgpu.barrier_wait(v_bar.at[slot])
      acc = ops.mma(p.astype(dtype), v_smem.at[slot],
                    acc=acc * lax.broadcast_in_dim(alpha, acc.shape, [0]))
      return acc, m_new, l

    carry = (ops.cast(jnp.zeros((block_q, head_dim), jnp.float32), WGMMA),
             ops.cast(jnp.full((block_q,), MASKED, jnp.float32), ROWS),
             ops.cast(jnp.zeros((block_q,), jnp.float32), ROWS))
    acc, m, l = lax.fori_loop(start, stop, body, carry)
    q_smem[...] = (acc / lax.broadcast_in_dim(l, acc.shape, [0])).astype(dtype)
    lse_smem[...] = m + jnp.log2(l)
    plgpu.commit_smem()
    plgpu.copy_smem_to_gmem(q_smem, o_ref.at[b, q_rows, h])
    plgpu.copy_smem_to_gmem(lse_smem, lse_ref.at[b, h, q_rows])
    plgpu.wait_smem_to_gmem(0)

  scratch = [_smem((block_q, head_dim), dtype, True), _smem((2, block_k, head_dim), dtype, True),
             _smem((2, block_k, head_dim), dtype, True), _smem((block_q,), jnp.int32),
             _smem((2, block_k), jnp.int32), _smem((block_q,), jnp.float32),
             plgpu.Barrier(num_barriers=2), plgpu.Barrier(num_barriers=2),
             plgpu.Barrier(num_barriers=2), plgpu.Barrier(num_barriers=2)]
  out_type = (jax.ShapeDtypeStruct(q.shape, dtype),
              jax.ShapeDtypeStruct((batch, heads, length), jnp.float32))
  ranges = kernel_block_ranges(seg, batch, length, block_q, block_k)
  seg = seg if segmented else jnp.zeros((batch, length), jnp.int32)
  return _kernel(kernel, out_type, (heads, length // block_q, batch), ("heads", "q", "batch"),
                 scratch, interpret)(q, k, v, seg, ranges)


# ---------------------------------------------------------------------------------------------------
# Backward: delta = rowsum(o * dO) in XLA, then the dQ and dK/dV kernels.
# ---------------------------------------------------------------------------------------------------

def _dq(q, k, v, seg, do, lse, delta, causal, scale, block_q, block_k, interpret):
  batch, length, heads, head_dim = q.shape
  groups = heads // k.shape[2]
  dtype = q.dtype
  segmented = seg is not None
  ops = _Ops(interpret)
  c = scale * LOG2E

  def kernel(q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, seg_ref, ranges_ref, dq_ref, q_smem,
             do_smem, lse_smem, delta_smem, qseg_smem, k_smem, v_smem, kseg_smem, q_bar, k_bar, v_bar,
             kseg_bar):
    h, i, b = lax.axis_index("heads"), lax.axis_index("q"), lax.axis_index("batch")
    kh = lax.div(h, jnp.int32(groups))
    q_rows = pl.ds(i * block_q, block_q)
    start, stop = _k_block_range(ranges_ref if segmented else None, b, i, causal, block_q, block_k,
                                 length // block_k)
    fetch = _kv_fetcher(k_ref, v_ref, seg_ref if segmented else None, k_smem, v_smem, kseg_smem,
                        k_bar, v_bar, kseg_bar, b, kh, block_k)

    fetch(start, 0)
    plgpu.copy_gmem_to_smem(q_ref.at[b, q_rows, h], q_smem, q_bar.at[0])
    plgpu.copy_gmem_to_smem(do_ref.at[b, q_rows, h], do_smem, q_bar.at[1])
    plgpu.copy_gmem_to_smem(lse_ref.at[b, h, q_rows], lse_smem, q_bar.at[2])
    plgpu.copy_gmem_to_smem(delta_ref.at[b, h, q_rows], delta_smem, q_bar.at[3])
    if segmented:
      plgpu.copy_gmem_to_smem(seg_ref.at[b, q_rows], qseg_smem, q_bar.at[4])
    for n in range(5 if segmented else 4):
      plgpu.barrier_wait(q_bar.at[n])
    lse = ops.cast(lse_smem[...], ROWS)
    delta = ops.cast(delta_smem[...], ROWS)
    q_seg = ops.cast(qseg_smem[...], ROWS) if segmented else None

    def body(step, dq):
      slot = lax.rem(step - start, 2)

      @pl.when(step + 1 < stop)
      def _prefetch():
        fetch(step + 1, 1 - slot)

      plgpu.barrier_wait(k_bar.at[slot])
      s = ops.mma(q_smem, k_smem.at[slot], transpose_b=True) * c
      p = jnp.exp2(s - lax.broadcast_in_dim(lse, s.shape, [0]))
      k_seg = None
      if segmented:
        plgpu.barrier_wait(kseg_bar.at[slot])
        k_seg = ops.cast(kseg_smem.at[slot][...], COLS)
      mask = ops.mask(s.shape, i * block_q, step * block_k, q_seg, k_seg, causal, True)
      if mask is not None:
        p = jnp.where(mask, p, 0.0)
      plgpu.barrier_wait(v_bar.at[slot])
      dp = ops.mma(do_smem, v_smem.at[slot], transpose_b=True)
      ds = p * (dp - lax.broadcast_in_dim(delta, s.shape, [0]))
      return ops.mma(ds.astype(dtype), k_smem.at[slot], acc=dq)

    dq = lax.fori_loop(start, stop, body, ops.cast(jnp.zeros((block_q, head_dim), jnp.float32), WGMMA))
    q_smem[...] = (dq * scale).astype(dtype)
    plgpu.commit_smem()
    plgpu.copy_smem_to_gmem(q_smem, dq_ref.at[b, q_rows, h])
    plgpu.wait_smem_to_gmem(0)

  scratch = [_smem((block_q, head_dim), dtype, True), _smem((block_q, head_dim), dtype, True),
             _smem((block_q,), jnp.float32), _smem((block_q,), jnp.float32),
             _smem((block_q,), jnp.int32), _smem((2, block_k, head_dim), dtype, True),
             _smem((2, block_k, head_dim), dtype, True), _smem((2, block_k), jnp.int32),
             plgpu.Barrier(num_barriers=5), plgpu.Barrier(num_barriers=2),
             plgpu.Barrier(num_barriers=2), plgpu.Barrier(num_barriers=2)]
  ranges = kernel_block_ranges(seg, batch, length, block_q, block_k)
  seg = seg if segmented else jnp.zeros((batch, length), jnp.int32)
  return _kernel(kernel, jax.ShapeDtypeStruct(q.shape, dtype), (heads, length // block_q, batch),
                 ("heads", "q", "batch"), scratch, interpret)(
                     q, k, v, do, lse, delta, seg, ranges)


def _dkv(q, k, v, seg, do, lse, delta, causal, scale, block_q, block_k, interpret):
  batch, length, heads, head_dim = q.shape
  kv_heads = k.shape[2]
  groups = heads // kv_heads
  dtype = q.dtype
  segmented = seg is not None
  ops = _Ops(interpret)
  c = scale * LOG2E
  q_blocks = length // block_q

  def kernel(q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, seg_ref, ranges_ref, dk_ref, dv_ref,
             k_smem, v_smem, kseg_smem, q_smem, do_smem, lse_smem, delta_smem, qseg_smem, k_bar, q_bar,
             do_bar, rows_bar):
    kh, j, b = lax.axis_index("kv_heads"), lax.axis_index("k"), lax.axis_index("batch")
    k_rows = pl.ds(j * block_k, block_k)
    # Causal: q blocks that end before this k block starts cannot see it; with segment ids only q
    # blocks that hold one of its segments can.
    start, end = (lax.div(j * block_k, jnp.int32(block_q)) if causal else 0), q_blocks
    if segmented:
      start = jnp.maximum(start, ranges_ref[b, j, 0])
      end = jnp.minimum(end, ranges_ref[b, j, 1])
    visible = end - start
    steps = groups * visible          # (query head of the group, visible q block) pairs

    def fetch(step, slot):
      h = kh * groups + lax.div(step, visible)
      rows = pl.ds((start + lax.rem(step, visible)) * block_q, block_q)
      plgpu.copy_gmem_to_smem(q_ref.at[b, rows, h], q_smem.at[slot], q_bar.at[slot])
      plgpu.copy_gmem_to_smem(do_ref.at[b, rows, h], do_smem.at[slot], do_bar.at[slot])
      plgpu.copy_gmem_to_smem(lse_ref.at[b, h, rows], lse_smem.at[slot], rows_bar.at[3 * slot])
      plgpu.copy_gmem_to_smem(delta_ref.at[b, h, rows], delta_smem.at[slot],
                              rows_bar.at[3 * slot + 1])
      if segmented:
        plgpu.copy_gmem_to_smem(seg_ref.at[b, rows], qseg_smem.at[slot], rows_bar.at[3 * slot + 2])

    fetch(0, 0)
    plgpu.copy_gmem_to_smem(k_ref.at[b, k_rows, kh], k_smem, k_bar.at[0])
    plgpu.copy_gmem_to_smem(v_ref.at[b, k_rows, kh], v_smem, k_bar.at[1])
    if segmented:
      plgpu.copy_gmem_to_smem(seg_ref.at[b, k_rows], kseg_smem, k_bar.at[2])
    for n in range(3 if segmented else 2):
      plgpu.barrier_wait(k_bar.at[n])
    k_seg = ops.cast(kseg_smem[...], ROWS) if segmented else None

    def body(step, carry):
      dk, dv = carry
      slot = lax.rem(step, 2)

      @pl.when(step + 1 < steps)
      def _prefetch():
        fetch(step + 1, 1 - slot)

      q_pos = (start + lax.rem(step, visible)) * block_q
      plgpu.barrier_wait(q_bar.at[slot])
      plgpu.barrier_wait(rows_bar.at[3 * slot])
      s_t = ops.mma(k_smem, q_smem.at[slot], transpose_b=True) * c         # [block_k, block_q]
      lse = ops.cast(lse_smem.at[slot][...], COLS)
      p_t = jnp.exp2(s_t - lax.broadcast_in_dim(lse, s_t.shape, [1]))
      q_seg = None
      if segmented:
        plgpu.barrier_wait(rows_bar.at[3 * slot + 2])
        q_seg = ops.cast(qseg_smem.at[slot][...], COLS)
      mask = ops.mask(s_t.shape, j * block_k, q_pos, k_seg, q_seg, causal, False)
      if mask is not None:
        p_t = jnp.where(mask, p_t, 0.0)
      plgpu.barrier_wait(do_bar.at[slot])
      dv = ops.mma(p_t.astype(dtype), do_smem.at[slot], acc=dv)
      dp_t = ops.mma(v_smem, do_smem.at[slot], transpose_b=True)
      plgpu.barrier_wait(rows_bar.at[3 * slot + 1])
      delta = ops.cast(delta_smem.at[slot][...], COLS)
      ds_t = p_t * (dp_t - lax.broadcast_in_dim(delta, s_t.shape, [1]))
      return ops.mma(ds_t.astype(dtype), q_smem.at[slot], acc=dk), dv

    zeros = ops.cast(jnp.zeros((block_k, head_dim), jnp.float32), WGMMA)
    dk, dv = lax.fori_loop(0, steps, body, (zeros, zeros))
    k_smem[...] = (dk * scale).astype(dtype)
    v_smem[...] = dv.astype(dtype)
    plgpu.commit_smem()
    plgpu.copy_smem_to_gmem(k_smem, dk_ref.at[b, k_rows, kh])
    plgpu.copy_smem_to_gmem(v_smem, dv_ref.at[b, k_rows, kh])
    plgpu.wait_smem_to_gmem(0)

  scratch = [_smem((block_k, head_dim), dtype, True), _smem((block_k, head_dim), dtype, True),
             _smem((block_k,), jnp.int32), _smem((2, block_q, head_dim), dtype, True),
             _smem((2, block_q, head_dim), dtype, True), _smem((2, block_q), jnp.float32),
             _smem((2, block_q), jnp.float32), _smem((2, block_q), jnp.int32),
             plgpu.Barrier(num_barriers=3), plgpu.Barrier(num_barriers=2),
             plgpu.Barrier(num_barriers=2), plgpu.Barrier(num_barriers=6)]
  out_type = (jax.ShapeDtypeStruct(k.shape, dtype), jax.ShapeDtypeStruct(v.shape, dtype))
  ranges = kernel_block_ranges(seg, batch, length, block_k, block_q)       # q blocks per k block
  seg = seg if segmented else jnp.zeros((batch, length), jnp.int32)
  return _kernel(kernel, out_type, (kv_heads, length // block_k, batch),
                 ("kv_heads", "k", "batch"), scratch, interpret)(
                     q, k, v, do, lse, delta, seg, ranges)


def _backward(q, k, v, seg, o, lse, do, causal, scale, block_q, block_k, interpret):
  del block_q, block_k         # the forward's; the logsumexp is per query, whatever the blocks
  delta = jnp.einsum("bthd,bthd->bht", o.astype(jnp.float32), do.astype(jnp.float32))
  args = (q, k, v, seg, do.astype(q.dtype), lse, delta, causal, scale, *BACKWARD_BLOCKS, interpret)
  dk, dv = _dkv(*args)
  return _dq(*args), dk, dv


_flash = flash_with_vjp(_forward, _backward)


def flash_attention(q, k, v, *, segment_ids=None, causal=True, block_q=None, block_k=None,
                    interpret=False):
  """[batch, length, heads, head_dim] flash attention on Hopper (see the module docstring)."""
  length, head_dim = q.shape[1], q.shape[3]
  check_self_attention("pallas_mgpu", q, k)
  if q.dtype not in (jnp.bfloat16, jnp.float16) or k.dtype != q.dtype or v.dtype != q.dtype:
    raise ValueError(f"pallas_mgpu attention (wgmma) takes bfloat16 or float16 q/k/v; got "
                     f"{q.dtype}/{k.dtype}/{v.dtype} (pallas_gpu takes float32)")
  if head_dim not in HEAD_DIMS:
    raise ValueError(f"pallas_mgpu attention needs head_dim in {HEAD_DIMS} (128-byte swizzled tiles; "
                     f"256 spills registers in dK/dV); got {head_dim} (pallas_gpu takes others)")
  block_q = block_q or DEFAULT_BLOCKS[0]
  block_k = block_k or DEFAULT_BLOCKS[1]
  if block_q != 64 or block_k not in FORWARD_BLOCK_K:
    raise ValueError(f"pallas_mgpu attention needs block_q=64 (one warpgroup's rows) and block_k in "
                     f"{FORWARD_BLOCK_K} (larger blocks spill registers); got block_q={block_q}, "
                     f"block_k={block_k}. The backward always runs {BACKWARD_BLOCKS[0]} x "
                     f"{BACKWARD_BLOCKS[1]}")
  if length % block_q or length % block_k:
    raise ValueError(f"pallas_mgpu attention: length {length} must be a multiple of "
                     f"block_q={block_q} and block_k={block_k}; pad the sequence or choose blocks "
                     "that divide it")
  return _flash(q, k, v, segment_ids, causal, head_dim ** -0.5, block_q, block_k, interpret)
