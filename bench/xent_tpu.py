"""The chunked cross-entropy against tokamax's Pallas TPU kernel, compiled ahead of time for a TPU chip.

  pip install -e ".[tpu]" tokamax==0.0.12
  python -m bench.xent_tpu [--topology v5p:2x2x1] [--shapes 16384x2048x32768,4096x2048x92544]

For each [positions x hidden x vocabulary] shape, loss + gradients (x and W) of
`model/chunked_xent.linear_cross_entropy` (bf16 inputs, float32 log-sum-exp) and of
`tokamax.linear_softmax_cross_entropy_loss(implementation="mosaic_tpu")`, each compiled by libtpu for
one chip: XLA temporaries and compile time. Nothing runs (no TPU here), so no timings. The paper
config's shapes per device: the unfold head's chunk (4 rows x 248 windows x 16 codes, rounded up to tokamax's 1,024-row blocks) against the
32,768 codes, and the text head's gathered targets against the 92,544-token vocabulary.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from synergen_jax.aot.targets import topology_devices
from synergen_jax.model.chunked_xent import linear_cross_entropy

FLAGS = flags.FLAGS
flags.DEFINE_string("topology", "v5p:2x2x1", "TPU topology; one chip of it compiles each program")
flags.DEFINE_string("shapes", "16384x2048x32768,1024x2048x92544", "NxHxV per device")


def _chunked(x, w, t):
  return jax.value_and_grad(lambda x, w: linear_cross_entropy(x, w, t)[0].sum(), argnums=(0, 1))(x, w)


def _tokamax(x, w, t):
  """tokamax's forward and backward kernels, called directly with the block sizes its heuristic picks
  for v5p (its Op front end asks the default backend, which is this host's CPU; the kernels read the
  TPU generation from the mesh's device, so main() traces under a one-chip mesh)."""
  from tokamax._src.ops.linear_softmax_cross_entropy_loss import pallas_mosaic_tpu_kernel as k
  blocks = dict(b_block_size=1024, h_block_size=512, v_block_size=512)
  loss, lse = k.linear_softmax_cross_entropy_loss_fwd_pallas_mosaic_tpu(x, t, w, reduction="sum",
                                                                        **blocks)
  grads = k.linear_softmax_cross_entropy_loss_bwd_pallas_mosaic_tpu(
      jnp.ones((), jnp.float32), lse, x, t, w, reduction="sum", **blocks)
  return loss, grads


def implementations():
  impls = {"chunked (ours)": _chunked}
  try:
    import tokamax  # noqa: F401
    impls["tokamax mosaic_tpu"] = _tokamax
  except ImportError:
    print("tokamax is not installed: pip install tokamax==0.0.12")
  return impls


def main(argv):
  del argv
  devices, _ = topology_devices(FLAGS.topology)
  mesh = jax.sharding.Mesh(np.asarray(devices[:1]), ("chip",))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  print(f"\n{devices[0].device_kind}, loss + dL/dx + dL/dW, bf16 inputs")
  print("| N x H x V | implementation | XLA temporaries | compile s | note |")
  print("|---|---|---|---|---|")
  for shape in FLAGS.shapes.split(","):
    n, h, v = (int(s) for s in shape.split("x"))
    args = (jax.ShapeDtypeStruct((n, h), jnp.bfloat16, sharding=sharding),
            jax.ShapeDtypeStruct((h, v), jnp.bfloat16, sharding=sharding),
            jax.ShapeDtypeStruct((n,), jnp.int32, sharding=sharding))
    for name, fn in implementations().items():
      t0 = time.perf_counter()
      try:
        with jax.set_mesh(mesh):
          compiled = jax.jit(fn).lower(*args).compile()
        temp = f"{compiled.memory_analysis().temp_size_in_bytes / 2**20:.0f} MiB"
        note = ""
      except Exception as e:   # report the refusal, go on with the others
        temp, note = "-", f"{type(e).__name__}: {str(e).splitlines()[0][:90]}"
      print(f"| {shape} | {name} | {temp} | {time.perf_counter() - t0:.1f} | {note} |")


if __name__ == "__main__":
  app.run(main)
