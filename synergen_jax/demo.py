"""The CPU demo, end to end: MNIST-5k -> image tokenizer -> stage-1 -> stage-2 -> SFT ->
sample images and an evaluation.

  python -m synergen_jax.demo --workdir workdirs/demo [--fold 2x2]

Runs configs/demo.py:stage=1 into WORKDIR/stage1, then stage=2 from its parameters into
WORKDIR/stage2, then stage=sft from those into WORKDIR/sft (the data and tokenizer are prepared once,
into the cache, before the first stage), then evaluates the final model
(synergen_jax/infer/evaluate.py: greedy captions, zero-shot classification, generated digits judged
by a classifier) into WORKDIR/sft/eval.json, eval_samples.png (a row of generated images per digit)
and eval_captions.png. WORKDIR/demo.json holds the wall time per phase, the held-out teacher-forced
metrics after each stage and the evaluation. Rerunning resumes wherever it stopped.
"""

from __future__ import annotations

import json
import os
import time

from absl import app, flags, logging

from synergen_jax.config import load_config
from synergen_jax.infer import loader
from synergen_jax.infer.decode import Sampling
from synergen_jax.infer.evaluate import evaluate, format_table
from synergen_jax.train.loop import ensure_prepared, train

flags.DEFINE_string("workdir", "workdirs/demo", "where every stage and demo.json go")
flags.DEFINE_string("fold", "2x2", "fold ratio (1x1, 2x2, 2x4, 4x4)")
flags.DEFINE_string("config", "configs/demo.py", "the demo config file")
flags.DEFINE_float("cfg", 3.0, "classifier-free guidance scale of the evaluation's generated digits")
flags.DEFINE_integer("top_k", 20, "top-k of the evaluation's image sampling (0 = off)")

STAGES = (("1", "stage1"), ("2", "stage2"), ("sft", "sft"))


def run(workdir: str, fold: str, config_file: str, cfg_scale: float = 3.0, top_k: int = 20) -> dict:
  report, t0 = dict(fold=fold), time.time()
  first = load_config(f"{config_file}:fold={fold},stage=1")
  t = time.time()
  ensure_prepared(first)
  report["data_seconds"] = round(time.time() - t, 1)
  previous = None
  for stage, name in STAGES:
    config = load_config(f"{config_file}:fold={fold},stage={stage}")
    config.train.init_from = previous
    t = time.time()
    result = train(config, os.path.join(workdir, name))
    report[name] = dict(seconds=round(time.time() - t, 1), steps=result["step"],
                        final_loss=result["losses"].get(result["step"]), **result["heldout"])
    previous = os.path.join(workdir, name)
  t = time.time()
  evaluation = evaluate(loader.load(previous), previous, cfg_scale=cfg_scale,
                        sampling=Sampling(top_k=top_k), per_class=20)
  with open(os.path.join(previous, "eval.json"), "w") as f:
    json.dump(evaluation, f, indent=1)
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
  print(json.dumps(run(f.workdir, f.fold, f.config, f.cfg, f.top_k), indent=1))


if __name__ == "__main__":
  app.run(main)
