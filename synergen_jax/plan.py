"""Plan a stage before paying for it: which slice, mesh, remat policy and accumulation fit, and how
long and how much the stage takes on each target (synergen_jax/planning; docs/planning.md).

  python -m synergen_jax.plan --config configs/synergen_vl_2b.py:stage=1 \
      --targets v5p-64,v5p-128,v5e-256,h100:8x8 [--examples N | --tokens N | --steps N] \
      [--prices FILE] [--json FILE] [--plot FILE] [--verify] [--calibration FILE]

Prints per target its best layouts (memory per chip, step time, tokens/s per chip, MFU, hours,
cost) and the config's own layout, the image tokenizer's cost over the stage's images, and exits 1
when nothing fits (naming the smallest per-chip memory found and its largest term). --verify
compiles each target's winner ahead of time (python -m synergen_jax.aot) and reports its memory
beside the prediction. --configured_only plans the config's own layout only (the launch scripts'
check: exit 1 when it does not fit).
"""

from __future__ import annotations

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")     # nothing here runs on an accelerator

import copy
import json
import sys

from absl import app, flags, logging

from synergen_jax.core import cli
from synergen_jax.core.errors import ConfigError
from synergen_jax.planning import layouts, memory, planner, prices as prices_lib
from synergen_jax.planning.calibrate import read_device_check
from synergen_jax.planning.facts import facts
from synergen_jax.planning.prepare_cost import prepare_cost
from synergen_jax.planning.roofline import EFFICIENCY, _segments
from synergen_jax.planning.targets import parse_targets

FLAGS = flags.FLAGS
cli.define_config_flag()
flags.DEFINE_string("targets", None, "comma-separated: v5p-128, v5litepod-256 / v5e-256, v6e-64, "
                    "v5p:4x4x4, h100:8x8 (hosts x GPUs), h200:2x8")
flags.DEFINE_integer("examples", None, "train on this many examples (packed rows of the stage's mix)")
flags.DEFINE_integer("tokens", None, "train on this many sequence slots")
flags.DEFINE_integer("steps", None, "train this many optimizer steps (default: config.train.steps)")
flags.DEFINE_string("prices", None, "JSON {family: dollars per chip-hour} replacing the dated table")
flags.DEFINE_string("json", None, "write every candidate as a JSON row here")
flags.DEFINE_string("plot", None, "write a PNG of hours against cost here (misfits marked)")
flags.DEFINE_boolean("verify", False, "AOT-compile each target's winner and report its memory")
flags.DEFINE_string("calibration", None, "bench/device_check.sh's JSON: its measured efficiency "
                    "replaces the published-figure ceiling for its device")
flags.DEFINE_boolean("configured_only", False, "plan only the config's own layout (exit 1: misfit)")
flags.DEFINE_integer("top", 5, "layouts shown per target")

GIB = 2**30


def _row_line(r) -> str:
  mark = "*" if r.configured else " "
  return (f" {mark} {r.layout:<46} {r.predicted_bytes_per_chip / GIB:7.1f} GiB "
          f"{'fits' if r.fits else 'NO  '} {r.step_seconds:7.3f} s {r.tokens_per_second_per_chip:8.0f} "
          f"{r.mfu * 100:5.1f}% {r.hours:9.1f} h  ${r.cost:,.0f}" + (
              f"  aot {r.aot_bytes_per_chip / GIB:.1f} GiB" if r.aot_bytes_per_chip else ""))


def verify(config, target, row) -> None:
  """Compiles the row's layout for the target; its AOT bytes per chip go into the row."""
  from synergen_jax.aot.compile_report import compile_report
  compiled = copy.deepcopy(config)
  with compiled.unlocked():
    layouts.apply(compiled, row._layout)
  try:
    report = compile_report(compiled, target.aot_topology)
  except ConfigError as e:
    print(f"  verify {target.name}: not compiled: {e}")
    return
  row.aot_bytes_per_chip = int(report.total_bytes)


def plot(rows, path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(7, 5))
  for target in dict.fromkeys(r.target for r in rows):
    mine = [r for r in rows if r.target == target]
    fit = [r for r in mine if r.fits]
    line = ax.scatter([r.hours for r in fit], [r.cost for r in fit], s=12, label=target)
    ax.scatter([r.hours for r in mine if not r.fits], [r.cost for r in mine if not r.fits], s=12,
               marker="x", color=line.get_facecolor()[0], alpha=0.4)
  ax.set(xscale="log", yscale="log", xlabel="hours", ylabel="cost ($)",
         title="candidate layouts (x: does not fit)")
  ax.legend()
  fig.savefig(path, dpi=100, bbox_inches="tight")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  try:
    run(FLAGS.config)
  except ConfigError as e:
    print(f"plan: {e}", file=sys.stderr)
    sys.exit(2)


def run(config):
  targets = parse_targets(FLAGS.targets)
  families = sorted({t.family for t in targets})
  prices = prices_lib.load_prices(FLAGS.prices, families)
  efficiency = dict(EFFICIENCY, **(read_device_check(FLAGS.calibration) if FLAGS.calibration else {}))
  f = facts(config)
  steps = planner.steps_for(f, examples=FLAGS.examples, tokens=FLAGS.tokens, steps=FLAGS.steps)
  print(f"plan: {cli.config_spec()} (stage {f.stage}): {f.params / 1e9:.2f}B parameters, "
        f"{f.trained / 1e9:.2f}B trained, batch {f.batch_size} x {f.seq_len}, {steps:,} steps; "
        f"prices {'from ' + FLAGS.prices if FLAGS.prices else 'of ' + prices_lib.PRICES_DATE + ' (list, on demand)'}")
  everything = []
  for target in targets:
    rows = planner.plan_target(config, f, target, steps, prices, efficiency, FLAGS.configured_only)
    if FLAGS.verify and rows[0].fits:
      verify(config, target, rows[0])
    everything += rows
    images = f.batch_size * len(_segments(f)) * steps
    prep = prepare_cost(config, target, images, efficiency.get(target.family, 0.5))
    print(f"\n{target.name}: {target.chips} x {target.device_kind}, {target.hbm_bytes / GIB:.0f} GiB "
          f"each, ${prices.get(target.family, float('nan')):.2f}/chip-hour")
    print(f"   {'layout (mesh data x fsdp x tensor, remat, accum, attention, unfold chunk)':<46} "
          f"{'memory':>11} {'':4} {'step':>9} {'tok/s/chip':>9} {'MFU':>6} {'time':>11}  cost")
    shown = rows[:FLAGS.top] + [r for r in rows[FLAGS.top:] if r.configured]
    for r in shown:
      print(_row_line(r))
    print(f"   prepare: {prep.tiles_per_image} tile(s) x {prep.flops_per_image / prep.tiles_per_image / 1e12:.2f}"
          f" TFLOP per image, {prep.images_per_second_per_chip:.1f} images/s per chip, "
          f"{prep.images:,} images: {prep.hours:.1f} h")
  bounds = ", ".join(f"{(1 - b) * 100:.0f}% with remat {policy}" for policy, b in memory.ERROR_BOUND.items())
  print(f"\n(* the config's own layout; fits = predicted <= {(1 - memory.DEFAULT_ERROR_BOUND) * 100:.0f}% "
        f"of HBM ({bounds}: the memory model's error bounds); winners first)")
  if FLAGS.json:
    with open(FLAGS.json, "w") as out:
      json.dump([r.as_dict() for r in everything], out, indent=1)
  if FLAGS.plot:
    plot(everything, FLAGS.plot)
  if not any(r.fits for r in everything):
    print(("the configured layout " if FLAGS.configured_only else "the config ")
          + planner.no_fit_message(everything), file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "targets"])
  app.run(main)
