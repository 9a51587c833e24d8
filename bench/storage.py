"""What a bucket costs against a local disk: checkpoint save and restore of the demo model's train
state, and prepare's throughput writing its parts, each to a local folder and to a GCS emulator
(fake-gcs-server on loopback, bench/gcs_emulator.py).

  python -m bench.storage [--out /tmp/bench_storage] [--repeats 3]

An emulator on loopback has no network between client and store: its numbers show what the code
path itself costs (serialisation, one upload per object, no rename), not a real bucket's bandwidth.
Prints one table (median of --repeats).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
from absl import app, flags, logging

from bench.gcs_emulator import gcs_emulator, make_bucket

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = flags.FLAGS
flags.DEFINE_string("out", "/tmp/bench_storage", "scratch folder")
flags.DEFINE_integer("repeats", 3, "timed repetitions (median reported)")


def demo_state():
  """The demo model's whole train state (parameters and Adam moments), random values."""
  from flax import linen as nn
  from synergen_jax.core.config import validate_config
  from synergen_jax.core import cli
  from synergen_jax.parallel.mesh import make_mesh
  from synergen_jax.parallel.sharding import LOGICAL_RULES
  from synergen_jax.train.state import build_train_step
  config = cli.reload(os.path.join(ROOT, "configs", "demo.py"), {})
  mc = validate_config(config)
  mesh = make_mesh(config.mesh, jax.devices()[:1])
  with jax.set_mesh(mesh), nn.logical_axis_rules(LOGICAL_RULES):
    abstract = build_train_step(config, mc, mesh).abstract_state
  rng = np.random.default_rng(0)
  return jax.tree.map(lambda a: jax.numpy.asarray(rng.standard_normal(a.shape).astype(a.dtype))
                      if a.shape else jax.numpy.zeros((), a.dtype), abstract)


def time_checkpoint(root: str, state) -> tuple[float, float]:
  """Seconds to save (until committed) and to restore the state under `root`."""
  saves, restores = [], []
  for r in range(FLAGS.repeats):
    directory = f"{root}/ckpt{r}"
    t0 = time.perf_counter()
    with ocp.CheckpointManager(directory) as mngr:
      mngr.save(1, args=ocp.args.StandardSave(state))
      mngr.wait_until_finished()
    saves.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    with ocp.CheckpointManager(directory) as mngr:
      restored = mngr.restore(1, args=ocp.args.StandardRestore(state))
      jax.block_until_ready(restored)
    restores.append(time.perf_counter() - t0)
  return statistics.median(saves), statistics.median(restores)


def time_prepare(out: str, vq_dir: str) -> tuple[float, int]:
  """Seconds of `python -m synergen_jax.prepare` (digits, tiny tokenizer) into `out`; examples."""
  cmd = [sys.executable, "-m", "synergen_jax.prepare", "--config", os.path.join(ROOT, "configs/tiny.py"),
         "--config.data.name=digits", "--config.data.records_per_shard=150", "--vq_workdir", vq_dir,
         "--out", out]
  t0 = time.perf_counter()
  run = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
  seconds = time.perf_counter() - t0
  if run.returncode:
    raise RuntimeError(run.stdout[-2000:] + run.stderr[-2000:])
  import json
  from synergen_jax.core import storage
  meta = json.loads(storage.path(out + "/meta.json").read_text())
  return seconds, sum(s["examples"] for s in meta["splits"].values())


def main(argv):
  del argv
  logging.set_verbosity(logging.ERROR)
  shutil.rmtree(FLAGS.out, ignore_errors=True)
  os.makedirs(FLAGS.out)
  vq_dir = os.path.join(FLAGS.out, "vq")
  subprocess.run([sys.executable, "-m", "synergen_jax.train_vq", "--config",
                  os.path.join(ROOT, "configs/tiny.py"), "--workdir", vq_dir], check=True,
                 capture_output=True, cwd=ROOT)
  state = demo_state()
  size = sum(x.nbytes for x in jax.tree.leaves(state))
  rows = []
  with gcs_emulator(os.path.join(FLAGS.out, "emulator.log")) as url:
    bucket = make_bucket(url, "bench")
    for where, root in (("local disk", os.path.join(FLAGS.out, "local")), ("GCS emulator", bucket)):
      save, restore = time_checkpoint(root, state)
      prep = [time_prepare(f"{root}/prepared{r}", vq_dir) for r in range(FLAGS.repeats)]
      seconds = statistics.median(p[0] for p in prep)
      rows.append((where, save, restore, seconds, prep[0][1] / seconds))
  print(f"\ndemo train state: {size / 2**20:.1f} MiB; prepare: digits (1,797 records, 13 parts) with "
        f"the tiny tokenizer, whole command; median of {FLAGS.repeats}")
  print("| where | checkpoint save s | checkpoint restore s | save MiB/s | prepare s | prepare examples/s |")
  print("|---|---|---|---|---|---|")
  for where, save, restore, seconds, rate in rows:
    print(f"| {where} | {save:.2f} | {restore:.2f} | {size / 2**20 / save:.0f} | {seconds:.1f} | {rate:.0f} |")


if __name__ == "__main__":
  app.run(main)
