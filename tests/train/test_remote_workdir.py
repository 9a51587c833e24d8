"""gs:// workdirs: paths keep their scheme and the trainer's small files go through etils.epath.

There is no GCS here: etils' own mock routes every gs:// path to a local folder, so the code under
test is exactly what runs against a bucket (Orbax's tensorstore writes are not covered by this)."""

import json
import os

import pytest
from etils import epath
from etils.epath import testing as epath_testing

from helpers import tiny
from synergen_jax.core.errors import ConfigError
from synergen_jax.train import checkpoint
from synergen_jax.train.metrics import MetricWriter


@pytest.fixture
def fake_bucket(tmp_path):
  def local(path):
    path = os.fspath(path)
    return str(tmp_path / path[len("gs://"):]) if path.startswith("gs://") else path

  def passthrough(fn, path, *args, **kwargs):
    return fn(local(path), *args, **kwargs)

  with epath_testing.mock_epath(open=passthrough, exists=passthrough, mkdir=passthrough,
                                makedirs=passthrough, isdir=passthrough, listdir=passthrough):
    yield tmp_path


def test_urls_are_not_made_local():
  assert os.fspath(checkpoint.workdir_path("gs://bucket/run")) == "gs://bucket/run"
  assert os.fspath(checkpoint.workdir_path("relative/run")) == os.path.abspath("relative/run")


def test_metrics_and_config_go_to_the_bucket(fake_bucket):
  os.makedirs(fake_bucket / "bucket" / "run")
  writer = MetricWriter("gs://bucket/run", total_steps=4)
  writer.write(1, {"loss": 2.5})
  writer.write(2, {"loss": float("nan")})
  writer.close()
  resumed = MetricWriter("gs://bucket/run", total_steps=4)    # a resumed run keeps the earlier lines
  resumed.write(3, {"loss": 1.5})
  resumed.close()
  rows = [json.loads(l) for l in open(fake_bucket / "bucket" / "run" / "metrics.jsonl")]
  assert rows == [{"step": 1, "loss": 2.5}, {"step": 2, "loss": None}, {"step": 3, "loss": 1.5}]

  config, _ = tiny()
  checkpoint.check_workdir_config("gs://bucket/run", config)
  saved = json.load(open(fake_bucket / "bucket" / "run" / "config.json"))
  assert saved["model"]["d_model"] == config.model.d_model
  os.makedirs(fake_bucket / "bucket" / "run" / "checkpoints")
  other, _ = tiny("fold=1x1")
  with pytest.raises(ConfigError, match="holds checkpoints of a different model"):
    checkpoint.check_workdir_config("gs://bucket/run", other)
  assert epath.Path("gs://bucket/run/config.json").exists()
