"""Throughput of the batch generation job (`sample --prompts`) on 1 and on N devices; prints a table.

  python -m bench.sample_job --workdir workdirs/demo/sft [--devices 1,8 --prompts 96 --rows 16]

Each device count runs in its own process (on CPU the fake device count is fixed when JAX starts),
on the same prompts, into a fresh output folder; the first batch (compilation) is timed apart.
Every device count runs batches of `--rows` prompts (rows / devices on each device, the CLI's
--batch_size). On CPU, N fake devices share the host's cores, so the
table shows what the split costs or saves there, not what N accelerators would give.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "a trained workdir")
flags.DEFINE_string("devices", "1,8", "device counts to compare")
flags.DEFINE_integer("prompts", 96, "prompts (one image each)")
flags.DEFINE_integer("rows", 16, "prompts per batch, over all devices")
flags.DEFINE_float("cfg", 3.0, "guidance scale")
flags.DEFINE_string("worker", None, "internal: run one device count, print JSON")

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def worker(out_dir: str) -> dict:
  from synergen_jax.infer import jobs, loader
  from synergen_jax.infer.decode import Sampling
  prompts = os.path.join(out_dir, "prompts.jsonl")
  with open(prompts, "w") as f:
    for i in range(FLAGS.prompts):
      f.write(json.dumps({"prompt": WORDS[i % 10]}) + "\n")
  model = loader.load(FLAGS.workdir, mesh=loader.local_mesh())
  devices = model.mesh.devices.size
  settings = jobs.JobSettings(cfg_scale=FLAGS.cfg, sampling=Sampling(top_k=20),
                              batch_size=FLAGS.rows // devices)
  times = []
  jobs.run_job(model, prompts, out_dir, settings, log=lambda _: times.append(time.time()))
  # times[0]: the start line; then one line per batch. The first batch includes compilation.
  steady = (FLAGS.prompts - FLAGS.rows) / (times[-1] - times[1]) if len(times) > 2 else None
  return dict(devices=devices, rows=FLAGS.rows, first_batch_s=times[1] - times[0],
              total_s=times[-1] - times[0], steady_images_per_s=steady)


def main(argv):
  del argv
  if FLAGS.worker:
    print(json.dumps(worker(FLAGS.worker)))
    return
  rows = []
  for n in [int(x) for x in FLAGS.devices.split(",")]:
    if FLAGS.rows % n:
      raise app.UsageError(f"--rows {FLAGS.rows} must divide by every device count (got {n})")
    out = tempfile.mkdtemp(prefix=f"sample_job_{n}_")
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n}",
               JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
    run = subprocess.run([sys.executable, "-m", "bench.sample_job", "--workdir", FLAGS.workdir,
                          "--prompts", str(FLAGS.prompts), "--rows", str(FLAGS.rows),
                          "--cfg", str(FLAGS.cfg), "--worker", out], env=env, capture_output=True,
                         text=True)
    if run.returncode:
      raise SystemExit(run.stderr[-3000:])
    rows.append(json.loads(run.stdout.strip().splitlines()[-1]))
  print("| devices | rows per batch | first batch (compile) s | total s | images/s after the first batch |")
  print("|---|---|---|---|---|")
  for r in rows:
    steady = f"{r['steady_images_per_s']:.2f}" if r["steady_images_per_s"] else "-"
    print(f"| {r['devices']} | {r['rows']} | {r['first_batch_s']:.1f} | {r['total_s']:.1f} | {steady} |")


if __name__ == "__main__":
  flags.mark_flags_as_required(["workdir"])
  app.run(main)
