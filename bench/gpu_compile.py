"""Compiles the Pallas GPU attention kernels for a Hopper target on any host (no GPU needed) and prints
what ptxas reports per kernel: registers per thread and bytes spilled to local memory.

  pip install -e ".[cuda]"          # jax's CUDA 13 plugin, with ptxas (a separate venv is best)
  python -m bench.gpu_compile [--target h100 --lengths 4096 --head_dims 64,128 --impls pallas_gpu,pallas_mgpu]

XLA's compile-only GPU client (`synergen_jax/aot/targets.py`) runs the whole GPU pipeline
for the target: Triton kernels become PTX that XLA assembles, Mosaic GPU kernels go through their
MLIR passes to PTX and ptxas. This tool reads the PTX XLA dumps for the Triton kernels and runs
ptxas -v on it (same target, sm_90a), and Mosaic GPU's own ptxas log (MOSAIC_GPU_DUMP_PTXAS).
Nothing runs, so there are no timings: spills and register counts are what compile-time evidence can
show (a kernel at 255 registers that spills keeps part of its accumulators in L1-backed local
memory).
"""

from __future__ import annotations

import glob
import os
import re
import subprocess
import sys
import tempfile

# The dump locations must be set before jax loads its CUDA plugin.
DUMP = tempfile.mkdtemp(prefix="synergen_gpu_compile_")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ["MOSAIC_GPU_DUMP_TO"] = os.path.join(DUMP, "mosaic")
os.makedirs(os.environ["MOSAIC_GPU_DUMP_TO"])
os.environ["MOSAIC_GPU_DUMP_PTXAS"] = "1"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from absl import app, flags  # noqa: E402

from synergen_jax.aot.targets import gpu_topology  # noqa: E402
from synergen_jax.core.hardware import GPU_TARGETS  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_enum("target", "h100", sorted(GPU_TARGETS), "GPU to compile for")
flags.DEFINE_string("lengths", "4096", "sequence lengths")
flags.DEFINE_string("head_dims", "64,128", "head dimensions")
flags.DEFINE_string("impls", "pallas_gpu,pallas_mgpu", "kernels to compile")
flags.DEFINE_integer("heads", 16, "query heads")
flags.DEFINE_integer("kv_heads", 8, "key/value heads")
flags.DEFINE_string("dtype", "bfloat16", "input dtype")
flags.DEFINE_bool("packed", True, "with segment ids")
flags.DEFINE_integer("block_q", 0, "query block (0 = the kernel's default)")
flags.DEFINE_integer("block_k", 0, "key block (0 = the kernel's default)")

TRITON_NAMES = {"_fwd_kernel": "forward", "_dkv_kernel": "dK/dV", "_dq_kernel": "dQ"}


def _ptxas() -> str:
  import nvidia
  for root in nvidia.__path__:
    found = glob.glob(os.path.join(root, "*", "bin", "ptxas"))
    if found:
      return found[0]
  raise SystemExit("ptxas not found: install the cuda extra (pip install -e '.[cuda]')")


def _stats(text: str) -> tuple[int, int, int]:
  """(registers, spill store bytes, spill load bytes) from ptxas -v output."""
  regs = int(re.search(r"Used (\d+) registers", text).group(1))
  spill = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", text)
  return regs, int(spill.group(1)), int(spill.group(2))


def _new_files(pattern: str, seen: set[str]) -> list[str]:
  files = sorted(set(glob.glob(pattern)) - seen, key=os.path.getmtime)
  seen.update(files)
  return files


def _kernels(impl, scale, packed):
  """(name, f(q, k, v, seg, do, lse, delta)) for each kernel of impl; f runs only that kernel."""
  s = lambda seg: seg if packed else None
  if impl == "pallas_mgpu":
    from synergen_jax.kernels import flash_mgpu as m
    bq, bk = FLAGS.block_q or m.DEFAULT_BLOCKS[0], FLAGS.block_k or m.DEFAULT_BLOCKS[1]
    fwd, bwd = (True, scale, bq, bk, False), (True, scale, *m.BACKWARD_BLOCKS, False)
    if FLAGS.block_q or FLAGS.block_k:      # probing other blocks: the backward takes them too
      bwd = fwd
    return [
        ("forward", lambda q, k, v, seg, do, lse, delta: m._forward(q, k, v, s(seg), *fwd)),
        ("dK/dV", lambda q, k, v, seg, do, lse, delta: m._dkv(q, k, v, s(seg), do, lse, delta, *bwd)),
        ("dQ", lambda q, k, v, seg, do, lse, delta: m._dq(q, k, v, s(seg), do, lse, delta, *bwd))]
  from synergen_jax.kernels import flash_gpu as g
  bq, bk = FLAGS.block_q or g.DEFAULT_BLOCKS[0], FLAGS.block_k or g.DEFAULT_BLOCKS[1]
  blocks = (True, scale, bq, bk, False)
  return [("forward", lambda q, k, v, seg, do, lse, delta: g._forward(q, k, v, s(seg), *blocks)),
          ("backward", lambda q, k, v, seg, do, lse, delta: g._backward(q, k, v, s(seg), do, lse, do,
                                                                        *blocks))]


def main(argv):
  del argv
  from jax.experimental import topologies
  topology, _ = gpu_topology(FLAGS.target)
  mesh = topologies.make_mesh(topology, (1,), ("x",))
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  dtype = jnp.dtype(FLAGS.dtype)
  ptxas = _ptxas()
  seen: set[str] = set()
  print(f"target: {topology.devices[0].device_kind} (sm_90a), compile-only; heads "
        f"{FLAGS.heads}/{FLAGS.kv_heads}, {dtype}, causal, packed={FLAGS.packed}, blocks "
        f"{FLAGS.block_q or 'default'} x {FLAGS.block_k or 'default'}")
  print("| impl | kernel | T | head_dim | registers | spill stores / loads (bytes) |")
  print("|---|---|---|---|---|---|")
  for t in map(int, FLAGS.lengths.split(",")):
    for d in map(int, FLAGS.head_dims.split(",")):
      spec = lambda *shape, dt=dtype: jax.ShapeDtypeStruct(shape, dt, sharding=sharding)
      q, k = spec(1, t, FLAGS.heads, d), spec(1, t, FLAGS.kv_heads, d)
      rows = spec(1, FLAGS.heads, t, dt=jnp.float32)                 # logsumexp, delta
      args = (q, k, k, spec(1, t, dt=jnp.int32), q, rows, rows)
      for impl in FLAGS.impls.split(","):
        for name, fn in _kernels(impl, d ** -0.5, FLAGS.packed):
          try:
            xla_dump = tempfile.mkdtemp(dir=DUMP)     # where XLA writes the Triton kernels' PTX
            options = {"xla_dump_to": xla_dump} if impl == "pallas_gpu" else {}
            jax.jit(fn).lower(*args).compile(compiler_options=options)
          except Exception as e:  # noqa: BLE001 - a kernel that does not compile is a row
            print(f"| {impl} | {name} | {t} | {d} | failed: {type(e).__name__}: {str(e)[:120]} | |")
            continue
          if impl == "pallas_mgpu":
            logs = [open(f).read() for f in _new_files(os.path.join(DUMP, "mosaic", "*.ptxas"), seen)]
          else:
            logs = []
            for ptx in _new_files(os.path.join(xla_dump, "*.ptx"), seen):
              entry = re.search(r"\.entry (\w+)", open(ptx).read())
              entry = entry.group(1) if entry else ""
              if entry.startswith("_") and entry.endswith("_kernel"):    # ours, not XLA's fusions
                out = subprocess.run([ptxas, "-arch=sm_90a", "-v", ptx, "-o", os.devnull],
                                     capture_output=True, text=True, check=True)
                logs.append(f"{entry}\n{out.stderr}")
          for log in logs:
            regs, stores, loads = _stats(log)
            label = name if impl == "pallas_mgpu" else TRITON_NAMES[log.split("\n", 1)[0]]
            print(f"| {impl} | {label} | {t} | {d} | {regs} | {stores} / {loads} |", flush=True)


if __name__ == "__main__":
  sys.exit(app.run(main))
