"""A run that lives in a bucket (a GCS emulator on loopback): the data cache (image tokenizer and
prepared data) is built into it, the workdir (Orbax checkpoints through tensorstore, config.json,
metrics.jsonl) is in it, and a SIGTERM-stopped run resumes from it with the losses of an
uninterrupted local run; its parameters come back from the bucket as the next stage's init_from."""

import json
import os
import signal
import threading

import numpy as np
import pytest

from helpers import events_in, run_config, tiny
from synergen_jax.core import storage
from synergen_jax.core.errors import ConfigError
from synergen_jax.parallel.failure import Preempted
from synergen_jax.train import checkpoint
from synergen_jax.train.loop import train


def test_bucket_paths_keep_their_scheme_and_local_ones_become_absolute():
  assert os.fspath(checkpoint.workdir_path("gs://bucket/run")) == "gs://bucket/run"
  assert os.fspath(checkpoint.workdir_path("relative/run")) == os.path.abspath("relative/run")


def test_a_bucket_workdir_refuses_another_model(gcs_bucket):
  config, _ = tiny()
  checkpoint.check_workdir_config(f"{gcs_bucket}/run", config)
  saved = json.loads(storage.path(f"{gcs_bucket}/run/config.json").read_text())
  assert saved["model"]["d_model"] == config.model.d_model
  storage.write_text(f"{gcs_bucket}/run/checkpoints/marker", "")
  other, _ = tiny("fold=1x1")
  with pytest.raises(ConfigError, match="holds checkpoints of a different model"):
    checkpoint.check_workdir_config(f"{gcs_bucket}/run", other)


def test_a_missing_bucket_stops_the_run_before_any_work(gcs_emulator, tiny_data, tmp_path):
  config = run_config(tiny_data, 2)
  with pytest.raises(ConfigError, match=r"--workdir=gs://not-a-bucket/run: bucket gs://not-a-bucket "
                     "does not exist"):
    train(config, "gs://not-a-bucket/run")


def test_cache_and_workdir_in_a_bucket_preempt_and_resume_like_one_run(
    gcs_bucket, tiny_data, reference_losses):
  workdir = f"{gcs_bucket}/run"
  config = run_config(tiny_data, 1000)             # far beyond the signal: the run cannot end first
  config.data.path = None                          # built into the bucket's data cache
  config.data.cache_dir = f"{gcs_bucket}/cache"
  config.train.checkpoint_every = 1000
  config.train.preview_images = 2                  # images in the bucket's events at the last pass

  def logged_steps():
    metrics = storage.path(workdir) / "metrics.jsonl"
    return [json.loads(l)["step"] for l in metrics.read_text().splitlines()] if metrics.exists() else []

  def preempt():
    import time
    while max(logged_steps(), default=0) < 2:
      time.sleep(0.2)
    os.kill(os.getpid(), signal.SIGTERM)
  threading.Thread(target=preempt, daemon=True).start()
  with pytest.raises(Preempted) as stopped:
    train(config, workdir)
  step = stopped.value.step
  assert [p.name for p in (storage.path(workdir) / "checkpoints").iterdir()] == [str(step)]
  entries = list(storage.path(f"{gcs_bucket}/cache").iterdir())
  assert len(entries) == 1 and (entries[0] / "vq" / "vq_config.json").exists()
  assert (entries[0] / "data" / "meta.json").exists()

  config.train.steps = step + 3
  result = train(config, workdir)
  rerun = result["losses"]
  assert sorted(rerun) == [step + 1, step + 2, step + 3]
  rows = [json.loads(l) for l in (storage.path(workdir) / "metrics.jsonl").read_text().splitlines()]
  logged = {row["step"]: row["loss"] for row in rows if "loss" in row}
  assert sorted(logged) == list(range(1, step + 4))          # both runs' rows, nothing lost
  np.testing.assert_allclose([logged[s] for s in sorted(logged)],
                             [reference_losses[s] for s in sorted(logged)], rtol=1e-5)
  # TensorBoard events in the bucket: each run's file, the losses, the last pass's preview images.
  values = [v for found in events_in(workdir).values() for v in found]
  assert sorted(s for s, tag, _ in values if tag == "loss") == list(range(1, step + 4))
  assert [s for s, tag, _ in values if tag == "previews/generated"] == [step + 3]

  # The next stage's init_from: the parameters come back from the bucket as they were trained.
  import jax
  params, at = checkpoint.restore_params(workdir, jax.tree.map(
      lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), result["state"]["params"]))
  assert at == step + 3
  jax.tree.map(np.testing.assert_array_equal, params, result["state"]["params"])
