"""The Pallas TPU flash-attention kernels in Pallas' TPU interpret mode against the XLA reference
(forward and gradients of q, k, v over lengths, GQA ratios, head dims, causal masks, packed segments,
f32 and bf16), and their ahead-of-time compilation for a TPU chip when libtpu is installed."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import attention_inputs, check_flash_against_reference
from synergen_jax.kernels.attention import attention, xla_attention
from synergen_jax.kernels.flash_tpu import flash_attention

CASES = [  # (length, heads, kv_heads, head_dim, causal, packed, block_q, block_k)
    (384, 4, 4, 64, True, True, 128, 128),      # length not a power of two
    (256, 4, 2, 128, False, True, 64, 128),     # GQA 2, head_dim 128, unequal blocks
    (256, 4, 1, 64, True, False, 128, 128),     # GQA 4
    (256, 6, 2, 64, True, True, 256, 128),      # GQA 3 (not a power of two), q block over 2 k blocks
    (17, 4, 2, 8, True, True, 17, 17),          # whole-length blocks (the unfold head's short rows)
]


def _inputs(seed, length, heads, kv_heads, head_dim, packed, dtype):
  return attention_inputs(seed, 1, length, heads, kv_heads, head_dim, packed, dtype)


@pytest.mark.parametrize("dtype,tol", [(jnp.float32, 2e-5), (jnp.bfloat16, 3e-2)])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "T{}_h{}_kv{}_d{}_causal{}_packed{}".format(*c[:6]))
def test_forward_and_gradients_match_the_reference(case, dtype, tol):
  length, heads, kv_heads, head_dim, causal, packed, bq, bk = case
  q, k, v, seg = _inputs(length + heads, length, heads, kv_heads, head_dim, packed, dtype)
  flash = lambda q, k, v: flash_attention(q, k, v, segment_ids=seg, causal=causal, block_q=bq,
                                          block_k=bk, interpret=True)
  check_flash_against_reference(flash, q, k, v, seg, causal, dtype, tol)


def test_entry_point_runs_the_pallas_tpu_kernel_in_interpret_mode():
  q, k, v, seg = _inputs(0, 128, 4, 2, 64, True, jnp.float32)
  got = attention(q, k, v, segment_ids=seg, impl="pallas_tpu", interpret=True)
  np.testing.assert_allclose(got, xla_attention(q, k, v, segment_ids=seg), atol=2e-5)


def test_shapes_the_kernel_cannot_take_are_named():
  q, k, v, _ = _inputs(0, 192, 2, 2, 64, False, jnp.float32)
  with pytest.raises(ValueError, match="length 192 must be a multiple of block_q=128"):
    flash_attention(q, k, v, interpret=True)
  with pytest.raises(ValueError, match="block_k a multiple of 128"):
    flash_attention(q, k, v, block_q=64, block_k=64, interpret=True)
  with pytest.raises(ValueError, match="q_len == kv_len"):
    flash_attention(q[:, :64], k, v, interpret=True)
  q, k, v, _ = _inputs(0, 256, 2, 2, 64, False, jnp.bfloat16)
  with pytest.raises(ValueError, match=r"block_q of 16 unless .* \(Mosaic tiles bfloat16 as \(16, 128\)\)"):
    flash_attention(q, k, v, block_q=8, interpret=True)
  with pytest.raises(ValueError, match="block_k=64"):   # the entry point passes config block sizes
    attention(q, k, v, impl="pallas_tpu", interpret=True, block_q=128, block_k=64)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_compiles_for_a_tpu_chip_ahead_of_time(dtype):
  """Mosaic lowering and the TPU compiler accept the kernels (forward and backward, packed rows,
  GQA 7: a non-power-of-two group) for a v5e chip described by libtpu on this CPU host."""
  pytest.importorskip("libtpu", reason="needs the tpu extra: pip install -e '.[tpu]'")
  from jax.experimental import topologies
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  device = topologies.get_topology_desc("v5e:2x2", "tpu").devices[0]
  on_chip = jax.sharding.SingleDeviceSharding(device)
  shape = lambda *s, dt=dtype: jax.ShapeDtypeStruct(s, dt, sharding=on_chip)

  def loss(q, k, v, seg):
    return flash_attention(q, k, v, segment_ids=seg, causal=True).astype(jnp.float32).sum()

  compiled = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2))).lower(
      shape(1, 512, 14, 128), shape(1, 512, 2, 128), shape(1, 512, 2, 128),
      shape(1, 512, dt=jnp.int32)).compile()
  assert "tpu_custom_call" in compiled.as_text()       # the Mosaic kernels, not a fallback


@pytest.mark.parametrize("impl", ["pallas_gpu"])
def test_kernels_run_per_shard_under_a_mesh(impl):
  """Under a (data, fsdp, tensor) = (2, 2, 2) mesh the entry point runs the kernel per shard
  (shard_map: rows over data x fsdp, heads over tensor); output and gradients equal the reference.

  Both Pallas kernels go through the same `_per_shard`. Pallas' TPU interpreter deadlocks inside a
  shard_map over fake CPU devices, so for pallas_tpu the per-shard path is checked by compiling the
  whole tiny train step for a v5p slice (tests/test_aot.py) instead."""
  import flax.linen as nn
  from synergen_jax.parallel.sharding import LOGICAL_RULES
  rng = np.random.default_rng(5)
  q, k, v = (jnp.asarray(rng.normal(size=(4, 128, h, 64)), jnp.float32) for h in (4, 2, 2))
  seg = jnp.asarray(np.repeat(np.arange(1, 5), 32)[None].repeat(4, 0), jnp.int32)
  mesh = jax.make_mesh((2, 2, 2), ("data", "fsdp", "tensor"),
                       axis_types=(jax.sharding.AxisType.Auto,) * 3)   # as parallel/mesh.py
  loss = lambda fn: lambda q, k, v: jnp.sum(fn(q, k, v) * jnp.arange(64.0))
  flash = lambda q, k, v: attention(q, k, v, segment_ids=seg, impl=impl, interpret=True)
  with jax.set_mesh(mesh), nn.logical_axis_rules(LOGICAL_RULES):
    out = jax.jit(flash)(q, k, v)
    grads = jax.jit(jax.grad(loss(flash), argnums=(0, 1, 2)))(q, k, v)
  ref = lambda q, k, v: xla_attention(q, k, v, segment_ids=seg)
  np.testing.assert_allclose(out, ref(q, k, v), atol=2e-5)
  for g, w in zip(grads, jax.grad(loss(ref), argnums=(0, 1, 2))(q, k, v)):
    np.testing.assert_allclose(g, w, atol=2e-4 * float(jnp.max(jnp.abs(w))))
