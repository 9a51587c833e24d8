"""The Pallas GPU (Triton) flash-attention kernels lowered to Triton IR for CUDA on this CPU host.
Their interpret-mode checks against the XLA reference, entry point, refused shapes and per-shard
path are in test_flash_kernels.py (kernel_cases.KERNELS["pallas_gpu"])."""

import re

import jax
import jax.numpy as jnp
import pytest

from helpers import attention_inputs
from synergen_jax.kernels.flash_gpu import flash_attention


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_kernels_lower_to_triton_for_cuda(dtype):
  """Forward, dK/dV and dQ go through Pallas' Triton lowering for a CUDA target on this CPU host (it
  rejects primitives and block shapes Triton cannot take; compiling the Triton IR needs a GPU)."""
  q, k, v, seg = attention_inputs(0, 2, 512, 8, 2, 128, True, dtype)
  loss = lambda q, k, v: flash_attention(q, k, v, segment_ids=seg, causal=True).astype(
      jnp.float32).sum()
  lowered = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2))).trace(q, k, v).lower(
      lowering_platforms=("cuda",))
  assert re.findall(r"custom_call @([\w$.]+)", lowered.as_text()) == ["__gpu$xla.gpu.triton"] * 3
