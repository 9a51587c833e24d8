"""What the flash kernels share: the custom_vjp (forward saves q, k, v, segment ids, o and the
logsumexp; the backward pass gets them back; each kernel module supplies its own `forward` and
`backward`) and the check that they are given self-attention."""

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


def check_self_attention(impl: str, q, k) -> None:
  """The flash kernels attend a sequence to itself (training, scoring, prefill of whole rows)."""
  if k.shape[1] != q.shape[1]:
    raise ValueError(f"{impl} attention needs q_len == kv_len (got {q.shape[1]} and {k.shape[1]}); "
                     "KV-cache decoding uses kernels.attention.decode_attention")
