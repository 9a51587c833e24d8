"""The Pallas GPU flash-attention kernels in interpret mode against the XLA reference: forward and
gradients of q, k, v over random shapes, GQA ratios, causal masks, packed segments, f32 and bf16."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import attention_inputs, check_flash_against_reference
from synergen_jax.kernels.attention import attention, xla_attention

CASES = [  # (length, heads, kv_heads, head_dim, causal, packed, block_q, block_k)
    (96, 4, 4, 64, True, True, 32, 32),       # length not a power of two
    (64, 4, 2, 64, False, True, 32, 16),      # GQA 2, unequal blocks
    (64, 4, 1, 128, True, False, 16, 32),     # GQA 4, head_dim 128
    (48, 2, 2, 64, False, False, 16, 16),
]


def _inputs(seed, length, heads, kv_heads, head_dim, packed, dtype):
  return attention_inputs(seed, 2, length, heads, kv_heads, head_dim, packed, dtype)


@pytest.mark.parametrize("dtype,tol", [(jnp.float32, 2e-5), (jnp.bfloat16, 3e-2)])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "T{}_h{}_kv{}_d{}_causal{}_packed{}".format(*c[:6]))
def test_forward_and_gradients_match_the_reference(case, dtype, tol):
  length, heads, kv_heads, head_dim, causal, packed, bq, bk = case
  q, k, v, seg = _inputs(length + heads, length, heads, kv_heads, head_dim, packed, dtype)
  from synergen_jax.kernels.flash_gpu import flash_attention
  flash = lambda q, k, v: flash_attention(q, k, v, segment_ids=seg, causal=causal, block_q=bq,
                                          block_k=bk, interpret=True)
  check_flash_against_reference(flash, q, k, v, seg, causal, dtype, tol)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_kernels_lower_to_triton_for_cuda(dtype):
  """Forward, dK/dV and dQ go through Pallas' Triton lowering for a CUDA target on this CPU host (it
  rejects primitives and block shapes Triton cannot take; compiling the Triton IR needs a GPU)."""
  q, k, v, seg = _inputs(0, 512, 8, 2, 128, True, dtype)
  loss = lambda q, k, v: flash_attention(q, k, v, segment_ids=seg, causal=True).astype(
      jnp.float32).sum()
  from synergen_jax.kernels.flash_gpu import flash_attention
  lowered = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2))).trace(q, k, v).lower(
      lowering_platforms=("cuda",))
  assert re.findall(r"custom_call @([\w$.]+)", lowered.as_text()) == ["__gpu$xla.gpu.triton"] * 3


def test_entry_point_runs_the_pallas_gpu_kernel_in_interpret_mode():
  q, k, v, seg = _inputs(0, 32, 4, 2, 64, True, jnp.float32)
  got = attention(q, k, v, segment_ids=seg, impl="pallas_gpu", interpret=True)
  np.testing.assert_allclose(got, xla_attention(q, k, v, segment_ids=seg), atol=2e-5)


def test_shapes_the_kernel_cannot_take_are_named():
  from synergen_jax.kernels.flash_gpu import flash_attention
  q, k, v, _ = _inputs(0, 48, 2, 2, 64, False, jnp.float32)
  with pytest.raises(ValueError, match="multiple of block_q=32"):
    flash_attention(q, k, v, block_q=32, interpret=True)
  with pytest.raises(ValueError, match="q_len == kv_len"):
    flash_attention(q[:, :16], k, v, interpret=True)
  with pytest.raises(ValueError, match="head_dim in 16..256"):
    flash_attention(q[..., :48], k[..., :48], v[..., :48])
  # The entry point hands the configured block sizes to the kernel.
  with pytest.raises(ValueError, match="block_k=32"):
    attention(q, k, v, impl="pallas_gpu", interpret=True, block_q=16, block_k=32)
