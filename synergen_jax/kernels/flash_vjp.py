"""The custom_vjp both flash kernels share: forward saves (q, k, v, segment ids, o, logsumexp), the
backward pass gets them back. Each kernel module supplies its own `forward` and `backward`."""

from __future__ import annotations

import functools

import jax


def flash_with_vjp(forward, backward):
  """forward(q, k, v, seg, causal, scale, block_q, block_k, interpret) -> (o, lse);
  backward(q, k, v, seg, o, lse, do, causal, scale, block_q, block_k, interpret) -> (dq, dk, dv).
  Returns flash(q, k, v, seg, causal, scale, block_q, block_k, interpret) -> o, differentiable in
  q, k, v (segment ids get no gradient)."""

  @functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6, 7, 8))
  def flash(q, k, v, seg, causal, scale, block_q, block_k, interpret):
    return forward(q, k, v, seg, causal, scale, block_q, block_k, interpret)[0]

  def flash_fwd(q, k, v, seg, causal, scale, block_q, block_k, interpret):
    o, lse = forward(q, k, v, seg, causal, scale, block_q, block_k, interpret)
    return o, (q, k, v, seg, o, lse)

  def flash_bwd(causal, scale, block_q, block_k, interpret, residuals, do):
    q, k, v, seg, o, lse = residuals
    return (*backward(q, k, v, seg, o, lse, do, causal, scale, block_q, block_k, interpret), None)

  flash.defvjp(flash_fwd, flash_bwd)
  return flash
