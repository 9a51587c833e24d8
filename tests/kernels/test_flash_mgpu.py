"""The Pallas Mosaic GPU (Hopper) flash-attention kernels: the interpret-mode checks (run in a fresh
one-device process), lowering of the real wgmma/TMA kernels for CUDA on this CPU host (Mosaic GPU's
layout and tiling checks run at lowering), and the errors for shapes the kernels cannot take."""

import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

from helpers import ROOT, attention_inputs
from synergen_jax.kernels.attention import attention
from synergen_jax.kernels.flash_mgpu import flash_attention


def test_interpret_mode_checks_pass_in_a_fresh_process():
  """tests/kernels/test_mgpu_interpret.py and the Mosaic GPU case of test_segment_skipping.py, in a
  child process with one CPU device (as JAX's own interpreter tests run; see helpers.mgpu_interpret).
  A hang there fails here at the timeout instead of stalling the suite."""
  env = dict(os.environ, SYNERGEN_MGPU_INTERPRET="1", SYNERGEN_TEST_CPU_DEVICES="1")
  env.pop("XLA_FLAGS", None)                      # the child's conftest sets its device count
  try:
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "mgpu",
         "tests/kernels/test_mgpu_interpret.py", "tests/kernels/test_segment_skipping.py"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  except subprocess.TimeoutExpired as e:
    pytest.fail(f"Mosaic GPU interpret checks hung for 600 s:\n{(e.stdout or b'')[-3000:]}")
  summary = run.stdout.strip().splitlines()[-1] if run.stdout.strip() else ""
  assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
  assert re.search(r"\b8 passed\b", summary) and "skipped" not in summary, summary

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
