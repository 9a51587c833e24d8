"""evaluate --suite vqa / caption: the batch job's answers scored, merged into eval.json beside the
class report, and equal to scoring the library's answers; bad benchmark records fail first."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from synergen_jax.core.errors import DataError
from synergen_jax.eval import captions, suites, vqa
from synergen_jax.infer import jobs, loader, tasks

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _images(tmp_path, n):
  rng = np.random.default_rng(1)
  os.makedirs(tmp_path / "img", exist_ok=True)
  for i in range(n):
    Image.fromarray(rng.integers(0, 255, (28, 28, 3), dtype=np.uint8)).save(tmp_path / "img" / f"{i}.png")
  return [str(tmp_path / "img" / f"{i}.png") for i in range(n)]


def _write(path, records):
  path.write_text("".join(json.dumps(r) + "\n" for r in records))
  return str(path)


def _library_answers(workdir, paths, question=None):
  model = loader.load(workdir)
  codes = [tasks.image_codes(model, np.asarray(Image.open(p))) for p in paths]
  return tasks.caption(model, codes, question=question)


def test_vqa_and_caption_suites_score_the_models_answers(tiny_workdir, tmp_path):
  import shutil
  workdir = str(tmp_path / "work")
  shutil.copytree(tiny_workdir, workdir)
  paths = _images(tmp_path, 4)
  answers = _library_answers(workdir, paths, "what digit is this?")
  # Human answers: the model's own answer for two records, so the accuracy is not trivially 0.
  records = [dict(image=p, question="what digit is this?",
                  answers=[answers[i]] * 3 + ["zebra"] * 7 if i < 2 else ["zebra"] * 10)
             for i, p in enumerate(paths)]
  data = _write(tmp_path / "vqa.jsonl", records)
  env = dict(os.environ, PYTHONPATH=ROOT, XLA_FLAGS="--xla_force_host_platform_device_count=2")
  run = subprocess.run([sys.executable, "-m", "synergen_jax.evaluate", "--workdir", workdir, "--suite",
                        "vqa", "--data", data, "--batch_size", "2"], capture_output=True, text=True,
                       env=env, cwd=ROOT, timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  report = json.load(open(os.path.join(workdir, "eval.json")))
  want = vqa.scores([(a, r["answers"]) for a, r in zip(answers, records)])
  for key in ("accuracy", "exact_match", "anls", "count"):
    assert report["vqa"][key] == pytest.approx(want[key]), key
  # 3 of 10 humans agree on two records: 0.9 each (leave-one-out: 3 subsets 2/3, 7 subsets 1).
  assert report["vqa"]["accuracy"] == pytest.approx(0.45) and report["vqa"]["step"] == 60

  cap_records = [dict(image=p, captions=["a seven", "the digit seven", "seven"]) for p in paths]
  cap_data = _write(tmp_path / "captions.jsonl", cap_records)
  settings = jobs.JobSettings(batch_size=1)
  result = suites.caption(workdir, cap_data, settings, log=lambda _: None)
  suites.merge_into(os.path.join(workdir, "eval.json"), "caption", result)
  generated = _library_answers(workdir, paths)
  want = captions.scores({f"{i + 1:08d}": g for i, g in enumerate(generated)},
                         {f"{i + 1:08d}": r["captions"] for i, r in enumerate(cap_records)})
  assert result["cider"] == pytest.approx(want["cider"]) and result["bleu_4"] == pytest.approx(want["bleu_4"])
  report = json.load(open(os.path.join(workdir, "eval.json")))
  assert set(report) == {"vqa", "caption"} and report["caption"]["count"] == 4


def test_suites_refuse_bad_records_before_loading_a_model(tmp_path):
  data = _write(tmp_path / "vqa.jsonl", [dict(image="x.png", question="q?", answers=[])])
  with pytest.raises(DataError, match=r"vqa.jsonl:1: \"answers\" must be a non-empty list"):
    suites.vqa(str(tmp_path / "no_such_workdir"), data, jobs.JobSettings())
  data = _write(tmp_path / "caps.jsonl", [dict(image="x.png")])
  with pytest.raises(DataError, match=r"caps.jsonl:1: missing \"captions\""):
    suites.caption(str(tmp_path / "no_such_workdir"), data, jobs.JobSettings())


def test_merge_keeps_the_other_numbers(tmp_path):
  path = str(tmp_path / "eval.json")
  json.dump({"understanding": {"caption_accuracy": 0.9}}, open(path, "w"))
  suites.merge_into(path, "fid", {"fid": 12.5})
  suites.merge_into(path, "fid", {"fid": 11.0})
  assert json.load(open(path)) == {"understanding": {"caption_accuracy": 0.9}, "fid": {"fid": 11.0}}


def test_two_processes_share_the_job_and_process_0_alone_scores_it_all(tiny_workdir, tmp_path):
  """evaluate --suite vqa --benchmark vqav2 as processes 0 and 1: each answers its 1 of the 2
  records; process 0 waits for process 1's share and writes the report of both (scored by the
  vqav2 rule from both index files); process 1 writes none."""
  import shutil
  from helpers import two_processes
  from synergen_jax.eval import benchmarks
  workdir = str(tmp_path / "work")
  shutil.copytree(tiny_workdir, workdir)
  records = [dict(image=p, question="what digit is this?", answers=["7"] * 4 + ["seven"] * 6)
             for p in _images(tmp_path, 2)]
  data = _write(tmp_path / "vqa.jsonl", records)
  command = [sys.executable, "-m", "synergen_jax.evaluate", "--workdir", workdir, "--suite", "vqa",
             "--benchmark", "vqav2", "--data", data, "--batch_size", "1", "--max_new_tokens", "4"]
  with two_processes(command, tmp_path, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu") as procs:
    codes = [p.wait(timeout=300) for p in procs]
  logs = [open(tmp_path / f"p{i}.log").read() for i in range(2)]
  assert codes == [0, 0], logs[0][-2000:] + logs[1][-2000:]
  assert "this process's share is done; process 0 writes" in logs[1]
  report = json.load(open(os.path.join(workdir, "eval.json")))["vqa"]
  job = os.path.join(workdir, "eval_vqa")
  assert sorted(f for f in os.listdir(job) if f.startswith("index")) == [
      "index-00000-of-00002.jsonl", "index-00001-of-00002.jsonl"]
  index = jobs.read_index(job)
  want = benchmarks.scores([(e["answer"], e["answers"]) for e in index.values()], "vqav2")
  assert report["count"] == 2 and report["benchmark"] == "vqav2"
  assert report["vqa_accuracy"] == pytest.approx(want["vqa_accuracy"])
