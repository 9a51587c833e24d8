"""Weights & Biases, offline: a run stopped and resumed (a second train() on the same workdir) logs
into one W&B run, whose id the workdir keeps; the scalars and the preview images are in it. The
offline transaction logs (`run-<id>.wandb`) are read back here: W&B's record framing (LevelDB's log
format behind a ':W&B' header), each record a wandb Record proto."""

import glob
import json
import struct
import sys

import pytest

from synergen_jax.core.errors import ConfigError
from synergen_jax.train import wandb_run
from synergen_jax.train.loop import train

BLOCK = 32768          # the log's block size: a record header never straddles two blocks


def wandb_records(path: str) -> list:
  from wandb.proto import wandb_internal_pb2
  data = open(path, "rb").read()
  assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
  records, pos, pieces = [], 7, b""
  while pos + 7 <= len(data):
    left = BLOCK - pos % BLOCK
    _, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
    if left < 7 or (kind == 0 and n == 0):      # a block's zero-filled tail
      pos += left
      continue
    pieces += data[pos + 7:pos + 7 + n]
    pos += 7 + n
    if kind in (1, 4):                          # FULL, or LAST of FIRST/MIDDLE/LAST
      record = wandb_internal_pb2.Record()
      record.ParseFromString(pieces)
      records.append(record)
      pieces = b""
  return records


def test_offline_runs_stopped_and_resumed_log_into_one_wandb_run(tiny_data, tmp_path, monkeypatch):
  pytest.importorskip("wandb")
  monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_dir"))
  monkeypatch.setenv("WANDB_SILENT", "true")
  (tmp_path / "wandb_dir").mkdir()
  config = tiny_data["config"].copy_and_resolve_references()
  config.train.update(steps=2, log_every=1, eval_every=2, eval_batches=1, checkpoint_every=1,
                      preview_images=2)
  config.train.wandb.update(mode="offline", project="synergen-test")
  workdir = str(tmp_path / "run")
  train(config, workdir, stop_after=1)
  run_id = (tmp_path / "run" / wandb_run.ID_FILE).read_text().strip()
  train(config, workdir)                                    # resumes at step 1
  assert (tmp_path / "run" / wandb_run.ID_FILE).read_text().strip() == run_id

  logs = sorted(glob.glob(str(tmp_path / "wandb_dir" / "wandb" / "offline-run-*" / "run-*.wandb")))
  assert len(logs) == 2 and all(log.endswith(f"run-{run_id}.wandb") for log in logs), logs
  steps, keys = [], set()
  for log in logs:
    records = wandb_records(log)
    assert {r.run.run_id for r in records if r.WhichOneof("record_type") == "run"} == {run_id}
    for r in records:
      if r.WhichOneof("record_type") == "history":
        items = [(i.key or i.nested_key[0], i) for i in r.history.item]   # an image: its fields
        steps += [json.loads(i.value_json) for name, i in items if name == "step"]
        keys |= {name for name, _ in items}
  assert sorted(set(steps)) == [1, 2]                       # each process logged its own steps
  assert {"loss", "eval/loss/image", "previews/generated"} <= keys


def test_wandb_asked_for_but_not_installed_names_the_key_and_the_install(monkeypatch, tiny_data):
  config = tiny_data["config"].copy_and_resolve_references()
  config.train.wandb.mode = "online"
  monkeypatch.setitem(sys.modules, "wandb", None)           # `import wandb` raises ImportError
  with pytest.raises(ConfigError, match=r"config.train.wandb.mode='online' needs the wandb package: "
                                        r"pip install wandb"):
    wandb_run.check(config)
  config.train.wandb.mode = "on"
  with pytest.raises(ConfigError, match=r"config.train.wandb.mode='on'; choose one of"):
    wandb_run.check(config)
