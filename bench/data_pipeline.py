"""Is the input pipeline fast enough? Examples/s with 0, 1, 2 Grain workers vs a train step's appetite.

  python -m bench.data_pipeline --config configs/demo.py [--data DIR] [--batches 40]

--data is a `prepare` output for the config; without it a throwaway tokenizer (50 steps: speed does
not depend on its quality) is trained and the dataset prepared into a temporary folder. The train step
is the config's forward+backward on the pipeline's own batches. Data wait is what a step would wait
for its next batch: the whole batch time with 0 workers (no overlap), else what the batch time exceeds
the step time by.
"""

from __future__ import annotations

import tempfile
import time

import jax
import numpy as np
from absl import app, flags, logging

from synergen_jax.core import cli
from synergen_jax.core.config import validate_config
from synergen_jax.data.pipeline import make_iterator
from synergen_jax.prepare.writer import prepare
from synergen_jax.model.losses import synergen_loss
from synergen_jax.model.synergen_vl import SynerGenVL
from synergen_jax.vq import training as vq_training
from synergen_jax.vq.tokenizer import ImageTokenizer

FLAGS = flags.FLAGS
cli.define_config_flag("configs/demo.py")
flags.DEFINE_string("data", None, "prepared data for the config (default: build a throwaway one)")
flags.DEFINE_integer("batches", 40, "timed batches per worker count (after one warm-up batch)")
flags.DEFINE_integer("steps", 5, "timed train steps (after one compile step)")


def _examples(batch) -> int:
  return int(sum(np.unique(row[row > 0]).size for row in np.asarray(batch["segment_ids"])))


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  config = FLAGS.config
  mc = validate_config(config)
  data = FLAGS.data
  if data is None:
    tmp = tempfile.mkdtemp(prefix="bench_data_")
    config.vq.steps = 50
    vq_training.train(config, f"{tmp}/vq")
    prepare(config, f"{tmp}/data", ImageTokenizer.load(f"{tmp}/vq"))
    data = f"{tmp}/data"
  config.data.path = data

  rows = []
  for workers in (0, 1, 2):
    config.data.num_workers = workers
    it = make_iterator(config)
    first = next(it)                                # worker start-up is not steady state
    start, examples = time.perf_counter(), 0
    for _ in range(FLAGS.batches):
      examples += _examples(next(it))
    seconds = (time.perf_counter() - start) / FLAGS.batches
    rows.append((workers, seconds, examples / FLAGS.batches))

  model = SynerGenVL(mc)
  batch = {k: jax.numpy.asarray(v) for k, v in first.items()}
  params = jax.jit(model.init)(jax.random.key(0), batch)
  step = jax.jit(jax.grad(lambda p, b: synergen_loss(model.apply(p, b), config.loss.image_weight)[0]))
  jax.block_until_ready(step(params, batch))
  start = time.perf_counter()
  for _ in range(FLAGS.steps):
    grads = step(params, batch)
  jax.block_until_ready(grads)
  step_s = (time.perf_counter() - start) / FLAGS.steps
  per_step = _examples(first)

  print(f"\n{cli.config_spec()}: batch {config.train.batch_size}x{config.data.seq_len}, fold "
        f"{mc.fold[0]}x{mc.fold[1]}, {jax.devices()[0].platform}; train step {step_s * 1e3:.0f} ms "
        f"= {per_step / step_s:.0f} examples/s consumed")
  print(f"{'workers':>8} {'ms/batch':>9} {'examples/s':>11} {'x needed':>9} {'data wait':>10}")
  for workers, seconds, examples in rows:
    wait = seconds if workers == 0 else max(0.0, seconds - step_s)
    print(f"{workers:>8} {seconds * 1e3:>9.1f} {examples / seconds:>11.0f} "
          f"{(examples / seconds) / (per_step / step_s):>9.1f} {wait / (wait + step_s):>10.1%}")


if __name__ == "__main__":
  app.run(main)
