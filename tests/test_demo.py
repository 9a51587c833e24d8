"""The main job's driver: python -m synergen_jax.demo chains the stages and evaluates the last one."""

import json
import os

from helpers import config_path
from synergen_jax import demo


def test_demo_chains_stages_evaluates_and_resumes(tmp_path, monkeypatch):
  monkeypatch.setenv("SYNERGEN_CACHE", str(tmp_path / "cache"))   # a fresh machine: nothing cached
  workdir = str(tmp_path / "demo")
  report = demo.run(workdir, config_path("tiny.py") + ":fold=2x2", cfg_scale=2.0, top_k=8)
  for name in ("stage1", "stage2", "sft"):
    assert report[name]["steps"] == 30 and report[name]["eval/examples"] > 0
    assert json.load(open(os.path.join(workdir, name, "config.json")))["stage"] == name.replace(
        "stage", "")
  # Each stage starts from the previous one's parameters.
  assert json.load(open(os.path.join(workdir, "sft", "config.json")))["train"]["init_from"] == \
      os.path.join(workdir, "stage2")
  evaluation = json.load(open(os.path.join(workdir, "sft", "eval.json")))
  assert evaluation["understanding"]["caption_accuracy"] == report["evaluation"]["understanding"][
      "caption_accuracy"]
  assert evaluation["generation"]["images"] == 200 and evaluation["generation"]["cfg_scale"] == 2.0
  for png in ("eval_samples.png", "eval_captions.png"):
    assert os.path.getsize(os.path.join(workdir, "sft", png)) > 0
  assert json.load(open(os.path.join(workdir, "demo.json")))["total_seconds"] > 0
  # Rerunning finds every stage finished: nothing is trained again, the evaluation is the same.
  again = demo.run(workdir, config_path("tiny.py") + ":fold=2x2", cfg_scale=2.0, top_k=8)
  assert again["evaluation"]["understanding"] == report["evaluation"]["understanding"]
  assert again["sft"]["final_loss"] is None
