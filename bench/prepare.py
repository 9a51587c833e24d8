"""Is prepare fast, flat in memory, crash-safe and splittable? Runs `python -m synergen_jax.prepare`
on webdataset tar shards this script writes (synthetic JPEGs: gradients and discs, 1,000 per shard).

  python -m bench.prepare [--out /tmp/bench_prepare] [--sizes 5000,20000] [--large 2000]

Prints one table:
  * images/s (while writing parts; and of the whole command, start-up included) with 0, 1 and 2
    decode workers at 32x32 (the demo's tokenizer shape) and 256x256
    (an 8x-downsampling tokenizer, 32x32 codes), random tokenizer weights: speed does not depend on
    them;
  * peak RSS of the prepare process (and of it with its workers) for each --sizes, at 32x32: flat in
    the dataset's size is the goal (the last over the first within 1.2x);
  * kill -9 after a third of the parts, rerun: the records equal an uninterrupted run's;
  * two processes with --num_shards 2 then --merge: the records equal one process's.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time

import numpy as np
from absl import app, flags, logging
from PIL import Image as PILImage

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = flags.FLAGS
flags.DEFINE_string("out", "/tmp/bench_prepare", "scratch folder (shards, tokenizers, outputs)")
flags.DEFINE_string("sizes", "5000,20000", "image counts for the peak-RSS rows")
flags.DEFINE_integer("large", 2000, "images in the 256x256 rows")
PER_SHARD = 1000
SHAPES = {32: dict(grid=8, downsample=4, width=16, code_dim=16, channels=1),
          256: dict(grid=32, downsample=8, width=32, code_dim=16, channels=3)}


def synthetic_jpeg(rng, size: int) -> bytes:
  """A smooth gradient with a disc: compresses like a photo, unlike noise."""
  y, x = np.mgrid[0:size, 0:size] / size
  base = rng.random(3)[None, None] * 255 * np.stack([x, y, 1 - x], -1)
  cy, cx, r = rng.random(3) * [size, size, size / 3]
  disc = ((np.mgrid[0:size, 0:size][0] - cy) ** 2 + (np.mgrid[0:size, 0:size][1] - cx) ** 2) < r * r
  base[disc] = rng.random(3) * 255
  buf = io.BytesIO()
  PILImage.fromarray(base.astype(np.uint8)).save(buf, format="JPEG", quality=90)
  return buf.getvalue()


def write_shards(folder: str, count: int, size: int) -> str:
  """img2dataset's layout: KEY.jpg + KEY.txt + KEY.json, 1,000 keys per tar."""
  if os.path.exists(os.path.join(folder, "done")):
    return os.path.join(folder, "{%05d..%05d}.tar" % (0, -(-count // PER_SHARD) - 1))
  os.makedirs(folder, exist_ok=True)
  rng = np.random.default_rng(0)
  for shard in range(-(-count // PER_SHARD)):
    with tarfile.open(os.path.join(folder, f"{shard:05d}.tar"), "w") as tar:
      for k in range(shard * PER_SHARD, min(count, (shard + 1) * PER_SHARD)):
        key = f"{shard:05d}{k % PER_SHARD:04d}"
        for ext, data in (("jpg", synthetic_jpeg(rng, size)),
                          ("txt", f"a synthetic picture number {k}".encode()),
                          ("json", json.dumps({"key": key}).encode())):
          info = tarfile.TarInfo(f"{key}.{ext}")
          info.size = len(data)
          tar.addfile(info, io.BytesIO(data))
  open(os.path.join(folder, "done"), "w").close()
  return os.path.join(folder, "{%05d..%05d}.tar" % (0, -(-count // PER_SHARD) - 1))


def overrides(size: int) -> list[str]:
  s = SHAPES[size]
  return [f"--config.model.code_grid=({s['grid']},{s['grid']})", f"--config.vq.downsample={s['downsample']}",
          f"--config.vq.width={s['width']}", f"--config.vq.code_dim={s['code_dim']}",
          f"--config.vq.channels={s['channels']}", "--config.data.image_fit=resize",
          f"--config.data.seq_len={max(128, (s['grid'] // 2) ** 2 + 64)}",
          "--config.vq.encode_batch=32"]   # the tokenizer's activations, not prepare, set the memory


def random_tokenizer(workdir: str, size: int) -> str:
  """An image-tokenizer workdir of the shape at random weights."""
  if os.path.exists(os.path.join(workdir, "vq_config.json")):
    return workdir
  import jax

  import jax.numpy as jnp

  from synergen_jax.core import cli
  from synergen_jax.core.config import load_config
  from synergen_jax.convert import vq_weights
  from synergen_jax.vq.autoencoder import VQConfig, VQModel
  s = SHAPES[size]
  config = cli.apply_overrides(load_config(os.path.join(ROOT, "configs/demo.py")), {
      "model.code_grid": (s["grid"], s["grid"]), "vq.downsample": s["downsample"],
      "vq.width": s["width"], "vq.code_dim": s["code_dim"], "vq.channels": s["channels"]})
  vq_config = VQConfig.from_config(config)
  params = VQModel(vq_config).init(jax.random.key(0), jnp.zeros((1, size, size, vq_config.channels)))
  vq_weights.write_tokenizer(workdir, vq_config, params, image_fit="resize", background=255,
                             source="bench")
  return workdir


def command(pattern: str, size: int, out: str, vq: str, *extra) -> list[str]:
  return [sys.executable, "-m", "synergen_jax.prepare", "--config", "configs/demo.py",
          *overrides(size), "--config.data.name=webdataset", f"--config.data.path={pattern}",
          "--config.data.eval_path=", "--vq_workdir", vq, "--out", out, *extra]


def run(cmd, kill_after_parts: int = 0) -> dict:
  """Runs prepare; returns seconds, peak RSS (MiB) of it alone and with its workers."""
  import psutil
  t0 = time.time()
  proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
  main, peak_main, peak_tree = psutil.Process(proc.pid), 0, 0
  out_dir = cmd[cmd.index("--out") + 1]
  while proc.poll() is None:
    try:
      rss = main.memory_info().rss
      tree = rss + sum(c.memory_info().rss for c in main.children(recursive=True))
      peak_main, peak_tree = max(peak_main, rss), max(peak_tree, tree)
    except psutil.Error:
      pass
    if kill_after_parts:
      parts = os.path.join(out_dir, "parts")
      if os.path.isdir(parts) and sum(f.endswith(".json") for f in os.listdir(parts)) >= kill_after_parts:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return dict(killed=True)
    time.sleep(0.05)
  log = proc.stdout.read().decode()
  if proc.returncode:
    raise SystemExit(f"{' '.join(cmd)} failed:\n{log[-3000:]}")
  return dict(seconds=time.time() - t0, rss=peak_main / 2**20, rss_tree=peak_tree / 2**20, log=log)


def in_parts(out: str) -> float:
  """Records per second of writing the parts (decode, encode, write; not the process start-up)."""
  parts = [json.load(open(os.path.join(out, "parts", f)))
           for f in os.listdir(os.path.join(out, "parts")) if f.endswith(".json")]
  return sum(p["raw_items"] for p in parts) / sum(p["seconds"] for p in parts)


def digest(out: str) -> str:
  """A hash of every record of both splits in the merged meta's order."""
  from grain.sources import ArrayRecordDataSource
  meta = json.load(open(os.path.join(out, "meta.json")))
  h = hashlib.sha256()
  for split in ("train", "eval"):
    files = [os.path.join(out, f) for f in meta["splits"][split]["shards"]]
    if files:
      source = ArrayRecordDataSource(files)
      for i in range(len(source)):
        h.update(source[i])
  return h.hexdigest()[:16]


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  sizes = [int(s) for s in FLAGS.sizes.split(",")]
  scratch = FLAGS.out
  vq = {s: random_tokenizer(os.path.join(scratch, f"vq{s}"), s) for s in SHAPES}
  rows = []

  def fresh(name):
    path = os.path.join(scratch, name)
    shutil.rmtree(path, ignore_errors=True)
    return path

  small = write_shards(os.path.join(scratch, f"tars32_{sizes[0]}"), sizes[0], 32)
  large = write_shards(os.path.join(scratch, f"tars256_{FLAGS.large}"), FLAGS.large, 256)
  for size, pattern, count in ((32, small, sizes[0]), (256, large, FLAGS.large)):
    for workers in (0, 1, 2):
      out = fresh(f"out{size}_w{workers}")
      r = run(command(pattern, size, out, vq[size], f"--workers={workers}"))
      rows.append((f"{count} images {size}x{size}, {workers} workers",
                   f"{in_parts(out):.0f} images/s ({count / r['seconds']:.0f} with start-up)",
                   f"{r['rss']:.0f} MiB ({r['rss_tree']:.0f} with workers)"))
  peaks = []
  for count in sizes:
    pattern = write_shards(os.path.join(scratch, f"tars32_{count}"), count, 32)
    r = run(command(pattern, 32, fresh(f"rss{count}"), vq[32], "--workers=1"))
    peaks.append(r["rss"])
    rows.append((f"peak RSS, {count} images 32x32, 1 worker", f"{r['rss']:.0f} MiB",
                 f"{r['rss_tree']:.0f} MiB with the worker"))
  rows.append(("peak RSS ratio, largest / smallest", f"{peaks[-1] / peaks[0]:.2f}x", "goal <= 1.2x"))

  pattern = small
  whole = fresh("whole")
  run(command(pattern, 32, whole, vq[32]))
  killed = fresh("killed")
  parts = -(-sizes[0] // PER_SHARD)
  run(command(pattern, 32, killed, vq[32]), kill_after_parts=max(1, parts // 3))
  done = sum(f.endswith(".json") for f in os.listdir(os.path.join(killed, "parts")))
  run(command(pattern, 32, killed, vq[32]))
  rows.append((f"kill -9 after {done} of {parts} parts, rerun", "same records" if digest(killed) ==
               digest(whole) else "DIFFERENT records", ""))
  split = fresh("two")
  procs = [subprocess.Popen(command(pattern, 32, split, vq[32], "--num_shards=2", f"--shard_index={i}"),
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT) for i in range(2)]
  codes = [p.wait() for p in procs]
  if not os.path.exists(os.path.join(split, "meta.json")):
    subprocess.run(command(pattern, 32, split, vq[32], "--merge"), cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)
  rows.append(("2 processes --num_shards 2, merged", "same records" if codes == [0, 0] and
               digest(split) == digest(whole) else "DIFFERENT records", ""))

  width = max(len(r[0]) for r in rows)
  print(f"\n{'run'.ljust(width)} | result | memory")
  print(f"{'-' * width}-|--------|-------")
  for name, result, memory in rows:
    print(f"{name.ljust(width)} | {result} | {memory}")


if __name__ == "__main__":
  app.run(main)
