"""The CPU demo, end to end: MNIST-5k -> image tokenizer -> stage-1 -> stage-2 pretraining -> report.

  python -m synergen_jax.demo --workdir workdirs/demo [--fold 2x2]

Runs configs/demo.py:stage=1 into WORKDIR/stage1, then configs/demo.py:stage=2 from its parameters
into WORKDIR/stage2 (the data and tokenizer are prepared once, into the cache, by the first stage),
and writes WORKDIR/demo.json: wall time per phase and the held-out teacher-forced metrics after each
stage. Rerunning resumes wherever it stopped.
"""

from __future__ import annotations

import json
import os
import time

from absl import app, flags, logging

from synergen_jax.config import load_config
from synergen_jax.train.loop import ensure_prepared, train

flags.DEFINE_string("workdir", "workdirs/demo", "where both stages and demo.json go")
flags.DEFINE_string("fold", "2x2", "fold ratio (1x1, 2x2, 2x4, 4x4)")
flags.DEFINE_string("config", "configs/demo.py", "the demo config file")


def run(workdir: str, fold: str, config_file: str) -> dict:
  report, t0 = dict(fold=fold), time.time()
  first = load_config(f"{config_file}:fold={fold},stage=1")
  t = time.time()
  ensure_prepared(first)
  report["data_seconds"] = round(time.time() - t, 1)
  for stage in ("1", "2"):
    config = load_config(f"{config_file}:fold={fold},stage={stage}")
    if stage == "2":
      config.train.init_from = os.path.join(workdir, "stage1")
    t = time.time()
    result = train(config, os.path.join(workdir, f"stage{stage}"))
    report[f"stage{stage}"] = dict(seconds=round(time.time() - t, 1), steps=result["step"],
                                   final_loss=result["losses"].get(result["step"]),
                                   **result["heldout"])
  report["total_seconds"] = round(time.time() - t0, 1)
  with open(os.path.join(workdir, "demo.json"), "w") as f:
    json.dump(report, f, indent=1)
  return report


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  print(json.dumps(run(flags.FLAGS.workdir, flags.FLAGS.fold, flags.FLAGS.config), indent=1))


if __name__ == "__main__":
  app.run(main)
