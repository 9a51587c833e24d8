"""Sweeps: the fold-ratio sweep file, running points, the summary files, printed commands."""

import csv
import importlib.util
import json
import os

import pytest

from helpers import ROOT, config_path

_spec = importlib.util.spec_from_file_location("sweep_cli", os.path.join(ROOT, "launch", "sweep.py"))
sweep_cli = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sweep_cli)


def test_fold_ratio_sweep_covers_the_ablation_and_runlocal_shrinks_it():
  full = sweep_cli.load_sweep(os.path.join(ROOT, "configs/sweeps/fold_ratio.py"))
  small = sweep_cli.load_sweep(os.path.join(ROOT, "configs/sweeps/fold_ratio.py") + ":runlocal")
  assert [p["name"] for p in full.points] == ["fold_1x1", "fold_2x2", "fold_2x4", "fold_4x4"]
  for p in small.points:
    config = sweep_cli.point_config(small, p)
    assert config.train.steps == 40 and tuple(config.model.fold) == tuple(
        int(x) for x in p["name"][5:].split("x"))
  assert small.evaluate["count"] < full.evaluate["count"]


def test_sweep_runs_points_resumes_and_summarises(tiny_data, tmp_path, monkeypatch):
  monkeypatch.setenv("SYNERGEN_CACHE", str(tmp_path / "cache"))
  monkeypatch.chdir(ROOT)
  sweep_file = tmp_path / "tiny_sweep.py"
  sweep_file.write_text(f'''
import ml_collections
def get_sweep(arg=None):
  s = ml_collections.ConfigDict()
  s.config = {config_path("tiny.py")!r}
  over = {{"train.steps": 6, "train.log_every": 2, "data.path": {tiny_data["data_dir"]!r}}}
  s.points = [dict(name="fold_" + f, arg="fold=" + f + ",stage=sft", overrides=over)
              for f in ("2x2", "2x4")]
  s.evaluate = dict(count=20, per_class=1, cfg_scale=2.0, top_k=4)
  return s
''')
  out = str(tmp_path / "sweep")
  rows = sweep_cli.sweep_main(str(sweep_file), out)
  assert [r["fold"] for r in rows] == ["2x2", "2x4"]
  table = list(csv.DictReader(open(os.path.join(out, "summary.csv"))))
  for row, name in zip(table, ("fold_2x2", "fold_2x4")):
    report = json.load(open(os.path.join(out, name, "eval.json")))
    assert float(row["prompt_accuracy"]) == report["generation"]["prompt_accuracy"]
    assert int(row["steps"]) == 6 and float(row["examples_per_sec"]) > 0
  assert os.path.getsize(os.path.join(out, "summary.png")) > 0
  # Rerunning finds both points finished: nothing retrained, the same summary.
  before = os.path.getmtime(os.path.join(out, "fold_2x4", "eval.json"))
  assert sweep_cli.sweep_main(str(sweep_file), out) == rows
  assert os.path.getmtime(os.path.join(out, "fold_2x4", "eval.json")) == before


def test_print_only_gives_train_and_evaluate_commands(tmp_path, capsys):
  sweep_cli.sweep_main(os.path.join(ROOT, "configs/sweeps/fold_ratio.py"), str(tmp_path),
                       print_only=True)
  lines = capsys.readouterr().out.strip().splitlines()
  assert len(lines) == 8
  assert lines[0].startswith("python -m synergen_jax.train --config configs/demo.py:fold=1x1,stage=sft")
  assert lines[1].startswith(f"python -m synergen_jax.evaluate --workdir {tmp_path}/fold_1x1")


def test_bad_override_names_the_point(tmp_path):
  sweep = sweep_cli.load_sweep(os.path.join(ROOT, "configs/sweeps/fold_ratio.py"))
  point = dict(sweep.points[0], overrides={"train.stepz": 3})
  with pytest.raises(Exception, match="fold_1x1: override train.stepz"):
    sweep_cli.point_config(sweep, point)
