"""CPU/GPU timing of one forward+backward of a config at several fold ratios; prints a table.

  python -m bench.forward_backward --config configs/demo.py --folds 1x1,2x2,2x4 [--steps 5]
      [--heads full,chunked] [--config.train.batch_size=...]

Each fold ratio runs the same packed examples (alternating generation / captioning of random codes)
in the real batch layout; model FLOPs are the framework's count (synergen_jax/model/accounting.py).
Heads: `chunked` is the training loss (heads on the gathered targets within the per-row budgets
that data/synthetic.py derives for this mix, chunked cross-entropy), `full` the reference that builds
every slot's full logits (model/losses.full_logits_loss): before and after, in the same run.
"""

from __future__ import annotations

import itertools
import time

import jax
from absl import app, flags

from synergen_jax.core import cli
from synergen_jax.core.config import validate_config
from synergen_jax.data.synthetic import synthetic_batch, with_synthetic_budgets
from synergen_jax.model import accounting
from synergen_jax.model.losses import full_logits_loss, synergen_loss
from synergen_jax.model.synergen_vl import SynerGenVL

FLAGS = flags.FLAGS
cli.define_config_flag("configs/demo.py")   # its get_config must take fold=
flags.DEFINE_string("folds", "1x1,2x2,2x4", "comma-separated fold ratios")
flags.DEFINE_integer("steps", 5, "timed steps per fold ratio (after one compile step)")
flags.DEFINE_string("heads", "full,chunked", "loss implementations to time: full, chunked")


def loss_fn(model, heads: str):
  if heads == "full":
    return lambda p, b: full_logits_loss(model, p, b, 2.0)
  return lambda p, b: synergen_loss(model.apply(p, b), 2.0)[0]


def main(argv):
  del argv
  rows = []
  for fold, heads in itertools.product(FLAGS.folds.split(","), FLAGS.heads.split(",")):
    config = cli.reload(fold=fold)
    mc = with_synthetic_budgets(validate_config(config), config.data.seq_len)
    batch = synthetic_batch(mc, config.train.batch_size, config.data.seq_len)
    model = SynerGenVL(mc)
    params = jax.jit(model.init)(jax.random.key(0), batch)
    step = jax.jit(jax.grad(loss_fn(model, heads)))
    t0 = time.perf_counter()
    jax.block_until_ready(step(params, batch))
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(FLAGS.steps):
      grads = step(params, batch)
    jax.block_until_ready(grads)
    step_s = (time.perf_counter() - t0) / FLAGS.steps
    images = int((batch["modality"] == 1).sum()) // mc.windows_per_image
    rows.append((fold, heads, mc.windows_per_image, accounting.param_count(mc).total, images,
                 compile_s, step_s * 1e3, accounting.batch_train_flops(mc, batch) / step_s / 1e9))
  device = jax.devices()[0].device_kind
  print(f"\n{cli.config_spec()}, batch {config.train.batch_size}x{config.data.seq_len}, {device}")
  print("| fold | heads | slots/image | params | images/batch | compile s | fwd+bwd ms | images/s | GFLOP/s |")
  print("|---|---|---|---|---|---|---|---|---|")
  for fold, heads, slots, params, images, comp, ms, gflops in rows:
    print(f"| {fold} | {heads} | {slots} | {params / 1e6:.2f}M | {images} | {comp:.1f} | {ms:.1f} | "
          f"{images / ms * 1e3:.1f} | {gflops:.1f} |")


if __name__ == "__main__":
  app.run(main)
