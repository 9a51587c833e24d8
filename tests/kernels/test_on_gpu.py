"""The GPU kernels compiled and run on a real GPU against the XLA reference (forward and dq/dk/dv).
Skipped without one; on a GPU host: JAX_PLATFORMS=cuda python -m pytest tests/kernels/test_on_gpu.py
(`pallas_mgpu` needs a Hopper GPU, compute capability 9.0)."""

import jax
import jax.numpy as jnp
import pytest

from helpers import attention_inputs, check_flash_against_reference
from synergen_jax.kernels.attention import attention

pytestmark = pytest.mark.skipif(jax.default_backend() != "gpu", reason="needs a GPU")

CASES = [  # (impl, length, heads, kv_heads, head_dim, causal, packed, dtype, tol)
    ("pallas_gpu", 1024, 8, 2, 128, True, True, jnp.bfloat16, 3e-2),
    ("pallas_gpu", 512, 4, 4, 64, False, False, jnp.float32, 5e-3),   # f32 dots may run as TF32
    ("pallas_mgpu", 1024, 8, 2, 128, True, True, jnp.bfloat16, 3e-2),
    ("pallas_mgpu", 768, 4, 1, 64, False, True, jnp.float16, 1e-2),
]


def _hopper():
  return float(getattr(jax.devices()[0], "compute_capability", "0")) >= 9.0


@pytest.mark.parametrize("case", CASES, ids=lambda c: "{}_T{}_d{}_{}".format(
    c[0], c[1], c[4], jnp.dtype(c[7]).name))
def test_compiled_kernel_matches_the_reference(case):
  impl, length, heads, kv_heads, head_dim, causal, packed, dtype, tol = case
  if impl == "pallas_mgpu" and not _hopper():
    pytest.skip("pallas_mgpu needs a Hopper GPU")
  q, k, v, seg = attention_inputs(length, 2, length, heads, kv_heads, head_dim, packed, dtype)
  flash = lambda q, k, v: attention(q, k, v, segment_ids=seg, causal=causal, impl=impl)
  check_flash_against_reference(flash, q, k, v, seg, causal, dtype, tol)
