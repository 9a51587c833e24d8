"""Softmax cross-entropy of a linear classifier without its full logits: `linear_cross_entropy`.

At paper scale the text head's logits are [rows, 92,544] and the unfold head's [windows * 16, 32,768]
per device: tens of GiB in float32, for numbers that are reduced to one per position at once. Here the
positions go through in chunks of `chunk_rows` and the vocabulary in tiles of `vocab_tile`: each step
holds one [chunk_rows, vocab_tile] block of float32 logits, an online log-sum-exp (running maximum and
rescaled sum) gives each position's normaliser, and the target's logit and the running argmax are
picked up on the way. The backward pass (custom VJP) recomputes every block from the saved
log-sum-exp: d logits = (softmax - onehot) * g, then dx += d logits @ W_tile^T and
dW_tile += x^T @ d logits. Matmuls take the inputs' dtype (bf16 in the paper configs) with float32
accumulation; the log-sum-exp, softmax and every accumulator are float32.

Cost: one extra logits matmul in the backward (4 instead of 3 per block), the same trade as
rematerialising the head. Memory: x, the saved log-sum-exp and the gradients, nothing of size
positions x vocabulary.

Under a mesh the loop runs on each device's rows (`shard_map`): the classifier
enters whole (under FSDP that is the parameter gather FSDP does anyway) and its gradient leaves as a
sum over devices, so no row ever crosses a device. The callers (model/synergen_vl.py, model/folding.py)
wrap it in `parallel.sharding.per_batch_shard`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

DEFAULT_CHUNK_ROWS = 2048
DEFAULT_VOCAB_TILE = 8192


def linear_cross_entropy(x, w, targets, *, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                         vocab_tile: int = DEFAULT_VOCAB_TILE):
  """Per-position -log softmax(x @ w)[target] and whether the argmax is the target.

  x: [N, D] (compute dtype); w: [D, V] (cast to x's dtype); targets: [N] ints in [0, V).
  Returns (nll [N] float32, hit [N] float32). Differentiable in x and w; `hit` has no gradient.
  Ties in the argmax go to the lowest index, as jnp.argmax.
  """
  n, v = x.shape[0], w.shape[1]
  rows = max(1, min(chunk_rows, n))
  tile = max(1, min(vocab_tile, v))
  pad_n, pad_v = -n % rows, -v % tile
  xp = jnp.pad(x, ((0, pad_n), (0, 0)))
  tp = jnp.pad(targets.astype(jnp.int32), (0, pad_n))
  wp = jnp.pad(w.astype(x.dtype), ((0, 0), (0, pad_v)))
  nll, hit = _xent(xp, wp, tp, v, rows, tile)
  return nll[:n], hit[:n]


# ---------------------------------------------------------------------------------------------------
# The blocked loops (N a multiple of rows, V_padded a multiple of tile; columns >= v are padding).
# ---------------------------------------------------------------------------------------------------

def _block_logits(xc, w, j, tile, v):
  """float32 logits of rows xc against vocabulary tile j, padding columns at -inf."""
  wt = jax.lax.dynamic_slice_in_dim(w, j * tile, tile, axis=1)
  logits = jnp.dot(xc, wt, preferred_element_type=jnp.float32)
  cols = j * tile + jnp.arange(tile)
  return jnp.where(cols[None, :] < v, logits, -jnp.inf), cols


def _forward_chunk(xc, tc, w, v, tile):
  """One chunk of rows over every tile: (log-sum-exp, target logit, argmax), float32 / int32."""
  rows = xc.shape[0]

  def step(carry, j):
    m, s, target_logit, best, arg = carry
    logits, cols = _block_logits(xc, w, j, tile, v)
    tile_max = logits.max(-1)
    new_m = jnp.maximum(m, tile_max)
    s = s * jnp.exp(m - new_m) + jnp.exp(logits - new_m[:, None]).sum(-1)
    in_tile = (tc >= j * tile) & (tc < (j + 1) * tile)
    picked = jnp.take_along_axis(logits, jnp.clip(tc - j * tile, 0, tile - 1)[:, None], axis=1)[:, 0]
    target_logit = jnp.where(in_tile, picked, target_logit)
    better = tile_max > best          # strict: an equal maximum in a later tile keeps the first
    arg = jnp.where(better, j * tile + logits.argmax(-1).astype(jnp.int32), arg)
    best = jnp.where(better, tile_max, best)
    return (new_m, s, target_logit, best, arg), None

  neg = jnp.full((rows,), -jnp.inf, jnp.float32)
  init = (neg, jnp.zeros((rows,), jnp.float32), jnp.zeros((rows,), jnp.float32), neg,
          jnp.zeros((rows,), jnp.int32))
  (m, s, target_logit, _, arg), _ = jax.lax.scan(step, init, jnp.arange(w.shape[1] // tile))
  return m + jnp.log(s), target_logit, arg


def _chunks(a, rows):
  return a.reshape((a.shape[0] // rows, rows) + a.shape[1:])


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _xent(x, w, targets, v, rows, tile):
  return _xent_fwd(x, w, targets, v, rows, tile)[0]


def _xent_fwd(x, w, targets, v, rows, tile):
  lse, target_logit, arg = jax.lax.map(lambda a: _forward_chunk(a[0], a[1], w, v, tile),
                                       (_chunks(x, rows), _chunks(targets, rows)))
  lse, target_logit, arg = lse.reshape(-1), target_logit.reshape(-1), arg.reshape(-1)
  nll = lse - target_logit
  hit = (arg == targets).astype(jnp.float32)
  return (nll, hit), (x, w, targets, lse)


def _xent_bwd(v, rows, tile, residuals, cotangents):
  x, w, targets, lse = residuals
  g = cotangents[0].astype(jnp.float32)                   # d loss / d nll; hit has no gradient
  num_tiles = w.shape[1] // tile

  def chunk(dw, inputs):
    xc, tc, lc, gc = inputs

    def tile_step(carry, j):
      dx, dw = carry
      logits, cols = _block_logits(xc, w, j, tile, v)
      d_logits = jnp.exp(logits - lc[:, None]) - (cols[None, :] == tc[:, None])
      d_logits = (d_logits * gc[:, None]).astype(xc.dtype)
      wt = jax.lax.dynamic_slice_in_dim(w, j * tile, tile, axis=1)
      dx = dx + jnp.dot(d_logits, wt.T, preferred_element_type=jnp.float32)
      dw_tile = jax.lax.dynamic_slice_in_dim(dw, j * tile, tile, axis=1)
      dw_tile = dw_tile + jnp.dot(xc.T, d_logits, preferred_element_type=jnp.float32)
      return (dx, jax.lax.dynamic_update_slice_in_dim(dw, dw_tile, j * tile, axis=1)), None

    dx0 = jnp.zeros(xc.shape, jnp.float32)
    (dx, dw), _ = jax.lax.scan(tile_step, (dx0, dw), jnp.arange(num_tiles))
    return dw, dx

  dw0 = jnp.zeros(w.shape, jnp.float32)
  dw, dx = jax.lax.scan(chunk, dw0, (_chunks(x, rows), _chunks(targets, rows), _chunks(lse, rows),
                                      _chunks(g, rows)))
  dx = dx.reshape(x.shape).astype(x.dtype)
  return dx, dw.astype(w.dtype), None


_xent.defvjp(_xent_fwd, _xent_bwd)
