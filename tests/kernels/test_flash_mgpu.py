"""The Pallas Mosaic GPU (Hopper) flash-attention kernels: forward and gradients of q, k, v against the
XLA reference in Pallas' Mosaic GPU interpret mode (with its race detector: every TMA tile must be
awaited before it is read and not overwritten while in use), lowering of the real wgmma/TMA kernels
for CUDA on this CPU host (Mosaic GPU's layout and tiling checks run at lowering), and the errors for
shapes the kernels cannot take."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import attention_inputs, check_flash_against_reference
from synergen_jax.kernels.attention import attention, xla_attention
from synergen_jax.kernels.flash_mgpu import flash_attention

CASES = [  # (length, heads, kv_heads, head_dim, causal, packed, block_q, block_k, dtype)
    (192, 4, 4, 64, True, True, 64, 64, jnp.bfloat16),      # length not a power of two
    (128, 4, 2, 128, False, True, 64, 64, jnp.float16),     # GQA 2, head_dim 128, f16
    (256, 4, 1, 64, True, False, 64, 128, jnp.bfloat16),    # GQA 4, the forward's 128-key blocks
    (256, 2, 2, 64, True, True, 64, 128, jnp.float16),
    (128, 2, 1, 128, False, False, 64, 128, jnp.bfloat16),  # one key block per row
]
TOL = {jnp.bfloat16: 3e-2, jnp.float16: 1e-2}


@pytest.mark.parametrize(
    "case", CASES,
    ids=lambda c: "T{}_h{}_kv{}_d{}_causal{}_packed{}_b{}x{}_{}".format(*c[:8], jnp.dtype(c[8]).name))
def test_forward_and_gradients_match_the_reference_without_races(case, capfd):
  length, heads, kv_heads, head_dim, causal, packed, bq, bk, dtype = case
  q, k, v, seg = attention_inputs(length + heads, 2, length, heads, kv_heads, head_dim, packed, dtype)
  flash = lambda q, k, v: flash_attention(q, k, v, segment_ids=seg, causal=causal, block_q=bq,
                                          block_k=bk, interpret=True)
  check_flash_against_reference(flash, q, k, v, seg, causal, dtype, TOL[dtype])
  assert "RACE DETECTED" not in capfd.readouterr().out


def test_entry_point_runs_the_mosaic_gpu_kernel_in_interpret_mode():
  q, k, v, seg = attention_inputs(0, 1, 128, 4, 2, 64, True, jnp.bfloat16)
  got = attention(q, k, v, segment_ids=seg, impl="pallas_mgpu", interpret=True)
  f32 = lambda x: x.astype(jnp.float32)
  want = xla_attention(f32(q), f32(k), f32(v), segment_ids=seg)
  np.testing.assert_allclose(f32(got), want, atol=3e-2)


LOWER_CASES = [  # (length, heads, kv_heads, head_dim, causal, packed, block_q, block_k, dtype)
    (256, 8, 2, 128, True, True, 64, 64, jnp.bfloat16),
    (512, 4, 4, 64, False, False, 64, 128, jnp.float16),
    (1024, 4, 1, 128, True, True, 64, 128, jnp.bfloat16),
]


@pytest.mark.parametrize("case", LOWER_CASES, ids=lambda c: "T{}_d{}_b{}x{}".format(c[0], c[3], *c[6:8]))
def test_wgmma_kernels_lower_for_cuda(case):
  """Forward, dK/dV and dQ kernels go through Mosaic GPU's lowering for a CUDA target: wgmma shapes,
  swizzled TMA tiles and register layouts are checked there (a wrong layout cast or a 32-row block
  fails this test), though nothing runs."""
  length, heads, kv_heads, head_dim, causal, packed, bq, bk, dtype = case
  q, k, v, seg = attention_inputs(0, 2, length, heads, kv_heads, head_dim, packed, dtype)
  loss = lambda q, k, v: flash_attention(q, k, v, segment_ids=seg, causal=causal, block_q=bq,
                                         block_k=bk).astype(jnp.float32).sum()
  lowered = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2))).trace(q, k, v).lower(
      lowering_platforms=("cuda",))
  assert re.findall(r"custom_call @(\w+)", lowered.as_text()) == ["mosaic_gpu_v2"] * 3


def test_kernels_run_per_shard_under_a_mesh():
  """Under a (data, fsdp, tensor) = (2, 2, 2) mesh every Mosaic GPU kernel in the lowered forward and
  backward takes one device's shard (rows over data x fsdp, heads over tensor), not the global
  arrays: XLA cannot partition a custom kernel. (The Mosaic GPU interpreter deadlocks inside a
  shard_map over fake CPU devices, so the numerics of the shared per-shard wrapper are checked with
  the Triton kernel in test_flash_tpu.py.)"""
  import flax.linen as nn
  from synergen_jax.parallel.sharding import LOGICAL_RULES
  q = jax.ShapeDtypeStruct((4, 256, 8, 64), jnp.bfloat16)
  kv = jax.ShapeDtypeStruct((4, 256, 4, 64), jnp.bfloat16)
  seg = jax.ShapeDtypeStruct((4, 256), jnp.int32)
  mesh = jax.make_mesh((2, 2, 2), ("data", "fsdp", "tensor"),
                       axis_types=(jax.sharding.AxisType.Auto,) * 3)
  loss = lambda q, k, v, s: attention(q, k, v, segment_ids=s, impl="pallas_mgpu").astype(
      jnp.float32).sum()
  with jax.set_mesh(mesh), nn.logical_axis_rules(LOGICAL_RULES):
    text = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2))).trace(q, kv, kv, seg).lower(
        lowering_platforms=("cuda",)).as_text()
  calls = [line for line in text.splitlines() if "custom_call @mosaic_gpu_v2" in line]
  assert len(calls) == 3
  signatures = [re.findall(r":\s*\(([^()]*)\)\s*->", line)[-1] for line in calls]
  operands = [re.findall(r"tensor<([\dx]+)x(?:bf16|f32|i32)>", sig) for sig in signatures]
  assert all(shapes and all(s.startswith("1x") for s in shapes) for shapes in operands), operands
  assert "1x256x4x64" in operands[0] and "1x256x2x64" in operands[0]   # 8 / 2 query, 4 / 2 kv heads


def test_shapes_the_kernel_cannot_take_are_named():
  q, k, v, _ = attention_inputs(0, 1, 192, 2, 2, 64, False, jnp.bfloat16)
  with pytest.raises(ValueError, match="bfloat16 or float16"):
    flash_attention(q.astype(jnp.float32), k, v, interpret=True)
  with pytest.raises(ValueError, match=r"head_dim in \(64, 128\)"):
    flash_attention(q[..., :32], k[..., :32], v[..., :32], interpret=True)
  with pytest.raises(ValueError, match="block_q=64 .* got block_q=128"):
    flash_attention(q, k, v, block_q=128, block_k=64, interpret=True)
  with pytest.raises(ValueError, match=r"block_k in \(64, 128\)"):
    flash_attention(q, k, v, block_k=192, interpret=True)
  with pytest.raises(ValueError, match="multiple of block_q=64 and block_k=128"):
    flash_attention(q, k, v, interpret=True)         # 192 rows, default 128-key blocks
  with pytest.raises(ValueError, match="q_len == kv_len"):
    flash_attention(q[:, :64], k, v, interpret=True)
  # The entry point hands the configured block sizes to the kernel.
  with pytest.raises(ValueError, match="got block_q=128, block_k=64"):
    attention(q, k, v, impl="pallas_mgpu", interpret=True, block_q=128, block_k=64)
