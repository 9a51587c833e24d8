"""The Pallas TPU (Mosaic) flash-attention kernels compiled ahead of time for a TPU chip when libtpu
is installed. Their checks in Pallas' TPU interpret mode against the XLA reference, entry point,
refused shapes and per-shard lowering are in test_flash_kernels.py (kernel_cases.KERNELS
["pallas_tpu"])."""

import os

import jax
import jax.numpy as jnp
import pytest

from synergen_jax.kernels.flash_tpu import flash_attention


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_compiles_for_a_tpu_chip_ahead_of_time(dtype):
  """Mosaic lowering and the TPU compiler accept the kernels (forward and backward, packed rows,
  GQA 7: a non-power-of-two group) for a v5e chip described by libtpu on this CPU host."""
  pytest.importorskip("libtpu", reason="needs the tpu extra: pip install -e '.[tpu]'")
  from jax.experimental import topologies
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  device = topologies.get_topology_desc("v5e:2x2", "tpu").devices[0]
  on_chip = jax.sharding.SingleDeviceSharding(device)
  shape = lambda *s, dt=dtype: jax.ShapeDtypeStruct(s, dt, sharding=on_chip)

  def loss(q, k, v, seg):
    return flash_attention(q, k, v, segment_ids=seg, causal=True).astype(jnp.float32).sum()

  compiled = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2))).lower(
      shape(1, 512, 14, 128), shape(1, 512, 2, 128), shape(1, 512, 2, 128),
      shape(1, 512, dt=jnp.int32)).compile()
  assert "tpu_custom_call" in compiled.as_text()       # the Mosaic kernels, not a fallback
