"""prepare writes one part per input shard: a rerun, a kill -9, several processes (also as TPU
workers started by launch/tpu_pod.sh prepare) or decode workers all end in the same prepared set as
one uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from grain.sources import ArrayRecordDataSource

from helpers import ROOT, calls
from synergen_jax.core import storage
from synergen_jax.core.errors import DataError
from synergen_jax.prepare.writer import prepare

PER_SHARD = 150          # digits: 1,697 training records -> 12 train parts, 1 eval part


def _config(tiny_data, **data):
  config = tiny_data["config"].copy_and_resolve_references()
  config.data.update(name="digits", records_per_shard=PER_SHARD, path=None, **data)
  return config


def _examples(directory, meta):
  """Every record of both splits, in the order the merged meta lists them."""
  out = {}
  for split, entry in meta["splits"].items():
    source = ArrayRecordDataSource([os.path.join(directory, f) for f in entry["shards"]])
    out[split] = [source[i] for i in range(len(source))]
  return out


@pytest.fixture(scope="module")
def reference(tiny_data, tmp_path_factory):
  out = str(tmp_path_factory.mktemp("reference"))
  meta = prepare(_config(tiny_data), out, tiny_data["image_tokenizer"])
  return meta, _examples(out, meta)


def _strip(meta):
  return {k: v for k, v in meta.items() if k != "seconds"}


def test_parts_are_the_input_shards(reference):
  meta, examples = reference
  assert meta["parts"] == 13 and len(meta["splits"]["train"]["shards"]) == 12
  assert meta["splits"]["train"]["records"] + meta["splits"]["eval"]["records"] == 1797
  assert sum(meta["splits"]["train"]["shard_sizes"]) == len(examples["train"])


def test_rerun_writes_nothing_and_gives_the_same_set(tiny_data, reference, tmp_path):
  config = _config(tiny_data)
  meta = prepare(config, str(tmp_path), tiny_data["image_tokenizer"])
  parts = sorted((tmp_path / "parts").iterdir())
  stamps = {p: p.stat().st_mtime_ns for p in parts}
  again = prepare(config, str(tmp_path), tiny_data["image_tokenizer"])
  assert {p: p.stat().st_mtime_ns for p in sorted((tmp_path / "parts").iterdir())} == stamps
  assert _strip(again) == _strip(meta) == _strip(reference[0])


def test_two_processes_and_the_merge_equal_one_process(tiny_data, reference, tmp_path):
  config = _config(tiny_data)
  first = prepare(config, str(tmp_path), tiny_data["image_tokenizer"], num_shards=2, shard_index=0)
  assert first is None                               # process 1's parts are still missing
  with pytest.raises(DataError, match="parts are not written yet"):
    from synergen_jax.prepare.writer import merge_only
    merge_only(config, str(tmp_path), tiny_data["image_tokenizer"])
  meta = prepare(config, str(tmp_path), tiny_data["image_tokenizer"], num_shards=2, shard_index=1)
  assert _strip(meta) == _strip(reference[0])
  assert _examples(str(tmp_path), meta) == reference[1]


def test_worker_processes_write_the_same_records(tiny_data, reference, tmp_path):
  meta = prepare(_config(tiny_data), str(tmp_path), tiny_data["image_tokenizer"], workers=2)
  assert _examples(str(tmp_path), meta) == reference[1]


def test_a_part_of_other_settings_is_refused(tiny_data, tmp_path):
  prepare(_config(tiny_data), str(tmp_path), tiny_data["image_tokenizer"])
  changed = _config(tiny_data, p_uncond=0.5)
  with pytest.raises(DataError, match="written with other prepare settings"):
    prepare(changed, str(tmp_path), tiny_data["image_tokenizer"])


@pytest.mark.parametrize("where", ["local", "bucket"])
def test_kill_9_then_rerun_equals_an_uninterrupted_run(tiny_data, reference, tmp_path, where, request):
  """The command line killed after some parts: the rerun writes the rest, the set is the same; into
  a folder, and into a bucket (a GCS emulator), where a part is one upload and nothing is renamed."""
  out = storage.path(request.getfixturevalue("gcs_bucket") + "/out" if where == "bucket"
                     else tmp_path / "out")
  cmd = [sys.executable, "-m", "synergen_jax.prepare", "--config", str(ROOT / "configs/tiny.py"),
         "--config.data.name=digits", f"--config.data.records_per_shard={PER_SHARD}",
         "--vq_workdir", tiny_data["vq_dir"], "--out", str(out)]
  # The same 8 devices as the reference: the image tokenizer's batch split can flip a float tie.
  env = dict(os.environ)
  proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
  deadline = time.time() + 120
  finished = lambda: {p.name for p in (out / "parts").glob("*.json")}
  while time.time() < deadline and proc.poll() is None:
    if len(finished()) >= 3:
      break
    time.sleep(0.005 if where == "local" else 0.05)
  assert proc.poll() is None, proc.stdout.read().decode()[-2000:]
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  done = finished()
  assert 3 <= len(done) < 13 and not (out / "meta.json").exists()
  rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
  assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]
  written = [line for line in rerun.stdout.splitlines() if line.startswith("prepare: ")]
  assert len(written) == 13 - len(done), rerun.stdout     # finished parts were not redone
  meta = json.loads((out / "meta.json").read_text())
  assert _examples(str(out), meta) == reference[1]
  assert not [p.name for p in (out / "parts").iterdir() if ".tmp" in p.name]   # the dead run's too


def test_tpu_workers_prepare_their_shares_and_the_last_merges(gcs_bucket, cluster, tiny_data, reference):
  """`launch/tpu_pod.sh prepare` on 2 simulated TPU workers (tests/cluster/bin): each worker learns
  its id and peers from the metadata server, prepares its share of the input shards into a bucket
  (a GCS emulator), the last to finish merges, and the set equals one process's (8 devices per
  worker, as in the reference, so the tokenizer's batch split is the same)."""
  out = f"{gcs_bucket}/digits"
  env = dict(FAKE_TPU_WORKERS="2", FAKE_TPU_CHIPS="8", CONFIG="configs/tiny.py", SKIP_PREFLIGHT="1",
             SHIP_DIRTY="1", FAKE_PYTHON=sys.executable, PREPARE_OUT=out,
             STORAGE_EMULATOR_HOST=os.environ["STORAGE_EMULATOR_HOST"])
  pod = lambda *args: subprocess.run(["bash", "launch/tpu_pod.sh", *args], cwd=ROOT, capture_output=True,
                                     text=True, timeout=600, env=dict(cluster["env"], **env))
  up = pod("up")
  assert up.returncode == 0, up.stderr[-3000:]
  run = pod("prepare", "--", "--config.data.name=digits", f"--config.data.records_per_shard={PER_SHARD}",
            "--vq_workdir", tiny_data["vq_dir"])
  assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
  assert run.stdout.count(" examples from ") == 13          # 13 parts in all (the workers interleave lines)
  assert run.stdout.count("merge when the others are done") <= 1                       # the last one merged
  meta = json.loads(storage.path(f"{out}/meta.json").read_text())
  assert _examples(out, meta) == reference[1]


def test_launcher_environments_give_the_share():
  from synergen_jax.data.inputs import launcher_shard
  assert launcher_shard({}) == (1, 0)
  assert launcher_shard(dict(SLURM_NTASKS="4", SLURM_PROCID="3")) == (4, 3)
  assert launcher_shard(dict(TPU_WORKER_HOSTNAMES="h0,h1,h2,h3", TPU_WORKER_ID="1")) == (4, 1)
