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


def test_ablation_sweeps_load_on_the_qwen2_config_with_stage_and_tiles():
  """The fold-ratio sweep on the ablation config (it once failed: 'unknown config argument stage')
  and Tab. 6; their runlocal variants are the config's tiny stand-in on MNIST-5k."""
  folds = sweep_cli.load_sweep(os.path.join(ROOT, "configs/sweeps/fold_ratio.py:model=ablation"))
  for p in folds.points:
    config = sweep_cli.point_config(folds, p)
    assert config.model.num_layers == 24 and config.stage == "sft"
    assert tuple(config.model.fold) == tuple(int(x) for x in p["name"][5:].split("x"))
  tab6 = sweep_cli.load_sweep(os.path.join(ROOT, "configs/sweeps/token_folding.py"))
  slots = {}
  for p in tab6.points:
    c = sweep_cli.point_config(tab6, p)
    (gh, gw), (fh, fw) = c.model.code_grid, c.model.fold
    tiles = c.data.max_tiles + (1 if c.data.thumbnail and c.data.max_tiles > 1 else 0)
    slots[p["name"]] = tiles * (gh // fh) * (gw // fw)
  assert slots == {"nofold_256": 1024, "fold_2x4_dynamic": 1024}   # equal length per image
  for spec in ("fold_ratio.py:model=ablation,runlocal", "token_folding.py:runlocal"):
    small = sweep_cli.load_sweep(os.path.join(ROOT, "configs/sweeps", spec))
    for p in small.points:
      c = sweep_cli.point_config(small, p)
      assert c.model.num_layers == 2 and c.data.name == "mnist5k" and "suites" not in small.evaluate
  with pytest.raises(Exception, match="model='llama'; choose demo or ablation"):
    sweep_cli.load_sweep(os.path.join(ROOT, "configs/sweeps/fold_ratio.py:model=llama"))


def test_suite_evaluated_points_print_suite_commands_and_finish_only_with_every_suite(tmp_path,
                                                                                    capsys):
  spec = os.path.join(ROOT, "configs/sweeps/token_folding.py:bench=gs://b/bench")
  sweep_cli.sweep_main(spec, str(tmp_path), print_only=True)
  lines = capsys.readouterr().out.strip().splitlines()
  assert len(lines) == 2 * 4
  assert lines[0].startswith("python -m synergen_jax.train --config "
                             "configs/qwen2_0p5b_ablation.py:fold=1x1,tiles=1,stage=1")
  assert lines[3] == (f"python -m synergen_jax.evaluate --workdir {tmp_path}/nofold_256 --suite "
                      "coco_fid --data gs://b/bench/coco_prompts.jsonl --reference "
                      "gs://b/bench/coco_ref.npz --inception_weights gs://b/bench/pt_inception.pth "
                      "--cfg 3.0 --top_k 0")
  # A point is summarised once every suite has written its scores into eval.json.
  point = tmp_path / "p"
  point.mkdir()
  (point / "metrics.jsonl").write_text("".join(json.dumps(
      {"step": s, "loss": 2.0 / s, "loss/text": 1.0, "loss/image": 1.0, "examples_per_sec": 10.0 * s,
       "tokens_per_sec": 100.0 * s}) + "\n" for s in (1, 2, 3)))
  (point / "config.json").write_text(json.dumps({"model": {"fold": [2, 4]}}))
  report = {"caption": {"cider": 0.4, "step": 3, "captions_per_second": 9.0}}
  (point / "eval.json").write_text(json.dumps(report))
  names = ("caption", "vqa")
  assert sweep_cli.summary_row("p", str(point), names) is None
  report["vqa"] = {"accuracy": 0.25, "answers_per_second": 3.0, "data": "v.jsonl"}
  (point / "eval.json").write_text(json.dumps(report))
  row = sweep_cli.summary_row("p", str(point), names)
  assert row["caption/cider"] == 0.4 and row["vqa/accuracy"] == 0.25 and row["fold"] == "2x4"
  assert "caption/step" not in row and "vqa/answers_per_second" not in row
  assert row["examples_per_sec"] == 25.0 and row["final_loss"] == 2.0 / 3    # steps 2-3 timed
  sweep_cli.write_summary([row], str(tmp_path))
  (written,) = csv.DictReader(open(tmp_path / "summary.csv"))
  assert float(written["caption/cider"]) == 0.4 and float(written["vqa/accuracy"]) == 0.25


def test_plan_prints_each_points_time_and_cost_and_folding_makes_steps_cheaper():
  sweep = sweep_cli.load_sweep(os.path.join(ROOT, "configs/sweeps/fold_ratio.py:model=ablation"))
  lines = sweep_cli.plan_lines(sweep, "v5p-64")
  assert [l.split(":")[0] for l in lines] == ["fold_1x1", "fold_2x2", "fold_2x4", "fold_4x4"]
  seconds = [float(l.split("as configured")[1].split(", ")[1].split(" s/step")[0]) for l in lines]
  # A finer fold packs more images into the same 2,048 slots: more work per step, never less.
  assert seconds == sorted(seconds) and seconds[0] < seconds[-1]
  with pytest.raises(Exception, match="v9z"):
    sweep_cli.plan_lines(sweep, "v9z-8")
