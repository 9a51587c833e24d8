"""The paper's folding-ratio ablation on the demo task: one run per fold ratio, same data and steps.

  python launch/sweep.py --sweep configs/sweeps/fold_ratio.py --workdir workdirs/fold_sweep
  python launch/sweep.py --sweep configs/sweeps/fold_ratio.py:runlocal --workdir /tmp/fold_sweep
  python launch/sweep.py --sweep configs/sweeps/fold_ratio.py --workdir gs://b/sweep --print_only
  python launch/sweep.py --sweep configs/sweeps/fold_ratio.py:model=ablation,runlocal --workdir /tmp/fs

Each point trains `config` with `arg` (the config's get_config argument) plus `overrides`
(dotted config keys), then evaluates it; launch/sweep.py aggregates DIR/summary.csv and
DIR/summary.png. `runlocal` shrinks every point (steps, held-out size, generated images) so the
whole sweep finishes on 2 CPU cores in a few minutes; the full sweep is the demo's SFT stage per
fold ratio (550 steps each, about 6 min per point on 2 cores).

`model=ablation` runs the same folds on the Qwen2-0.5B ablation config (configs/qwen2_0p5b_ablation.py,
evaluated by the benchmark suites as in configs/sweeps/token_folding.py, `bench=DIR`); with
`runlocal` on its tiny stand-in, evaluated by the class report.
"""

import os

import ml_collections

from synergen_jax.core.config import load_module, parse_arg
from synergen_jax.core.errors import ConfigError

# The ablation's benchmark suites, shared with the Tab. 6 sweep.
suites = load_module(os.path.join(os.path.dirname(__file__), "token_folding.py"), "sweep file").suites

FOLDS = ("1x1", "2x2", "2x4", "4x4")


def get_sweep(arg=None):
  arg = parse_arg(arg, runlocal=False, model="demo", bench="benchmarks")
  if arg.model not in ("demo", "ablation"):
    raise ConfigError(f"fold_ratio.py: model={arg.model!r}; choose demo or ablation")
  sweep = ml_collections.ConfigDict()
  sweep.name = "fold_ratio"
  sweep.config = "configs/demo.py"
  sweep.points = [dict(name=f"fold_{f}", arg=f"fold={f},stage=sft", overrides={}) for f in FOLDS]
  sweep.evaluate = dict(count=500, per_class=20, cfg_scale=3.0, top_k=20)
  if arg.model == "ablation":
    sweep.config = "configs/qwen2_0p5b_ablation.py"
    tiny = ",tiny=true" if arg.runlocal else ""
    sweep.points = [dict(name=f"fold_{f}", arg=f"fold={f},stage=sft{tiny}", overrides={})
                    for f in FOLDS]
    sweep.evaluate = dict(suites=suites(arg.bench), cfg_scale=3.0, top_k=0)
  if arg.runlocal:
    for p in sweep.points:
      p["overrides"] = {"train.steps": 40, "train.log_every": 10, "train.checkpoint_every": 40,
                        "train.eval_batches": 4}
    sweep.evaluate = dict(count=60, per_class=3, cfg_scale=3.0, top_k=20)
  return sweep
