"""The checks every Pallas flash-attention kernel (pallas_gpu: Triton, pallas_mgpu: Mosaic GPU,
pallas_tpu: Mosaic TPU) goes through, written once over kernel_cases.KERNELS (ids start with the
impl): forward and gradients of q, k, v in interpret mode against the XLA reference (lengths, GQA
ratios, head dims, block sizes, causal masks, packed segments, dtypes), the entry point running the
kernel in interpret mode, the shapes a kernel cannot take named in its error, and its per-shard path
under a mesh. The Mosaic GPU interpreter's cases run in the child process of test_flash_mgpu.py."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import attention_inputs, check_flash_against_reference
from kernel_cases import params
from synergen_jax.kernels.attention import attention, xla_attention

f32 = lambda x: x.astype(jnp.float32)


@pytest.mark.parametrize("kernel,case", params(lambda kernel: [(c.id, c) for c in kernel.cases]))
def test_forward_and_gradients_match_the_reference(kernel, case, capfd):
  """The interpreters' race detectors (Mosaic GPU's is on) report nothing either."""
  q, k, v, seg = attention_inputs(case.length + case.heads, kernel.batch, case.length, case.heads,
                                  case.kv_heads, case.head_dim, case.packed, case.dtype)
  flash_attention = kernel.flash_attention()
  flash = lambda q, k, v: flash_attention(q, k, v, segment_ids=seg, causal=case.causal,
                                          block_q=case.block_q, block_k=case.block_k,
                                          interpret=True)
  check_flash_against_reference(flash, q, k, v, seg, case.causal, case.dtype, case.tol)
  assert "RACE DETECTED" not in capfd.readouterr().out


@pytest.mark.parametrize("kernel", params())
def test_entry_point_runs_the_kernel_in_interpret_mode(kernel):
  q, k, v, seg = attention_inputs(0, *kernel.entry.inputs)
  got = attention(q, k, v, segment_ids=seg, impl=kernel.impl, interpret=True)
  assert got.dtype == q.dtype
  want = xla_attention(f32(q), f32(k), f32(v), segment_ids=seg)
  np.testing.assert_allclose(f32(got), want, atol=kernel.entry.atol)


@pytest.mark.parametrize("kernel,reject",
                         params(lambda kernel: [(r.id, r) for r in kernel.rejects], interprets=False))
def test_shapes_the_kernel_cannot_take_are_named(kernel, reject):
  """The ValueError says which kernel refuses and why (raised before anything is interpreted)."""
  batch, length, heads, kv_heads, head_dim, dtype = reject.inputs
  q, k, v, _ = attention_inputs(0, batch, length, heads, kv_heads, head_dim, False, dtype)
  if reject.q_len is not None:
    q = q[:, :reject.q_len]
  if reject.head_dim is not None:
    q, k, v = (x[..., :reject.head_dim] for x in (q, k, v))
  if reject.q_dtype is not None:
    q = q.astype(reject.q_dtype)
  call = (lambda *a, **kw: attention(*a, impl=kernel.impl, **kw)) if reject.entry else (
      kernel.flash_attention())
  with pytest.raises(ValueError, match=reject.match) as error:
    call(q, k, v, **reject.kwargs)
  assert str(error.value).startswith(f"{kernel.impl} attention"), error.value


@pytest.mark.parametrize("kernel", params(where=lambda kernel: kernel.interprets_under_a_mesh))
def test_kernels_run_per_shard_under_a_mesh(kernel):
  """Under a (data, fsdp, tensor) = (2, 2, 2) mesh the entry point runs the kernel per shard
  (shard_map: rows over data x fsdp, heads over tensor); output and gradients equal the reference.

  All Pallas kernels go through the same `_per_shard`. Pallas' TPU and Mosaic GPU interpreters
  deadlock inside a shard_map over fake CPU devices, so for pallas_tpu and pallas_mgpu the per-shard
  path is checked by lowering (the next test) and, for pallas_tpu, by compiling the whole tiny train
  step for a v5p slice (tests/test_aot.py)."""
  import flax.linen as nn
  from synergen_jax.parallel.sharding import LOGICAL_RULES
  rng = np.random.default_rng(5)
  q, k, v = (jnp.asarray(rng.normal(size=(4, 128, h, 64)), jnp.float32) for h in (4, 2, 2))
  seg = jnp.asarray(np.repeat(np.arange(1, 5), 32)[None].repeat(4, 0), jnp.int32)
  mesh = jax.make_mesh((2, 2, 2), ("data", "fsdp", "tensor"),
                       axis_types=(jax.sharding.AxisType.Auto,) * 3)   # as parallel/mesh.py
  loss = lambda fn: lambda q, k, v: jnp.sum(fn(q, k, v) * jnp.arange(64.0))
  flash = lambda q, k, v: attention(q, k, v, segment_ids=seg, impl=kernel.impl, interpret=True)
  with jax.set_mesh(mesh), nn.logical_axis_rules(LOGICAL_RULES):
    out = jax.jit(flash)(q, k, v)
    grads = jax.jit(jax.grad(loss(flash), argnums=(0, 1, 2)))(q, k, v)
  ref = lambda q, k, v: xla_attention(q, k, v, segment_ids=seg)
  np.testing.assert_allclose(out, ref(q, k, v), atol=2e-5)
  for g, w in zip(grads, jax.grad(loss(ref), argnums=(0, 1, 2))(q, k, v)):
    np.testing.assert_allclose(g, w, atol=2e-4 * float(jnp.max(jnp.abs(w))))


@pytest.mark.parametrize("kernel", params(interprets=False))
def test_lowered_kernels_take_one_shard_under_a_mesh(kernel):
  """Under a (data, fsdp, tensor) = (2, 2, 2) mesh every kernel in the forward and backward lowered
  for the kernel's compiler (CUDA: Triton, Mosaic GPU; TPU: Mosaic) takes one device's shard (rows
  over data x fsdp, heads over tensor), not the global arrays: XLA cannot partition a custom kernel.
  Nothing runs, so this covers the kernels whose interpreter cannot run under a mesh."""
  import flax.linen as nn
  from synergen_jax.parallel.sharding import LOGICAL_RULES
  lowering = kernel.mesh
  q = jax.ShapeDtypeStruct((4, 256, 8, 64), jnp.bfloat16)
  kv = jax.ShapeDtypeStruct((4, 256, 4, 64), jnp.bfloat16)
  seg = jax.ShapeDtypeStruct((4, 256), jnp.int32)
  mesh = jax.make_mesh((2, 2, 2), ("data", "fsdp", "tensor"),
                       axis_types=(jax.sharding.AxisType.Auto,) * 3)
  loss = lambda q, k, v, s: attention(q, k, v, segment_ids=s, impl=kernel.impl).astype(
      jnp.float32).sum()
  with jax.set_mesh(mesh), nn.logical_axis_rules(LOGICAL_RULES):
    text = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2))).trace(q, kv, kv, seg).lower(
        lowering_platforms=(lowering.platform,)).as_text()
  calls = [line for line in text.splitlines() if f"custom_call @{lowering.custom_call}" in line]
  assert len(calls) == 3
  signatures = [re.findall(r":\s*\(([^()]*)\)\s*->", line)[-1] for line in calls]
  operands = [re.findall(r"tensor<([\dx]+)x(?:bf16|f32|i32)>", sig) for sig in signatures]
  batched = [[s for s in shapes if s not in lowering.unbatched] for shapes in operands]
  assert all(shapes and all(s.startswith("1x") for s in shapes) for shapes in batched), operands
  assert lowering.q_shard in operands[0] and lowering.kv_shard in operands[0], operands[0]
