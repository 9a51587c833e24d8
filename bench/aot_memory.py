"""The AOT compiles the planner's memory model is held to (tests/planning/aot_memory.json): record
them again, or fit the model's calibration to them.

  python bench/aot_memory.py --record [--only 0,3] [--table tests/planning/aot_memory.json]
  python bench/aot_memory.py --fit

--record compiles each row's config (with its overrides) for its topology through
`aot.compile_report` (libtpu; GPU rows need the cuda extra), one at a time, and rewrites the row
with the exact figures, the date, commit and jax / libtpu versions. Paper-scale programs take 2-11
minutes each on 2 cores. --fit prints memory.CALIBRATION fitted to the table.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

flags.DEFINE_string("table", "tests/planning/aot_memory.json", "the recorded table")
flags.DEFINE_boolean("record", False, "compile the rows again and write their figures")
flags.DEFINE_string("only", None, "comma-separated row indices to record (default: all)")
flags.DEFINE_boolean("fit", False, "print the calibration fitted to the table")
FLAGS = flags.FLAGS


def _version(module: str) -> str | None:
  from importlib import metadata
  try:
    return metadata.version(module)
  except metadata.PackageNotFoundError:
    return None


def record(row: dict) -> dict:
  from synergen_jax.aot.compile_report import compile_report
  from synergen_jax.core.config import load_config
  config = load_config(row["config"])
  with config.unlocked():
    for key, value in row.get("overrides", {}).items():
      section, name = key.split(".")
      config[section][name] = value
  report = compile_report(config, row["topology"])
  commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
  return dict(row, params_bytes=report.params_bytes, optimizer_bytes=report.optimizer_bytes,
              temp_bytes=report.temp_bytes, total_bytes=report.total_bytes, hbm_bytes=report.hbm_bytes,
              date=time.strftime("%Y-%m-%d"), commit=commit, jax=_version("jax"),
              libtpu=_version("libtpu"), source="bench/aot_memory.py --record",
              compile_seconds=round(report.compile_seconds))


def main(argv):
  del argv
  with open(FLAGS.table) as f:
    table = json.load(f)
  if FLAGS.record:
    picks = [int(i) for i in FLAGS.only.split(",")] if FLAGS.only else range(len(table["rows"]))
    for i in picks:
      table["rows"][i] = record(table["rows"][i])
      print(f"row {i}: {table['rows'][i]['total_bytes'] / 2**30:.2f} GiB per device")
      with open(FLAGS.table, "w") as f:        # after each compile: minutes of work kept
        json.dump(table, f, indent=1)
  if FLAGS.fit:
    from synergen_jax.planning.calibrate import fit_memory
    print("CALIBRATION =", fit_memory(table["rows"]))


if __name__ == "__main__":
  app.run(main)
