"""Batch jobs (infer/jobs.py): resumed == uninterrupted, 8 devices == one device whatever shares a
batch, processes split the work, answers equal the library call, bad records are refused."""

import dataclasses
import json
import os

import numpy as np
import pytest
from PIL import Image

from synergen_jax.core.errors import DataError
from synergen_jax.infer import jobs, loader, tasks
from synergen_jax.infer.decode import Sampling

PROMPTS = ["seven", "three", "a one", "zero", "nine"]


def _write(path, records):
  path.write_text("".join(json.dumps(r) + "\n" for r in records))
  return str(path)


def _pngs(out_dir):
  folder = os.path.join(out_dir, "images")
  return {name: np.asarray(Image.open(os.path.join(folder, name))) for name in sorted(os.listdir(folder))}


@pytest.fixture(scope="module")
def models(tiny_workdir):
  return dict(one=loader.load(tiny_workdir), mesh=loader.load(tiny_workdir, mesh=loader.local_mesh()))


SETTINGS = jobs.JobSettings(num=2, cfg_scale=3.0, sampling=Sampling(temperature=1.0), seed=4,
                            batch_size=1)


def test_a_resumed_job_equals_an_uninterrupted_one_on_any_devices(models, tmp_path):
  prompts = _write(tmp_path / "prompts.jsonl",
                   [dict(prompt=p, **({"num": 3} if i == 0 else {})) for i, p in enumerate(PROMPTS)])
  full = str(tmp_path / "full")
  result = jobs.run_job(models["mesh"], prompts, full, SETTINGS, log=lambda _: None)
  assert (result["generated"], result["done_before"]) == (11, 0)     # 3 + 4 x 2 images, 8 per batch
  images = _pngs(full)
  assert len(images) == 11 and len({im.tobytes() for im in images.values()}) == 11

  # A stop after the first batch, mid-way through writing an index line (and an image not indexed).
  resumed = str(tmp_path / "resumed")
  os.makedirs(os.path.join(resumed, "images"))
  lines = open(os.path.join(full, "index-00000-of-00001.jsonl")).read().splitlines()
  kept = [json.loads(line) for line in lines[:8]]
  with open(os.path.join(resumed, "index-00000-of-00001.jsonl"), "w") as f:
    f.write("".join(line + "\n" for line in lines[:8]) + lines[8][:20])
  for entry in kept + [json.loads(lines[8])]:
    Image.fromarray(images[os.path.basename(entry["file"])]).save(os.path.join(resumed, entry["file"]))
  # ... resumed on one device, 3 prompts per batch: other batch-mates, other padding of the batch.
  again = jobs.run_job(models["one"], prompts, resumed, dataclasses.replace(SETTINGS, batch_size=3),
                       log=lambda _: None)
  assert (again["generated"], again["done_before"]) == (3, 8)
  assert _pngs(resumed).keys() == images.keys()
  for name, pixels in _pngs(resumed).items():
    np.testing.assert_array_equal(pixels, images[name], err_msg=name)
  index = jobs.read_index(resumed)
  assert sorted(index) == sorted(jobs.read_index(full)) and index[("00000001", 2)]["prompt"] == "seven"
  # Nothing left: a third run does no work.
  assert jobs.run_job(models["one"], prompts, resumed, SETTINGS, log=lambda _: None)["generated"] == 0


def test_processes_split_the_items_and_a_resume_reads_every_index(models, tmp_path, monkeypatch):
  prompts = _write(tmp_path / "prompts.jsonl", [dict(prompt=p, id=f"p{i}") for i, p in enumerate(PROMPTS)])
  out = str(tmp_path / "out")
  seen = []
  for process in range(2):
    monkeypatch.setenv("SYNERGEN_PROCESS_ID", str(process))
    monkeypatch.setenv("SYNERGEN_NUM_PROCESSES", "2")
    seen.append(jobs.run_job(models["one"], prompts, out, SETTINGS, log=lambda _: None)["generated"])
  assert seen == [5, 5]
  assert sorted(os.listdir(out)) == ["images", "index-00000-of-00002.jsonl", "index-00001-of-00002.jsonl"]
  monkeypatch.setenv("SYNERGEN_NUM_PROCESSES", "1")
  monkeypatch.setenv("SYNERGEN_PROCESS_ID", "0")
  assert jobs.run_job(models["one"], prompts, out, SETTINGS, log=lambda _: None)["done_before"] == 10
  # The split changed nothing: the same images as one process on 8 devices.
  single = str(tmp_path / "single")
  jobs.run_job(models["mesh"], prompts, single, SETTINGS, log=lambda _: None)
  for name, pixels in _pngs(single).items():
    np.testing.assert_array_equal(pixels, _pngs(out)[name], err_msg=name)


def test_answer_jobs_equal_the_library_call(models, tmp_path):
  rng = np.random.default_rng(0)
  os.makedirs(tmp_path / "img")
  pixels = [rng.integers(0, 255, (28, 28, 3), dtype=np.uint8) for _ in range(3)]
  for i, p in enumerate(pixels):
    Image.fromarray(p).save(tmp_path / "img" / f"{i}.png")
  records = [dict(image=f"img/{i}.png", question=q, answers=["7"])
             for i, q in enumerate(["what digit is this?", None, "is it odd?"])]
  for r in records:
    if r["question"] is None:
      del r["question"]
  path = _write(tmp_path / "vqa.jsonl", records)
  out = str(tmp_path / "answers")
  assert jobs.run_job(models["mesh"], path, out, SETTINGS, log=lambda _: None)["generated"] == 3
  index = jobs.read_index(out)
  model = models["one"]
  for i, r in enumerate(records):
    codes = tasks.image_codes(model, np.asarray(Image.open(tmp_path / "img" / f"{i}.png")))
    want = tasks.caption(model, [codes], question=r.get("question"))[0]
    entry = index[(f"{i + 1:08d}", 0)]
    assert entry["answer"] == want and entry["answers"] == ["7"]


@pytest.mark.parametrize("lines, message", [
    (['{"prompt": "a"}', '{"image": "x.png"}'], r":2: answer record in a file of generate records"),
    (['{"prompt": "a", "id": "x"}', '{"prompt": "b", "id": "x"}'], r":2: id 'x' is used twice"),
    (['{"caption": "a"}'], r":1: a record needs \"prompt\""),
    (['{"prompt": "a", "num": 0}'], r":1: \"num\" must be a positive integer"),
    (['{"prompt": ""}'], r":1: \"prompt\" must be a non-empty string"),
    (['not json'], r":1: not JSON"),
    ([], r"no records"),
])
def test_bad_records_are_refused_naming_the_line(tmp_path, lines, message):
  path = tmp_path / "bad.jsonl"
  path.write_text("\n".join(lines) + "\n")
  with pytest.raises(DataError, match=message):
    jobs.read_records(str(path))


def test_item_seeds_are_stable_and_distinct():
  seeds = {jobs.item_seed(0, f"p{i}", k) for i in range(50) for k in range(4)}
  assert len(seeds) == 200 and jobs.item_seed(0, "p1", 0) == jobs.item_seed(0, "p1", 0)
  assert jobs.item_seed(1, "p1", 0) != jobs.item_seed(0, "p1", 0)


def test_the_sample_cli_runs_a_job_with_the_library_results(models, tiny_workdir, tmp_path):
  """`sample --prompts` on 2 devices of a fresh process: the images the library gives on 8."""
  import subprocess
  import sys
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  prompts = _write(tmp_path / "prompts.jsonl", [dict(prompt=p) for p in PROMPTS[:3]])
  env = dict(os.environ, PYTHONPATH=root, XLA_FLAGS="--xla_force_host_platform_device_count=2")
  run = subprocess.run([sys.executable, "-m", "synergen_jax.sample", "--workdir", tiny_workdir,
                        "--prompts", prompts, "--out_dir", str(tmp_path / "cli"), "--per_prompt", "2",
                        "--cfg", "3", "--seed", "4", "--batch_size", "2"],
                       capture_output=True, text=True, env=env, cwd=root, timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  assert "6 new generate items (0 already done)" in run.stdout
  jobs.run_job(models["mesh"], prompts, str(tmp_path / "lib"), SETTINGS, log=lambda _: None)
  cli, lib = _pngs(str(tmp_path / "cli")), _pngs(str(tmp_path / "lib"))
  assert cli.keys() == lib.keys()
  for name in cli:
    np.testing.assert_array_equal(cli[name], lib[name], err_msg=name)


def test_process_0_waits_for_every_share_before_returning_the_index(models, tmp_path, monkeypatch):
  """wait_for_job: with process 1's share missing it waits (and gives up, naming process 1, when
  nothing moves); once process 1 finishes while it waits, it returns all items in the records'
  order and nothing of another job in the same folder."""
  prompts = _write(tmp_path / "prompts.jsonl", [dict(prompt=p, id=f"p{i}") for i, p in enumerate(PROMPTS)])
  out = str(tmp_path / "out")
  monkeypatch.setenv("SYNERGEN_NUM_PROCESSES", "2")
  monkeypatch.setenv("SYNERGEN_PROCESS_ID", "0")
  assert jobs.run_job(models["one"], prompts, out, SETTINGS, log=lambda _: None)["generated"] == 5
  with open(os.path.join(out, "index-00000-of-00002.jsonl"), "a") as f:    # another job's item
    f.write(json.dumps(dict(id="other", sample=0, answer="x")) + "\n")

  now = [0.0]
  def advance(seconds):
    now[0] += seconds
  with pytest.raises(TimeoutError, match=r"5 of 10 items still unfinished after 60 s without "
                                         r"progress \(process 1: 5 \(first: id 'p0' sample 1\)\)"):
    jobs.wait_for_job(out, prompts, SETTINGS, stall_s=60, poll_s=25, log=lambda _: None,
                      sleep=advance, clock=lambda: now[0])

  waits = []
  def other_process_finishes(seconds):
    waits.append(seconds)
    monkeypatch.setenv("SYNERGEN_PROCESS_ID", "1")
    jobs.run_job(models["one"], prompts, out, SETTINGS, log=lambda _: None)
    monkeypatch.setenv("SYNERGEN_PROCESS_ID", "0")
  index = jobs.wait_for_job(out, prompts, SETTINGS, poll_s=7, log=lambda _: None,
                            sleep=other_process_finishes)
  assert waits == [7]
  assert list(index) == [(f"p{i}", k) for i in range(5) for k in range(2)]
  assert all(os.path.exists(os.path.join(out, e["file"])) for e in index.values())
