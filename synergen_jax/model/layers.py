"""Small building blocks shared by the LLM and the unfold head: init helpers, RMSNorm, RoPE.

Every parameter is created through `partitioned(init, names)` so it carries logical axis names; the
rules that map names to mesh axes live in one table, `synergen_jax/parallel/sharding.py`.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from synergen_jax.parallel.sharding import per_batch_shard

# Llama/InternLM2 initialise every linear and embedding with N(0, 0.02); keeping it means a random
# model's logits are near zero and its loss starts at ~log(vocab).
INIT_STDDEV = 0.02


def dtype_of(name: str) -> jnp.dtype:
  return jnp.dtype(name)


def partitioned(init, names: Sequence[str | None]):
  return nn.with_logical_partitioning(init, tuple(names))


def normal_init(names: Sequence[str | None], stddev: float = INIT_STDDEV):
  return partitioned(nn.initializers.normal(stddev), names)


def zeros_init(names: Sequence[str | None]):
  return partitioned(nn.initializers.zeros_init(), names)


def lookup(tables, ids, names) -> jax.Array:
  """sum_i tables[i][ids[i]] on each device's rows with the tables all-gathered (FSDP's parameter
  gather; `names`: each table's logical axes): XLA would otherwise look up every device's ids in
  its slice of a table and trade the results across devices (an all-to-all of activations)."""
  def run(*args):
    return sum(jnp.take(t, i, axis=0) for i, t in zip(args[:len(ids)], args[len(ids):]))
  return per_batch_shard(run, tuple(ids), tuple(tables), tuple(names))


def constrain(x: jax.Array, names: Sequence[str | None]) -> jax.Array:
  """Logical sharding constraint on an activation (a no-op outside a mesh with rules)."""
  return nn.with_logical_constraint(x, tuple(names))


class Classifier(nn.Module):
  """Bias-free [features, classes] projection (nn.Dense's parameter layout: `kernel`), whose kernel
  the chunked loss (model/chunked_xent.py) reads directly instead of calling it on every position."""
  features: int
  classes: int
  names: tuple[str, str]
  dtype: str = "float32"
  param_dtype: str = "float32"

  def setup(self):
    self.kernel = self.param("kernel", normal_init(self.names), (self.features, self.classes),
                             dtype_of(self.param_dtype))

  def __call__(self, x: jax.Array) -> jax.Array:
    cdt = dtype_of(self.dtype)
    return jnp.dot(x.astype(cdt), self.kernel.astype(cdt))


class RMSNorm(nn.Module):
  """RMSNorm computed in float32 (as InternLM2/Llama do), cast back to the compute dtype."""
  eps: float
  dtype: str = "float32"
  param_dtype: str = "float32"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    scale = self.param("scale", partitioned(nn.initializers.ones_init(), ("embed",)),
                       (x.shape[-1],), dtype_of(self.param_dtype))
    x32 = x.astype(jnp.float32)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.eps)
    return (x32.astype(dtype_of(self.dtype)) * scale.astype(dtype_of(self.dtype)))


def apply_rope(x: jax.Array, positions: jax.Array, theta: float) -> jax.Array:
  """Rotary embedding, HF "rotate_half" convention (first half / second half of head_dim).

  x: [batch, length, heads, head_dim]; positions: [batch, length] (restart at 0 per packed example).
  The HF convention is kept so imported Llama/Qwen2/InternLM2 weights work without permuting q/k.
  """
  head_dim = x.shape[-1]
  inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
  angles = positions.astype(jnp.float32)[..., None] * inv_freq            # [B, T, D/2]
  cos = jnp.cos(angles)[:, :, None, :]
  sin = jnp.sin(angles)[:, :, None, :]
  x32 = x.astype(jnp.float32)
  x1, x2 = jnp.split(x32, 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)
