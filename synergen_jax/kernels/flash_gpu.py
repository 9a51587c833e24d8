"""Flash attention for GPUs in Pallas (Triton backend): forward and backward, custom_vjp.

Layout [batch, length, heads, head_dim]; k/v may have fewer heads (GQA): a query head reads its
kv head through the BlockSpec index map, so repeated k/v are never materialised, and the dK/dV
kernel sums over the query heads of its group without atomics.

  forward   grid (q blocks, batch, heads): online softmax over k blocks; saves logsumexp per query.
  backward  delta = rowsum(o * dO) in XLA; one kernel for dK/dV (grid over k blocks, loop over the
            group's query heads and the q blocks that can see the block) and one for dQ (grid over
            q blocks, loop over k blocks).

The loops start/stop at the first and last block that can hold a visible key: causal masking ends
them at the diagonal, and with segment ids they skip blocks sharing no segment with the block
(`segment_blocks.py`). Inside, segment ids mask keys of other packed examples; every query sees at
least itself (padding carries its own id), which keeps each softmax row non-empty.
Scores and accumulators are float32 for f32 and bf16 inputs. `interpret=True` runs the same kernels
with Pallas' interpreter on any backend (the CPU tests).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from synergen_jax.kernels.flash_vjp import check_self_attention, flash_with_vjp
from synergen_jax.kernels.segment_blocks import kernel_block_ranges

MASKED = -1e30          # finite: a row masked within one block must not produce NaNs


def _mask(q_pos, k_pos, q_seg, k_seg, causal):
  mask = None
  if causal:
    mask = q_pos[:, None] >= k_pos[None, :]
  if q_seg is not None:
    same = q_seg[:, None] == k_seg[None, :]
    mask = same if mask is None else mask & same
  return mask


def _k_block_range(range_ref, i, causal, block_q, block_k, k_blocks, segmented):
  """[start, stop) of the k blocks q block i can see: causal blocks end at the diagonal, and with
  segment ids only blocks that hold one of its segments count (range_ref, segment_blocks.py)."""
  start, stop = 0, k_blocks
  if causal:
    stop = jax.lax.div((i + 1) * block_q + block_k - 1, block_k)
  if segmented:
    start, stop = range_ref[0], jnp.minimum(stop, range_ref[1])
  return start, stop


def _fwd_kernel(q_ref, k_ref, v_ref, qseg_ref, kseg_ref, range_ref, o_ref, lse_ref, *, scale,
                causal, block_k, segmented):
  block_q, head_dim = q_ref.shape
  kv_len = k_ref.shape[0]
  i = pl.program_id(0)
  q = q_ref[...]
  q_pos = i * block_q + jnp.arange(block_q)
  q_seg = qseg_ref[...] if segmented else None

  def body(j, carry):
    acc, m, l = carry
    ks = pl.ds(j * block_k, block_k)
    s = plgpu.dot(q, k_ref[ks, :], trans_b=True) * scale                      # [bq, bk] f32
    mask = _mask(q_pos, j * block_k + jnp.arange(block_k), q_seg,
                 kseg_ref[ks] if segmented else None, causal)
    if mask is not None:
      s = jnp.where(mask, s, MASKED)
    m_new = jnp.maximum(m, s.max(axis=-1))
    p = jnp.exp(s - m_new[:, None])
    correction = jnp.exp(m - m_new)
    v = v_ref[ks, :]
    acc = acc * correction[:, None] + plgpu.dot(p.astype(v.dtype), v)
    return acc, m_new, l * correction + p.sum(axis=-1)

  start, stop = _k_block_range(range_ref, i, causal, block_q, block_k, kv_len // block_k, segmented)
  carry = (jnp.zeros((block_q, head_dim), jnp.float32), jnp.full((block_q,), MASKED, jnp.float32),
           jnp.zeros((block_q,), jnp.float32))
  acc, m, l = jax.lax.fori_loop(start, stop, body, carry)
  o_ref[...] = (acc / l[:, None]).astype(o_ref.dtype)
  lse_ref[...] = m + jnp.log(l)


def _dkv_kernel(q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, qseg_ref, kseg_ref, range_ref,
                dk_ref, dv_ref, *, scale, causal, block_q, segmented):
  block_k, head_dim = k_ref.shape
  q_len, groups = q_ref.shape[0], q_ref.shape[1]
  j = pl.program_id(0)
  k, v = k_ref[...], v_ref[...]
  k_pos = j * block_k + jnp.arange(block_k)
  k_seg = kseg_ref[...] if segmented else None
  # Causal: q blocks that end before this k block starts cannot see it.
  start, stop = (jax.lax.div(j * block_k, block_q) if causal else 0), q_len // block_q
  if segmented:   # only q blocks that hold one of this k block's segments
    start, stop = jnp.maximum(start, range_ref[0]), jnp.minimum(stop, range_ref[1])
  dk = jnp.zeros((block_k, head_dim), jnp.float32)
  dv = jnp.zeros((block_k, head_dim), jnp.float32)
  for g in range(groups):                      # the query heads that share this kv head

    def body(i, carry, g=g):
      dk, dv = carry
      qs = pl.ds(i * block_q, block_q)
      q, do = q_ref[qs, g, :], do_ref[qs, g, :]
      s = plgpu.dot(q, k, trans_b=True) * scale
      p = jnp.exp(s - lse_ref[g, qs][:, None])
      mask = _mask(i * block_q + jnp.arange(block_q), k_pos,
                   qseg_ref[qs] if segmented else None, k_seg, causal)
      if mask is not None:
        p = jnp.where(mask, p, 0.0)
      dv = dv + plgpu.dot(p.astype(do.dtype), do, trans_a=True)
      dp = plgpu.dot(do, v, trans_b=True)
      ds = p * (dp - delta_ref[g, qs][:, None]) * scale
      return dk + plgpu.dot(ds.astype(q.dtype), q, trans_a=True), dv
    dk, dv = jax.lax.fori_loop(start, stop, body, (dk, dv))
  dk_ref[...] = dk.astype(dk_ref.dtype)
  dv_ref[...] = dv.astype(dv_ref.dtype)


def _dq_kernel(q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, qseg_ref, kseg_ref, range_ref,
               dq_ref, *, scale, causal, block_k, segmented):
  block_q, head_dim = q_ref.shape
  kv_len = k_ref.shape[0]
  i = pl.program_id(0)
  q, do = q_ref[...], do_ref[...]
  lse, delta = lse_ref[...], delta_ref[...]
  q_pos = i * block_q + jnp.arange(block_q)
  q_seg = qseg_ref[...] if segmented else None

  def body(j, dq):
    ks = pl.ds(j * block_k, block_k)
    k, v = k_ref[ks, :], v_ref[ks, :]
    s = plgpu.dot(q, k, trans_b=True) * scale
    p = jnp.exp(s - lse[:, None])
    mask = _mask(q_pos, j * block_k + jnp.arange(block_k), q_seg,
                 kseg_ref[ks] if segmented else None, causal)
    if mask is not None:
      p = jnp.where(mask, p, 0.0)
    ds = p * (plgpu.dot(do, v, trans_b=True) - delta[:, None]) * scale
    return dq + plgpu.dot(ds.astype(k.dtype), k)

  start, stop = _k_block_range(range_ref, i, causal, block_q, block_k, kv_len // block_k, segmented)
  dq = jax.lax.fori_loop(start, stop, body, jnp.zeros((block_q, head_dim), jnp.float32))
  dq_ref[...] = dq.astype(dq_ref.dtype)


# ---------------------------------------------------------------------------------------------------
# pallas_call wrappers and the custom_vjp.
# ---------------------------------------------------------------------------------------------------

def _params(interpret, num_warps=4):
  return dict(interpret=interpret, compiler_params=None if interpret else plgpu.CompilerParams(
      num_warps=num_warps, num_stages=2))


def _forward(q, k, v, seg, causal, scale, block_q, block_k, interpret):
  batch, length, heads, head_dim = q.shape
  groups = heads // k.shape[2]
  segmented = seg is not None
  ranges = kernel_block_ranges(seg, batch, length, block_q, block_k)
  seg = seg if segmented else jnp.zeros((batch, length), jnp.int32)
  kernel = functools.partial(_fwd_kernel, scale=scale, causal=causal, block_k=block_k,
                             segmented=segmented)
  o, lse = pl.pallas_call(
      kernel, grid=(length // block_q, batch, heads),
      in_specs=[pl.BlockSpec((None, block_q, None, head_dim), lambda i, b, h: (b, i, h, 0)),
                pl.BlockSpec((None, length, None, head_dim), lambda i, b, h: (b, 0, h // groups, 0)),
                pl.BlockSpec((None, length, None, head_dim), lambda i, b, h: (b, 0, h // groups, 0)),
                pl.BlockSpec((None, block_q), lambda i, b, h: (b, i)),
                pl.BlockSpec((None, length), lambda i, b, h: (b, 0)),
                pl.BlockSpec((None, None, 2), lambda i, b, h: (b, i, 0))],
      out_specs=[pl.BlockSpec((None, block_q, None, head_dim), lambda i, b, h: (b, i, h, 0)),
                 pl.BlockSpec((None, None, block_q), lambda i, b, h: (b, h, i))],
      out_shape=[jax.ShapeDtypeStruct(q.shape, q.dtype),
                 jax.ShapeDtypeStruct((batch, heads, length), jnp.float32)],
      **_params(interpret))(q, k, v, seg, seg, ranges)
  return o, lse


def _backward(q, k, v, seg, o, lse, do, causal, scale, block_q, block_k, interpret):
  batch, length, heads, head_dim = q.shape
  kv_heads = k.shape[2]
  groups = heads // kv_heads
  segmented = seg is not None
  dkv_block_q = 32 if block_q % 32 == 0 else block_q      # see the dK/dV call below
  q_ranges = kernel_block_ranges(seg, batch, length, block_q, block_k)
  k_ranges = kernel_block_ranges(seg, batch, length, block_k, dkv_block_q)
  seg = seg if segmented else jnp.zeros((batch, length), jnp.int32)
  delta = jnp.einsum("bthd,bthd->bht", o.astype(jnp.float32), do.astype(jnp.float32))
  # dK/dV holds two [block_k, head_dim] float32 accumulators: with 4 warps and 64-row q steps
  # ptxas spills it at head_dim 128 (255 registers, 260 B; bench/gpu_compile.py). 8 warps over 32-row
  # q steps need 200 registers and no spills.
  dkv = functools.partial(_dkv_kernel, scale=scale, causal=causal, block_q=dkv_block_q,
                          segmented=segmented)
  full_q = pl.BlockSpec((None, length, groups, head_dim), lambda j, b, kh: (b, 0, kh, 0))
  kv_block = pl.BlockSpec((None, block_k, None, head_dim), lambda j, b, kh: (b, j, kh, 0))
  rows = pl.BlockSpec((None, groups, length), lambda j, b, kh: (b, kh, 0))
  dk, dv = pl.pallas_call(
      dkv, grid=(length // block_k, batch, kv_heads),
      in_specs=[full_q, kv_block, kv_block, full_q, rows, rows,
                pl.BlockSpec((None, length), lambda j, b, kh: (b, 0)),
                pl.BlockSpec((None, block_k), lambda j, b, kh: (b, j)),
                pl.BlockSpec((None, None, 2), lambda j, b, kh: (b, j, 0))],
      out_specs=[kv_block, kv_block],
      out_shape=[jax.ShapeDtypeStruct(k.shape, k.dtype), jax.ShapeDtypeStruct(v.shape, v.dtype)],
      **_params(interpret, num_warps=8))(q, k, v, do, lse, delta, seg, seg, k_ranges)
  dq_kernel = functools.partial(_dq_kernel, scale=scale, causal=causal, block_k=block_k,
                                segmented=segmented)
  q_block = pl.BlockSpec((None, block_q, None, head_dim), lambda i, b, h: (b, i, h, 0))
  full_kv = pl.BlockSpec((None, length, None, head_dim), lambda i, b, h: (b, 0, h // groups, 0))
  q_rows = pl.BlockSpec((None, None, block_q), lambda i, b, h: (b, h, i))
  dq = pl.pallas_call(
      dq_kernel, grid=(length // block_q, batch, heads),
      in_specs=[q_block, full_kv, full_kv, q_block, q_rows, q_rows,
                pl.BlockSpec((None, block_q), lambda i, b, h: (b, i)),
                pl.BlockSpec((None, length), lambda i, b, h: (b, 0)),
                pl.BlockSpec((None, None, 2), lambda i, b, h: (b, i, 0))],
      out_specs=q_block, out_shape=jax.ShapeDtypeStruct(q.shape, q.dtype),
      **_params(interpret))(q, k, v, do, lse, delta, seg, seg, q_ranges)
  return dq, dk, dv


_flash = flash_with_vjp(_forward, _backward)

DEFAULT_BLOCKS = (64, 64)


def flash_attention(q, k, v, *, segment_ids=None, causal=True, block_q=None, block_k=None,
                    interpret=False):
  """[batch, length, heads, head_dim] flash attention (see the module docstring)."""
  length, head_dim = q.shape[1], q.shape[3]
  check_self_attention("pallas_gpu", q, k)
  block_q = min(block_q or DEFAULT_BLOCKS[0], length)
  block_k = min(block_k or DEFAULT_BLOCKS[1], length)
  if length % block_q or length % block_k:
    raise ValueError(f"pallas_gpu attention: length {length} must be a multiple of block_q={block_q} "
                     f"and block_k={block_k}; pad the sequence or choose blocks that divide it")
  if not interpret and (head_dim not in (16, 32, 64, 128, 256) or block_q & (block_q - 1) or
                        block_k & (block_k - 1)):
    raise ValueError(f"pallas_gpu attention (Triton) needs head_dim in 16..256 a power of two and "
                     f"power-of-two blocks; got head_dim={head_dim}, blocks ({block_q}, {block_k})")
  return _flash(q, k, v, segment_ids, causal, head_dim ** -0.5, block_q, block_k, interpret)
