"""The CPU demo, end to end: MNIST-5k -> image tokenizer -> stage-1 -> stage-2 -> SFT ->
sample images and an evaluation.

  python -m synergen_jax.demo [--workdir workdirs/demo] [--config configs/demo.py:fold=2x4]
      [--config.train.steps=...]

Runs the config with stage=1 into WORKDIR/stage1, then stage=2 from its parameters into
WORKDIR/stage2, then stage=sft from those into WORKDIR/sft (each stage loads the config file again
with its stage argument and the same --config.a.b=v overrides; the data and tokenizer are prepared
once, into the cache, before the first stage), then evaluates the final model
(synergen_jax/eval/report.py: greedy captions, zero-shot classification, generated digits judged
by a classifier) into WORKDIR/sft/eval.json, eval_samples.png (a row of generated images per digit)
and eval_captions.png. WORKDIR/demo.json holds the wall time per phase, the held-out teacher-forced
metrics after each stage and the evaluation. Rerunning resumes wherever it stopped.
"""

from __future__ import annotations

import json
import os
import time

from absl import app, flags, logging

from synergen_jax.core import cli
from synergen_jax.prepare.cache import ensure_prepared
from synergen_jax.infer.decode import Sampling
from synergen_jax.eval.report import evaluate_workdir, format_table
from synergen_jax.train.loop import train

cli.define_config_flag("configs/demo.py")
flags.DEFINE_string("workdir", "workdirs/demo", "where every stage and demo.json go")
flags.DEFINE_float("cfg", 3.0, "classifier-free guidance scale of the evaluation's generated digits")
flags.DEFINE_integer("top_k", 20, "top-k of the evaluation's image sampling (0 = off)")

STAGES = (("1", "stage1"), ("2", "stage2"), ("sft", "sft"))


def run(workdir: str, config_spec: str, overrides: dict | None = None, cfg_scale: float = 3.0,
        top_k: int = 20) -> dict:
  """config_spec: `file.py[:arg]` whose get_config takes a `stage` argument; `overrides`: dotted
  keys applied to every stage ({"train.steps": 10})."""
  overrides = overrides or {}
  first = cli.reload(config_spec, overrides, stage=1)
  report, t0 = dict(config=config_spec, fold="x".join(map(str, first.model.fold))), time.time()
  t = time.time()
  ensure_prepared(first)
  report["data_seconds"] = round(time.time() - t, 1)
  previous = None
  for stage, name in STAGES:
    config = cli.reload(config_spec, overrides, stage=stage)
    config.train.init_from = previous
    t = time.time()
    result = train(config, os.path.join(workdir, name))
    report[name] = dict(seconds=round(time.time() - t, 1), steps=result["step"],
                        final_loss=result["losses"].get(result["step"]), **result["heldout"])
    previous = os.path.join(workdir, name)
  t = time.time()
  evaluation = evaluate_workdir(previous, cfg_scale=cfg_scale, sampling=Sampling(top_k=top_k),
                                per_class=20)
  print(format_table(evaluation), flush=True)
  report["evaluation"] = dict(evaluation, seconds=round(time.time() - t, 1))
  report["total_seconds"] = round(time.time() - t0, 1)
  with open(os.path.join(workdir, "demo.json"), "w") as f:
    json.dump(report, f, indent=1)
  return report


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  f = flags.FLAGS
  print(json.dumps(run(f.workdir, cli.config_spec(), cli.overrides(), f.cfg, f.top_k), indent=1))


if __name__ == "__main__":
  app.run(main)
