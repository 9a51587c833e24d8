"""Prints a config's parameter count and FLOPs and runs one forward+backward on a laid-out batch.

  python -m synergen_jax.summary --config configs/demo.py[:fold=2x4] [--steps 3]
      [--config.train.batch_size=8 ...]

The parameter table is analytic (synergen_jax/model/accounting.py) and checked against the real
module; the step runs on whatever backend JAX finds, on random examples in the real batch layout.
"""

from __future__ import annotations

import time

import jax
import numpy as np
from absl import app, flags

from synergen_jax.core import cli
from synergen_jax.core.config import validate_config
from synergen_jax.data.synthetic import synthetic_batch
from synergen_jax.model import accounting
from synergen_jax.model.losses import synergen_loss
from synergen_jax.model.synergen_vl import SynerGenVL

FLAGS = flags.FLAGS
cli.define_config_flag("configs/demo.py")
flags.DEFINE_integer("steps", 3, "forward+backward steps to time (0 = counts only)")


def _fmt(n: float) -> str:
  for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
    if abs(n) >= scale:
      return f"{n / scale:.2f}{unit}"
  return str(int(n))


def main(argv):
  del argv
  config = FLAGS.config
  mc = validate_config(config)
  count = accounting.param_count(mc)
  print(f"config {cli.config_spec()}: fold {mc.fold[0]}x{mc.fold[1]}, code grid "
        f"{mc.code_grid[0]}x{mc.code_grid[1]} -> {mc.windows_per_image} slots per image")
  print(f"{'part':<14}{'params':>12}")
  for part, n in count.parts.items():
    print(f"{part:<14}{_fmt(n):>12}")
  print(f"{'total':<14}{_fmt(count.total):>12}\n{'activated':<14}{_fmt(count.activated):>12}")
  for name, ex in (("generation", accounting.generation_example(mc)),
                   ("captioning", accounting.captioning_example(mc))):
    print(f"train FLOPs per {name} example ({ex['text_slots']} text + {ex['image_slots']} image "
          f"slots): {_fmt(accounting.train_flops(mc, **ex))}")
  if FLAGS.steps <= 0:
    return

  rows = config.train.batch_size
  batch = synthetic_batch(mc, rows, config.data.seq_len)
  model = SynerGenVL(mc)
  params = jax.jit(model.init)(jax.random.key(0), batch)
  step = jax.jit(jax.value_and_grad(
      lambda p, b: synergen_loss(model.apply(p, b), config.loss.image_weight), has_aux=True))
  (loss, metrics), _ = step(params, batch)           # compile
  jax.block_until_ready(loss)
  start = time.perf_counter()
  for _ in range(FLAGS.steps):
    (loss, metrics), grads = step(params, batch)
  jax.block_until_ready(grads)
  seconds = (time.perf_counter() - start) / FLAGS.steps
  tokens = float((batch["segment_ids"] > 0).sum())
  print(f"forward+backward on {jax.devices()[0].platform}: batch {rows}x{config.data.seq_len}, "
        f"{seconds * 1e3:.1f} ms/step, {tokens / seconds:,.0f} slots/s; "
        f"loss {float(loss):.3f} (text {float(metrics['loss/text']):.3f} ~ ln V = "
        f"{np.log(mc.text_vocab):.3f}, image {float(metrics['loss/image']):.3f} ~ ln K = "
        f"{np.log(mc.codebook_size):.3f})")


if __name__ == "__main__":
  app.run(main)
