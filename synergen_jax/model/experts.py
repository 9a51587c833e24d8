"""Modality-routed SwiGLU FFN: the vision experts (MMoE) of SynerGen-VL.

Each layer holds E = 2 FFNs (expert 0 = text, expert 1 = vision), one set of kernels each, stacked
[E, ...] at use; every position is hard-routed by its modality id. The production path groups tokens by modality with a
stable sort and runs `jax.lax.ragged_dot` over the contiguous groups, so each token pays for exactly one
FFN on backends with grouped matmuls (GPU/TPU; XLA:CPU lowers ragged_dot densely). Under a mesh the
sort runs on each device's rows (`per_batch_shard`): a global sort would make XLA gather every
device's tokens. `routed=False`
computes every expert for every token and selects with a mask: the reference the routed path is tested
against. With E = 1 (vision experts off) it is a plain SwiGLU FFN.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from synergen_jax.core.config import StackConfig
from synergen_jax.model.layers import INIT_STDDEV, dtype_of, partitioned
from synergen_jax.parallel.sharding import per_batch_shard


EXPERT_NAMES = ("text", "vision")


def _expert_init(copy_first: bool):
  """N(0, 0.02) per expert, or the text expert's draw reused for the vision expert (a copy).

  Flax hands each parameter its own key; to copy, the first key this init sees (the text expert's,
  created first) is remembered and reused for the later experts of the same kernel.
  """
  first_key = []

  def init(key, shape, dtype):
    if copy_first:
      first_key.append(key)
      key = first_key[0]
    return jax.random.normal(key, shape, dtype) * INIT_STDDEV
  return init


def _swiglu(x, w_gate, w_up, w_down):
  h = jax.nn.silu(x @ w_gate) * (x @ w_up)
  return h @ w_down


class ExpertFFN(nn.Module):
  cfg: StackConfig
  routed: bool = True

  @nn.compact
  def __call__(self, x: jax.Array, modality: jax.Array) -> jax.Array:
    """x: [batch, length, embed]; modality: [batch, length] ints in [0, num_experts)."""
    cfg = self.cfg
    e, d, f = cfg.num_experts, x.shape[-1], cfg.mlp_dim
    pdt, cdt = dtype_of(cfg.param_dtype), dtype_of(cfg.dtype)
    # One kernel per expert (`text_gate`, `vision_gate`, ...), stacked at use: a training stage can then
    # freeze the text expert by parameter path, and it gets no optimizer state.
    kernels = {}
    for kind, shape, axes in (("gate", (d, f), ("embed", "mlp")), ("up", (d, f), ("embed", "mlp")),
                              ("down", (f, d), ("mlp", "embed"))):
      init = _expert_init(cfg.copy_expert_init)
      kernels[kind] = jnp.stack([self.param(f"{name}_{kind}", partitioned(init, axes), shape, pdt)
                                 for name in EXPERT_NAMES[:e]])
    w_gate, w_up, w_down = kernels["gate"], kernels["up"], kernels["down"]
    x = x.astype(cdt)
    w_gate, w_up, w_down = (w.astype(cdt) for w in (w_gate, w_up, w_down))
    if e == 1:
      return _swiglu(x, w_gate[0], w_up[0], w_down[0])
    if self.routed:
      # Per device shard: the sort and the grouped matmuls never see another device's rows, so the
      # FFN's only collectives are FSDP's parameter gathers (and their gradients' reduction).
      return per_batch_shard(routed_ffn, (x, modality), (w_gate, w_up, w_down),
                             (("expert", "embed", "mlp"),) * 2 + (("expert", "mlp", "embed"),))
    return dense_reference_ffn(x, modality, w_gate, w_up, w_down)


def routed_ffn(x, modality, w_gate, w_up, w_down):
  """Sort tokens by expert id, ragged_dot over the contiguous groups, scatter back."""
  batch, length, d = x.shape
  num_experts = w_gate.shape[0]
  flat = x.reshape(batch * length, d)
  expert = jnp.clip(modality.reshape(-1), 0, num_experts - 1).astype(jnp.int32)
  order = jnp.argsort(expert, stable=True)
  group_sizes = jnp.bincount(expert, length=num_experts).astype(jnp.int32)
  xs = flat[order]
  h = (jax.nn.silu(jax.lax.ragged_dot(xs, w_gate, group_sizes))
       * jax.lax.ragged_dot(xs, w_up, group_sizes))
  ys = jax.lax.ragged_dot(h, w_down, group_sizes)
  out = jnp.zeros_like(ys).at[order].set(ys, unique_indices=True)
  return out.reshape(batch, length, d)


def dense_reference_ffn(x, modality, w_gate, w_up, w_down):
  """Every expert on every token, then select by modality (2x FLOPs; the test reference)."""
  expert = jnp.clip(modality, 0, w_gate.shape[0] - 1)
  out = jnp.zeros_like(x)
  for i in range(w_gate.shape[0]):
    y = _swiglu(x, w_gate[i], w_up[i], w_down[i])
    out = jnp.where((expert == i)[..., None], y, out)
  return out
