"""The XLA reference attention against a per-query numpy loop, GQA, masks, and input errors."""

import jax
import numpy as np
import pytest

from synergen_jax.kernels.attention import attention


def numpy_attention(q, k, v, segment_ids, causal):
  """One query at a time, repeated kv heads, float64."""
  b, t, h, d = q.shape
  rep = h // k.shape[2]
  k, v = np.repeat(k, rep, axis=2), np.repeat(v, rep, axis=2)
  out = np.zeros(q.shape)
  for bi in range(b):
    for hi in range(h):
      for ti in range(t):
        allowed = np.ones(t, bool)
        if causal:
          allowed &= np.arange(t) <= ti
        if segment_ids is not None:
          allowed &= segment_ids[bi] == segment_ids[bi, ti]
        s = k[bi, :, hi] @ q[bi, ti, hi] / np.sqrt(d)
        s = np.where(allowed, s, -np.inf)
        p = np.exp(s - s.max())
        out[bi, ti, hi] = (p / p.sum()) @ v[bi, :, hi]
  return out


@pytest.mark.parametrize("heads,kv_heads", [(4, 4), (4, 2), (4, 1)])
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("packed", [True, False])
def test_matches_numpy_reference(rng, heads, kv_heads, causal, packed):
  q = rng.normal(size=(2, 11, heads, 8)).astype(np.float32)
  k = rng.normal(size=(2, 11, kv_heads, 8)).astype(np.float32)
  v = rng.normal(size=(2, 11, kv_heads, 8)).astype(np.float32)
  seg = np.sort(rng.integers(0, 3, size=(2, 11)), axis=1).astype(np.int32) if packed else None
  out = attention(q, k, v, segment_ids=seg, causal=causal, impl="xla")
  np.testing.assert_allclose(out, numpy_attention(q, k, v, seg, causal), atol=1e-5)


def test_gqa_equals_mha_with_repeated_kv(rng):
  q = rng.normal(size=(2, 9, 8, 16)).astype(np.float32)
  k = rng.normal(size=(2, 9, 2, 16)).astype(np.float32)
  v = rng.normal(size=(2, 9, 2, 16)).astype(np.float32)
  gqa = attention(q, k, v)
  mha = attention(q, np.repeat(k, 4, axis=2), np.repeat(v, 4, axis=2))
  np.testing.assert_allclose(gqa, mha, atol=1e-6)
  # and the gradients agree (the repeated copies' gradients sum back onto the shared head)
  f = lambda q, k, v: (attention(q, k, v) ** 2).sum()
  g_gqa = jax.grad(f, argnums=(0, 1, 2))(q, k, v)
  g_mha = jax.grad(lambda q, k, v: f(q, np.repeat(k, 4, 2) * 0 + jax.numpy.repeat(k, 4, 2),
                                     jax.numpy.repeat(v, 4, 2)), argnums=(0, 1, 2))(q, k, v)
  for a, b in zip(g_gqa, g_mha):
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_kv_cache_queries_are_the_last_positions(rng):
  """q_len < kv_len (decoding): the queries see the full prefix, equal to the last rows of full."""
  q = rng.normal(size=(1, 7, 2, 8)).astype(np.float32)
  k = rng.normal(size=(1, 7, 2, 8)).astype(np.float32)
  v = rng.normal(size=(1, 7, 2, 8)).astype(np.float32)
  full = attention(q, k, v)
  last = attention(q[:, -2:], k, v)
  np.testing.assert_allclose(last, full[:, -2:], atol=1e-6)


def test_bad_inputs_raise(rng):
  q = np.zeros((1, 4, 3, 8), np.float32)
  kv = np.zeros((1, 4, 2, 8), np.float32)
  with pytest.raises(ValueError, match="not a multiple"):
    attention(q, kv, kv)
  with pytest.raises(ValueError, match="unknown"):
    attention(kv, kv, kv, impl="flash")
  long = np.zeros((1, 192, 2, 8), np.float32)
  with pytest.raises(ValueError, match="pallas_tpu attention: length 192 must be a multiple"):
    attention(long, long, long, impl="pallas_tpu", interpret=True)
  with pytest.raises(ValueError, match="segment_ids"):
    attention(kv, kv, kv, segment_ids=np.zeros((1, 3), np.int32))
