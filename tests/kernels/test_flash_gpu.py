"""The Pallas GPU flash-attention kernels in interpret mode against the XLA reference: forward and
gradients of q, k, v over random shapes, GQA ratios, causal masks, packed segments, f32 and bf16."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from synergen_jax.kernels.attention import attention, xla_attention

CASES = [  # (length, heads, kv_heads, head_dim, causal, packed, block_q, block_k)
    (96, 4, 4, 64, True, True, 32, 32),       # length not a power of two
    (64, 4, 2, 64, False, True, 32, 16),      # GQA 2, unequal blocks
    (64, 4, 1, 128, True, False, 16, 32),     # GQA 4, head_dim 128
    (48, 2, 2, 64, False, False, 16, 16),
]


def _inputs(seed, length, heads, kv_heads, head_dim, packed, dtype):
  rng = np.random.default_rng(seed)
  q = rng.normal(size=(2, length, heads, head_dim))
  k = rng.normal(size=(2, length, kv_heads, head_dim))
  v = rng.normal(size=(2, length, kv_heads, head_dim))
  seg = None
  if packed:   # random packed layouts: 1-3 examples then padding (id 0)
    seg = np.zeros((2, length), np.int32)
    for row in range(2):
      cuts = np.sort(rng.choice(np.arange(1, length), 3, replace=False))
      for s, (a, b) in enumerate(zip([0, *cuts[:-1]], cuts), start=1):
        seg[row, a:b] = s
    seg = jnp.asarray(seg)
  cast = lambda x: jnp.asarray(x, dtype)
  return cast(q), cast(k), cast(v), seg


@pytest.mark.parametrize("dtype,tol", [(jnp.float32, 2e-5), (jnp.bfloat16, 3e-2)])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "T{}_h{}_kv{}_d{}_causal{}_packed{}".format(*c[:6]))
def test_forward_and_gradients_match_the_reference(case, dtype, tol):
  length, heads, kv_heads, head_dim, causal, packed, bq, bk = case
  q, k, v, seg = _inputs(length + heads, length, heads, kv_heads, head_dim, packed, dtype)
  from synergen_jax.kernels.flash_gpu import flash_attention
  flash = lambda q, k, v: flash_attention(q, k, v, segment_ids=seg, causal=causal, block_q=bq,
                                          block_k=bk, interpret=True)
  ref = lambda q, k, v: xla_attention(q, k, v, segment_ids=seg, causal=causal)
  # The reference in float32 from the same (possibly bf16-rounded) inputs.
  f32 = lambda x: x.astype(jnp.float32)
  want = ref(f32(q), f32(k), f32(v))
  got = jax.jit(flash)(q, k, v)
  assert got.dtype == dtype
  scale = float(jnp.max(jnp.abs(want)))
  np.testing.assert_allclose(f32(got), want, atol=tol * scale, rtol=tol)
  cot = jnp.asarray(np.random.default_rng(1).normal(size=q.shape), jnp.float32)
  loss = lambda fn, cast: lambda q, k, v: jnp.sum(f32(fn(cast(q), cast(k), cast(v))) * cot)
  grads = jax.jit(jax.grad(loss(flash, lambda x: x.astype(dtype)), argnums=(0, 1, 2)))(
      f32(q), f32(k), f32(v))
  want_grads = jax.grad(loss(ref, f32), argnums=(0, 1, 2))(f32(q), f32(k), f32(v))
  for name, g, w in zip("qkv", grads, want_grads):
    np.testing.assert_allclose(g, w, atol=tol * float(jnp.max(jnp.abs(w))) * 2, rtol=tol * 2,
                               err_msg=f"d{name}")


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
