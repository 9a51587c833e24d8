import os

import pytest

BIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bin")


@pytest.fixture
def cluster(tmp_path):
  """The environment of a shell on a machine whose gcloud, sbatch, srun, scontrol, gcsfuse, uv and
  curl are the fakes in tests/cluster/bin, with their state under tmp_path/cluster."""
  state = tmp_path / "cluster"
  state.mkdir()
  env = dict(os.environ, PATH=f"{BIN}:{os.environ['PATH']}", FAKE_CLUSTER_DIR=str(state))
  env.pop("XLA_FLAGS", None)
  return dict(env=env, state=state)


def calls(cluster, tool=None):
  import json
  path = cluster["state"] / "calls.jsonl"
  rows = [json.loads(line) for line in open(path)] if path.exists() else []
  return [r["argv"] for r in rows if tool is None or r["tool"] == tool]
