"""launch/tpu_pod.sh against a simulated Cloud TPU VM slice (fake gcloud/uv/gcsfuse/curl,
tests/cluster/bin): `up` then `train` on 2 workers x 4 simulated chips trains configs/tiny.py with
the losses of one process, the workers learning who they are from the metadata server and reading
the data through a gcsfuse-mounted bucket; `preflight` refuses a slice the step does not fit before
anything is created; uncommitted changes are refused unless shipped on purpose."""

import os
import subprocess
import sys

import numpy as np
import pytest

from helpers import ROOT, RUN_FLAGS, calls, free_port, losses_of


def _pod(cluster, *args, **env):
  return subprocess.run(["bash", "launch/tpu_pod.sh", *args], cwd=ROOT, capture_output=True, text=True,
                        timeout=600, env=dict(cluster["env"], **env))


def test_up_then_train_on_two_workers_equals_one_process(cluster, tiny_data, reference_losses, tmp_path):
  bucket = cluster["state"] / "buckets" / "bkt"
  bucket.mkdir(parents=True)
  os.symlink(tiny_data["data_dir"], bucket / "prepared")
  env = dict(FAKE_TPU_WORKERS="2", TPU_NAME="pod", ACCELERATOR_TYPE="v5litepod-8", SPOT="1",
             CONFIG="configs/tiny.py", SKIP_PREFLIGHT="1", SHIP_DIRTY="1", FAKE_PYTHON=sys.executable,
             COORDINATOR_PORT=str(free_port()), DATA="gs://bkt/prepared", WORKDIR=str(tmp_path / "run"))
  up = _pod(cluster, "up", **env)
  assert up.returncode == 0, up.stderr[-3000:]
  assert ["compute", "tpus", "queued-resources", "create", "pod", "--node-id", "pod", "--accelerator-type",
          "v5litepod-8", "--runtime-version", "v2-alpha-tpuv5-lite", "--spot", "--zone", "us-east5-a"] in calls(cluster, "gcloud")
  assert ["venv", "-q", "--python", "3.11"] == calls(cluster, "uv")[0][:4]
  homes = [cluster["state"] / "tpus" / "pod" / f"worker_{i}" for i in range(2)]
  for home in homes:                              # the working tree, shipped to every worker
    assert (home / "synergen_jax" / "synergen_jax" / "parallel" / "failure.py").exists()

  train = _pod(cluster, "train", "--", "--config.train.steps=4", *RUN_FLAGS, **env)
  assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-3000:]
  assert "train: done at step 4" in train.stdout                 # worker 0's log, followed
  for i in range(2):
    assert f"worker {i} (" in train.stderr and "exited with status 0" in train.stderr
  losses = losses_of(str(tmp_path / "run"))
  np.testing.assert_allclose([losses[s] for s in range(1, 5)], [reference_losses[s] for s in range(1, 5)], rtol=1e-5)
  mounts = calls(cluster, "gcsfuse")
  assert sorted(m[-1] for m in mounts) == sorted(str(h / "gcs" / "bkt") for h in homes)
  assert {tuple(c[-1:]) for c in calls(cluster, "curl")} >= {
      ("http://metadata.google.internal/computeMetadata/v1/instance/attributes/agent-worker-number",)}

  logs = _pod(cluster, "logs", "all", FOLLOW="0", **env)
  assert "[worker 1] distributed: process 1 of 2, 4 local cpu devices" in logs.stdout, logs.stdout[-2000:]
  status = _pod(cluster, "status", **env)
  assert sorted(line.split()[1] + ":" + line.split()[3] for line in status.stdout.splitlines()
                if not line.startswith("+")) == ["0:0", "1:0"]


def test_preflight_refuses_a_slice_the_step_does_not_fit_before_creating_it(cluster):
  pytest.importorskip("libtpu", reason="the preflight compiles for TPU: pip install -e '.[tpu]'")
  big = ["--config.model.d_model=8192", "--config.model.mlp_dim=32768"]     # 12 GiB of parameters per chip
  r = _pod(cluster, "up", "--", *big, CONFIG="configs/tiny.py", ACCELERATOR_TYPE="v5litepod-4", SHIP_DIRTY="1")
  assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-2000:]
  assert "DOES NOT FIT" in r.stdout and "nothing was created" in r.stderr
  assert calls(cluster, "gcloud") == []


def test_uncommitted_changes_are_refused_unless_shipped(cluster, tmp_path):
  repo = tmp_path / "repo"
  (repo / "launch").mkdir(parents=True)
  (repo / "launch" / "tpu_pod.sh").write_text(open(ROOT / "launch" / "tpu_pod.sh").read())
  git = lambda *a: subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *a], cwd=repo, check=True,
                                  capture_output=True)
  git("init", "-q")
  git("add", ".")
  git("commit", "-qm", "x")
  (repo / "my_config.py").write_text("# edited, not committed\n")
  run = lambda **env: subprocess.run(["bash", "launch/tpu_pod.sh", "--dry-run", "up"], cwd=repo, capture_output=True,
                                     text=True, env=dict(cluster["env"], SKIP_PREFLIGHT="1", **env))
  refused = run()
  assert refused.returncode == 2 and "my_config.py" in refused.stderr and "SHIP_DIRTY=1" in refused.stderr
  assert "create" not in refused.stdout
  shipped = run(SHIP_DIRTY="1")
  assert shipped.returncode == 0 and "tpu-vm create synergen --accelerator-type v5p-128 --version v2-alpha-tpuv5" in shipped.stdout
  assert "ls-files" in shipped.stdout and "--spot" not in shipped.stdout
