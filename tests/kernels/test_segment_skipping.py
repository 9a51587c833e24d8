"""The flash kernels never visit blocks that share no segment with the block they work on.

Skipping is checked by its effect: NaNs placed only where one packed example's queries cannot look
(the other example's values, or its cotangents) reach that example's outputs and gradients if and
only if a kernel visits those blocks, since a masked probability of 0 times NaN is NaN. Without the
skip these tests fail; the values themselves are checked against the XLA reference."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernel_cases import KERNELS
from synergen_jax.kernels.attention import attention, xla_attention

CASES = [  # (impl, dtype, tol, block) of every kernel, with its interpret marks (pallas_mgpu's cases
           # run in the child process of test_flash_mgpu.py)
    pytest.param(kernel.impl, *kernel.segment_skip, marks=kernel.interpret_marks, id=kernel.impl)
    for kernel in KERNELS.values()]


@pytest.mark.parametrize("impl,dtype,tol,block", CASES)
@pytest.mark.parametrize("causal", [False, True])
def test_blocks_of_other_examples_are_skipped(impl, dtype, tol, block, causal):
  length, half = 4 * block, 2 * block
  rng = np.random.default_rng(3)
  q, k, v = (jnp.asarray(rng.normal(size=(1, length, 2, 64)), dtype) for _ in range(3))
  seg = jnp.asarray(np.repeat([1, 2], half)[None], jnp.int32)
  flash = lambda q, k, v: attention(q, k, v, segment_ids=seg, causal=causal, impl=impl,
                                    interpret=True, block_q=block, block_k=block)
  f32 = lambda x: x.astype(jnp.float32)
  ref = lambda q, k, v: xla_attention(f32(q), f32(k), f32(v), segment_ids=seg, causal=causal)
  scale = lambda want: tol * float(jnp.max(jnp.abs(want)))

  cot = jnp.asarray(rng.normal(size=q.shape), jnp.float32)
  loss = lambda fn, cot: lambda q, k, v: jnp.sum(f32(fn(q, k, v)) * cot)
  first, second = slice(0, half), slice(half, length)
  # Both ways round: with causal masking the first example never reaches the second one's blocks
  # anyway, so only the second way round needs the segment skip.
  for poisoned, checked in ((second, first), (first, second)):
    # Forward: one example's values are NaN; the other example never reads them.
    out = jax.jit(flash)(q, k, v.at[:, poisoned].set(jnp.nan))
    want = ref(q, k, v)[:, checked]
    np.testing.assert_allclose(f32(out[:, checked]), want, atol=scale(want), rtol=tol)
    # Backward: one example's cotangents are NaN; the other's dq, dk, dv stay exact.
    grads = jax.jit(jax.grad(loss(flash, cot.at[:, poisoned].set(jnp.nan)), argnums=(0, 1, 2)))(
        q, k, v)
    want_grads = jax.grad(loss(ref, cot.at[:, poisoned].set(0.0)), argnums=(0, 1, 2))(q, k, v)
    for name, g, w in zip("qkv", grads, want_grads):
      w = w[:, checked]
      np.testing.assert_allclose(f32(g[:, checked]), w, atol=2 * scale(w), rtol=2 * tol,
                                 err_msg=f"d{name}")
