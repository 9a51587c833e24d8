"""launch/tpu_pod.sh against a simulated Cloud TPU VM slice (fake gcloud/uv/curl, tests/cluster/bin):
`up` then `train` on 2 workers x 4 simulated chips trains configs/tiny.py with the losses of one
process, the workers learning who they are from the metadata server and reading the data from a
bucket (a GCS emulator); `preflight` refuses a slice the step does not fit before
anything is created; uncommitted changes are refused unless shipped on purpose. The slice's life:
`up` never reuses a preempted or suspended slice, `delete` finishes a half-deleted one, and `run`
brings training back by itself through a capacity error, a preemption and a suspension (the fake's
scripted incidents, $FAKE_CLUSTER_DIR/script.json), ending with the losses of an uninterrupted run;
it does not restart a trainer that fails on a healthy slice, and gives up after MAX_RESTARTS."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from helpers import ROOT, RUN_FLAGS, calls, free_port, losses_of, upload_tree


def _pod(cluster, *args, **env):
  return subprocess.run(["bash", "launch/tpu_pod.sh", *args], cwd=ROOT, capture_output=True, text=True,
                        timeout=600, env=dict(cluster["env"], **env))


def test_up_then_train_on_two_workers_equals_one_process(gcs_bucket, cluster, tiny_data, reference_losses,
                                                         tmp_path):
  data = upload_tree(tiny_data["data_dir"], f"{gcs_bucket}/prepared")
  env = dict(FAKE_TPU_WORKERS="2", TPU_NAME="pod", ACCELERATOR_TYPE="v5litepod-8", SPOT="1",
             CONFIG="configs/tiny.py", SKIP_PREFLIGHT="1", SHIP_DIRTY="1", FAKE_PYTHON=sys.executable,
             COORDINATOR_PORT=str(free_port()), DATA=data, WORKDIR=str(tmp_path / "run"),
             STORAGE_EMULATOR_HOST=os.environ["STORAGE_EMULATOR_HOST"])
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
  # The plan refuses first (seconds, no compile): its row for the slice, and the smallest memory found.
  assert "synergen_jax.plan" in r.stdout and "v5litepod-4: 4 x TPU v5 lite" in r.stdout
  assert "fits nowhere" in r.stderr and "nothing was created" in r.stderr
  assert "synergen_jax.aot" not in r.stdout
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


# One worker with 8 chips: the reference's 8 devices in one process, so losses match step for step.
POD = dict(FAKE_TPU_WORKERS="1", FAKE_TPU_CHIPS="8", TPU_NAME="pod", ACCELERATOR_TYPE="v5litepod-8", SPOT="1",
           CONFIG="configs/tiny.py", SKIP_PREFLIGHT="1", SHIP_DIRTY="1", FAKE_PYTHON=sys.executable,
           POLL_SECONDS="0.2", RETRY_SECONDS="1")
CAPACITY_ERROR = ("ERROR: (gcloud.compute.tpus.queued-resources.create) RESOURCE_EXHAUSTED: There is no more "
                  "capacity in the zone \"us-east5-a\"")


def _script(cluster, *events):
  """The fake gcloud's scripted incidents, fired in order (tests/cluster/bin/gcloud)."""
  (cluster["state"] / "script.json").write_text(json.dumps(list(events)))


def _state(cluster, kind):
  """What gcloud says of pod's TPU (kind tpu-vm) or queued resource: its state, or NOT_FOUND."""
  fmt = "value(state)" if kind == "tpu-vm" else "value(state.state)"
  r = subprocess.run(["gcloud", "compute", "tpus", kind, "describe", "pod", "--zone", "us-east5-a", f"--format={fmt}"],
                     capture_output=True, text=True, env=cluster["env"])
  return r.stdout.strip() if r.returncode == 0 else ("NOT_FOUND" if "NOT_FOUND" in r.stderr else r.stderr)


def _operations(cluster):
  """The creates and deletes gcloud was asked for, in order: ["create queued-resources", ...]."""
  return [f"{c[3]} {c[2]}" for c in calls(cluster, "gcloud") if c[3] in ("create", "delete")]


def test_up_never_reuses_a_dead_slice_and_delete_finishes_a_half_deleted_one(cluster):
  home = cluster["state"] / "tpus" / "pod" / "worker_0"
  assert _pod(cluster, "up", **POD).returncode == 0
  (home / "left_behind").write_text("")
  _script(cluster, {"state": "PREEMPTED"})                        # fires at the next gcloud call
  again = _pod(cluster, "up", **POD)
  assert again.returncode == 0, again.stderr[-3000:]
  assert "reusing" not in again.stderr and "TPU PREEMPTED" in again.stderr
  assert _operations(cluster) == ["create queued-resources", "delete tpu-vm", "delete queued-resources",
                                  "create queued-resources"]      # the fake refuses a create while DELETING
  assert not (home / "left_behind").exists() and (home / "synergen_jax" / "launch" / "tpu_pod.sh").exists()
  assert _state(cluster, "tpu-vm") == "READY"
  reused = _pod(cluster, "up", **POD)
  assert reused.returncode == 0 and "pod exists and is READY; reusing it" in reused.stderr
  assert len(_operations(cluster)) == 4

  # Suspended: the queued resource stays, its TPU is gone. `delete` goes on past the TPU's NOT_FOUND,
  # and returns once the queued resource is gone, not merely DELETING.
  _script(cluster, {"state": "SUSPENDED"})
  assert _state(cluster, "queued-resources") == "SUSPENDED" and _state(cluster, "tpu-vm") == "NOT_FOUND"
  deleted = _pod(cluster, "delete", **POD)
  assert deleted.returncode == 0, deleted.stderr[-3000:]
  assert "the TPU pod was already gone" in deleted.stderr
  assert _state(cluster, "queued-resources") == "NOT_FOUND" and _state(cluster, "tpu-vm") == "NOT_FOUND"
  assert _pod(cluster, "delete", **POD).returncode == 0               # nothing left at all: nothing to do

  # Any other error still stops `delete`, saying so, before the queued resource is touched.
  assert _pod(cluster, "up", **POD).returncode == 0
  _script(cluster, {"call": "tpu-vm delete", "error": "ERROR: (gcloud.compute.tpus.tpu-vm.delete) PERMISSION_DENIED"})
  denied = _pod(cluster, "delete", **POD)
  assert denied.returncode == 1 and "PERMISSION_DENIED" in denied.stderr, denied.stderr[-3000:]
  assert "run tpu_pod.sh delete again" in denied.stderr
  assert _state(cluster, "queued-resources") == "ACTIVE" and _state(cluster, "tpu-vm") == "READY"
  assert _pod(cluster, "delete", **POD).returncode == 0


def test_dry_run_of_run_and_delete_prints_the_commands_and_calls_nothing(cluster):
  run = _pod(cluster, "--dry-run", "run", "--", "--config.train.steps=7", WORKDIR="gs://b/run", **POD)
  assert run.returncode == 0, run.stderr[-3000:]
  lines = run.stdout.replace("\\", "").splitlines()
  assert lines[0].startswith("+ gcloud compute tpus queued-resources create pod --node-id pod")
  assert "tar.gz --worker=all" in lines[2] and "uv pip install" in lines[3]
  assert "synergen_jax.train --config configs/tiny.py --workdir gs://b/run --config.train.steps=7" in lines[4]
  assert len(lines) == 5                                          # nothing watched without a slice
  delete = _pod(cluster, "--dry-run", "delete", **POD)
  assert delete.returncode == 0 and [l.split()[4:6] for l in delete.stdout.splitlines()] == [
      ["tpu-vm", "delete"], ["queued-resources", "delete"]]
  assert calls(cluster, "gcloud") == []


def test_run_gives_up_after_max_restarts(cluster, tmp_path):
  _script(cluster, {"state": "SUSPENDED"}, {"state": "SUSPENDED"})   # each new slice, as soon as it exists
  r = _pod(cluster, "run", WORKDIR=str(tmp_path / "run"), MAX_RESTARTS="1", **POD)
  assert r.returncode == 1, r.stderr[-3000:]
  assert r.stderr.count("incident: pod is SUSPENDED; steps and minutes lost unknown") == 2   # no WORKDIR here yet
  assert "restart 1 of 1" in r.stderr and "no restart left (MAX_RESTARTS=1)" in r.stderr
  assert "giving up after 1 restarts" in r.stderr
  assert _operations(cluster).count("create queued-resources") == 2
  assert _state(cluster, "queued-resources") == "NOT_FOUND"        # what was left is deleted
  assert not any("synergen_jax.train" in " ".join(c) for c in calls(cluster, "gcloud"))


def test_run_does_not_restart_a_trainer_that_fails_on_a_healthy_slice(cluster, tmp_path):
  r = _pod(cluster, "run", "--", "--config.train.steps=many", WORKDIR=str(tmp_path / "run"), STATE_GRACE="1", **POD)
  assert r.returncode == 1, r.stdout[-2000:] + r.stderr[-3000:]
  assert "Flags parsing error" in r.stdout                          # worker 0's log, followed
  assert "worker 0 (vm) failed first with status 1" in r.stderr and "not restarting" in r.stderr
  assert _operations(cluster) == ["create queued-resources"]
  assert _state(cluster, "tpu-vm") == "READY"


def test_run_recovers_from_capacity_preemption_and_suspension_by_itself(cluster, tiny_data, reference_losses, tmp_path):
  """One training run through three incidents: the first create is refused for capacity, the slice is
  preempted once its trainer has logged step 2 (SIGTERM: the trainer checkpoints) and the next one
  suspended once its trainer has logged step 5 (SIGKILL, TPU gone). `run` recreates it each time and
  the last slice trains on to step 8."""
  workdir = tmp_path / "run"
  _script(cluster, {"call": "queued-resources create", "error": CAPACITY_ERROR},
          {"state": "PREEMPTED", "after_step": 2, "workdir": str(workdir)},
          {"state": "SUSPENDED", "after_step": 5, "workdir": str(workdir)})
  env = dict(POD, DATA=tiny_data["data_dir"], WORKDIR=str(workdir), COORDINATOR_PORT=str(free_port()),
             POLL_SECONDS="1", STATE_GRACE="30", MAX_RESTARTS="2")
  r = _pod(cluster, "run", "--", "--config.train.steps=8", "--config.train.checkpoint_every=2", *RUN_FLAGS, **env)
  assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]

  assert r.stderr.count("no capacity for v5litepod-8 in us-east5-a now; trying again in 1s") == 1
  assert _operations(cluster) == ["create queued-resources"] * 2 + ["delete tpu-vm", "delete queued-resources",
                                                                    "create queued-resources"] * 2
  incidents = re.findall(r"incident: pod is (\w+); last logged step (\d+), last checkpoint step (\d+): (\d+) steps "
                         r"and [\d.]+ min of work since that checkpoint lost; restart (\d) of 2", r.stderr)
  assert [i[0] for i in incidents] == ["PREEMPTED", "SUSPENDED"] and [i[4] for i in incidents] == ["1", "2"], r.stderr
  (_, logged, saved, lost, _), (_, killed_at, restored, killed_lost, _) = [
      (state, *map(int, numbers)) for state, *numbers in incidents]
  assert 2 <= logged < 8 and saved == logged and lost == 0       # SIGTERM: a checkpoint where it stopped
  assert killed_at >= 5 and killed_lost == killed_at - restored    # SIGKILL: what followed the checkpoint is lost
  assert "the TPU pod was already gone" in r.stderr               # SUSPENDED took the TPU with it
  resumed = [int(s) for s in re.findall(r"train: resumed \S+ at step (\d+)", r.stdout)]
  assert resumed == [saved, restored]                             # each restart, from the checkpoint named
  assert "train: done at step 8" in r.stdout and "worker 0 (vm) exited with status 0" in r.stderr
  losses = losses_of(str(workdir))                                # each step's last logged loss
  np.testing.assert_allclose([losses[s] for s in range(1, 9)], [reference_losses[s] for s in range(1, 9)], rtol=1e-5)
