"""The Pallas Mosaic GPU flash-attention kernels in Pallas' Mosaic GPU interpret mode: forward and
gradients of q, k, v against the XLA reference, with the interpreter's race detector on (every TMA
tile must be awaited before it is read and not overwritten while in use). These run in a fresh
one-device child process started by test_flash_mgpu.py (see helpers.mgpu_interpret)."""

import jax.numpy as jnp
import numpy as np
import pytest

from helpers import attention_inputs, check_flash_against_reference, mgpu_interpret
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


@mgpu_interpret
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


@mgpu_interpret
def test_entry_point_runs_the_mosaic_gpu_kernel_in_interpret_mode():
  q, k, v, seg = attention_inputs(0, 1, 128, 4, 2, 64, True, jnp.bfloat16)
  got = attention(q, k, v, segment_ids=seg, impl="pallas_mgpu", interpret=True)
  f32 = lambda x: x.astype(jnp.float32)
  want = xla_attention(f32(q), f32(k), f32(v), segment_ids=seg)
  np.testing.assert_allclose(f32(got), want, atol=3e-2)
