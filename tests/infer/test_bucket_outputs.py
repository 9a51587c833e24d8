"""Inference and evaluation outputs on a bucket (a GCS emulator on loopback): a batch job writes the
same images and index rows into gs:// as into a folder, resumes there after a stop, and a rerun
writes nothing; the evaluation report of a workdir on a bucket equals the one of the same workdir
on disk."""

import json
import os
import shutil

import fsspec
import orbax.checkpoint as ocp
import pytest
from etils import epath

from synergen_jax.core import storage
from synergen_jax.core.config import validate_config
from synergen_jax.core.errors import ConfigError
from synergen_jax.eval import suites
from synergen_jax.eval.report import evaluate_workdir
from synergen_jax.infer import jobs, loader
from synergen_jax.infer.decode import Sampling
from synergen_jax.train import checkpoint

SETTINGS = jobs.JobSettings(num=2, cfg_scale=3.0, sampling=Sampling(temperature=1.0), seed=4,
                            batch_size=2)
QUIET = dict(log=lambda _: None)


def _objects(root: str) -> dict[str, tuple[int, str]]:
  """Every object under a gs:// path: name relative to root -> (size, generation). A generation
  changes whenever an object is written again, even with the same bytes."""
  fs = fsspec.filesystem("gs")
  fs.invalidate_cache()          # a listing cached before the last writes would hide them
  prefix = root[len("gs://"):]
  found = fs.find(prefix, detail=True)
  assert all(info.get("generation") for info in found.values()), "the emulator gives no generations"
  return {name[len(prefix) + 1:]: (info["size"], info["generation"]) for name, info in found.items()}


def _local_files(root: str) -> dict[str, bytes]:
  return {os.path.relpath(os.path.join(d, f), root): open(os.path.join(d, f), "rb").read()
          for d, _, files in os.walk(root) for f in files}


@pytest.fixture(scope="module")
def model(tiny_workdir):
  return loader.load(tiny_workdir)


def test_a_batch_job_on_a_bucket_writes_what_it_writes_locally_and_resumes(model, gcs_bucket, tmp_path):
  prompts = tmp_path / "prompts.jsonl"
  prompts.write_text("".join(json.dumps(dict(prompt=p)) + "\n" for p in ["seven", "three"]))
  local, remote = str(tmp_path / "local"), f"{gcs_bucket}/jobs/run"
  assert jobs.run_job(model, str(prompts), local, SETTINGS, **QUIET)["generated"] == 4
  assert jobs.run_job(model, str(prompts), remote, SETTINGS, **QUIET)["generated"] == 4

  pngs = {name: data for name, data in _local_files(local).items() if name.startswith("images/")}
  assert len(pngs) == 4
  objects = _objects(remote)
  # Two batches of two: their images, and one index object per batch (objects cannot be appended to).
  assert sorted(objects) == sorted(pngs) + ["index-00000-of-00001-part-000000.jsonl",
                                            "index-00000-of-00001-part-000001.jsonl"]
  for name, data in pngs.items():
    assert (epath.Path(remote) / name).read_bytes() == data, name
  assert jobs.read_index(remote) == jobs.read_index(local)

  # A rerun finds everything done and writes nothing (no object is written again).
  again = jobs.run_job(model, str(prompts), remote, SETTINGS, **QUIET)
  assert (again["generated"], again["done_before"]) == (0, 4)
  assert _objects(remote) == objects

  # A stop in the second batch: one image uploaded, the other and the batch's index never written.
  # The rerun does those two items again; the first batch's objects stay as they were.
  part = epath.Path(remote) / "index-00000-of-00001-part-000001.jsonl"
  second = [json.loads(line)["file"] for line in part.read_text().splitlines()]
  part.unlink()
  (epath.Path(remote) / second[1]).unlink()
  resumed = jobs.run_job(model, str(prompts), remote, SETTINGS, **QUIET)
  assert (resumed["generated"], resumed["done_before"]) == (2, 2)
  after = _objects(remote)
  assert sorted(after) == sorted(objects)
  untouched = lambda found: {k: v for k, v in found.items() if k not in second + [part.name]}
  assert untouched(after) == untouched(objects) and len(untouched(after)) == 3
  assert [json.loads(line)["file"] for line in part.read_text().splitlines()] == second
  for name, data in pngs.items():
    assert (epath.Path(remote) / name).read_bytes() == data, name
  assert jobs.read_index(remote) == jobs.read_index(local)


def test_a_missing_bucket_is_one_error_before_any_work(model, gcs_emulator, tmp_path):
  prompts = tmp_path / "prompts.jsonl"
  prompts.write_text(json.dumps(dict(prompt="seven")) + "\n")
  with pytest.raises(ConfigError, match=r"out_dir=gs://no-such-bucket-here/run: bucket .* does not exist"):
    jobs.run_job(model, str(prompts), "gs://no-such-bucket-here/run", SETTINGS, **QUIET)
  with pytest.raises(ConfigError, match="looks like a bucket path without '//'"):
    jobs.run_job(model, str(prompts), "gs:/bucket/run", SETTINGS, **QUIET)


def _bucket_workdir(workdir: str, target: str) -> None:
  """The trained workdir as a run on a bucket leaves it: its config.json, and its parameters saved
  there by Orbax at the same step (files of a local checkpoint copied up would lack the marker
  Orbax reads on a bucket to tell a finished checkpoint)."""
  storage.upload(os.path.join(workdir, "config.json"), f"{target}/config.json")
  params, step = checkpoint.restore_on_device(workdir, validate_config(checkpoint.read_config(workdir)))
  with ocp.CheckpointManager(epath.Path(target) / "checkpoints", item_names=("state",)) as manager:
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave({"params": params})))
    manager.wait_until_finished()


def test_an_eval_report_on_a_bucket_equals_the_local_one(tiny_workdir, gcs_bucket, tmp_path):
  local, remote = str(tmp_path / "run"), f"{gcs_bucket}/runs/tiny"
  shutil.copytree(tiny_workdir, local)
  _bucket_workdir(tiny_workdir, remote)
  for workdir in (local, remote):    # a suite's numbers already there must be kept
    suites.merge_into(os.fspath(epath.Path(workdir) / "eval.json"), "vqa", {"accuracy": 0.5})

  settings = dict(count=8, per_class=2, cfg_scale=3.0)
  ours, theirs = evaluate_workdir(remote, **settings), evaluate_workdir(local, **settings)
  assert ours["step"] == theirs["step"] == 60
  # As text: a section may hold NaN (a class with one image has no diversity), which != itself.
  without_time = lambda report: json.dumps({k: v for k, v in report.items() if k != "seconds"},
                                           sort_keys=True)
  assert without_time(ours) == without_time(theirs)
  saved = json.loads((epath.Path(remote) / "eval.json").read_text())
  assert saved["vqa"] == {"accuracy": 0.5}
  assert without_time(saved) == without_time(json.loads((epath.Path(local) / "eval.json").read_text()))
  for picture in ("eval_samples.png", "eval_captions.png"):
    assert (epath.Path(remote) / picture).read_bytes() == (epath.Path(local) / picture).read_bytes()
  assert not [name for name in _objects(remote) if name.endswith(".tmp")]
