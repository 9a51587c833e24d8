"""launch/slurm_gpu.sh against a simulated Slurm cluster (fake sbatch/srun/scontrol, tests/cluster/bin):
2 nodes x 4 simulated GPUs, each node's one process initialised with all 4 of its devices; SIGTERM to
one node's task checkpoints both at one step, the job requeues itself and the rerun finishes with
the losses of an uninterrupted run; a failing node is named in the job log; a partition whose
preemption grace is too short for a checkpoint is warned about, at submit time and in the job log."""

import json
import os
import re
import signal
import subprocess
import time

import numpy as np

from helpers import ROOT, RUN_FLAGS, calls, losses_of, wait_for_step


def _submit(cluster, tiny_data, workdir, logs, *flags, **env):
  run = subprocess.run(
      ["bash", "launch/slurm_gpu.sh", "configs/tiny.py", str(workdir), f"--config.data.path={tiny_data['data_dir']}",
       *RUN_FLAGS, *flags], cwd=ROOT, capture_output=True, text=True,
      env=dict(cluster["env"], NODES="2", GPUS_PER_NODE="4", CPUS_PER_TASK="2", LOG_DIR=str(logs),
               JOB_NAME="t", SKIP_PLAN="1", **env))   # the plan: tests/test_launch.py
  assert run.returncode == 0, run.stderr
  return int(re.search(r"Submitted batch job (\d+)", run.stdout).group(1))


class _Job:
  """A submitted fake job, with the poll() of a process (for helpers.wait_for_step)."""

  def __init__(self, cluster, job):
    self.done, self.args = cluster["state"] / "jobs" / f"{job}.done", f"job {job}"

  def poll(self):
    return int(self.done.read_text()) if self.done.exists() else None


def _requeues(cluster):
  return [c for c in calls(cluster, "scontrol") if c[:1] == ["requeue"]]


def _dry_run(cluster, partitions, **env):
  """launch/slurm_gpu.sh --dry-run on the fake cluster whose partitions are `partitions`."""
  return subprocess.run(["bash", "launch/slurm_gpu.sh", "--dry-run", "configs/tiny.py", "/shared/run"],
                        cwd=ROOT, capture_output=True, text=True,
                        env=dict(cluster["env"], FAKE_SLURM_PARTITIONS=json.dumps(partitions), SKIP_PLAN="1",
                                 **env))


def _wait_done(cluster, job, timeout=600):
  done = cluster["state"] / "jobs" / f"{job}.done"
  deadline = time.time() + timeout
  while not done.exists():
    assert time.time() < deadline, f"job {job} did not finish"
    time.sleep(0.5)
  return int(done.read_text())


def test_preempted_job_requeues_and_equals_an_uninterrupted_run(cluster, tiny_data, reference_losses, tmp_path):
  workdir, logs = tmp_path / "run", tmp_path / "logs"
  # FSDP over each node's 4 devices, data parallelism across the 2 nodes (the hybrid mesh's default
  # for fsdp=-1 on several nodes): the losses are still those of one process's data-parallel run.
  job = _submit(cluster, tiny_data, workdir, logs, "--config.train.steps=14", "--config.train.checkpoint_every=1000",
                "--config.mesh.data=1", "--config.mesh.fsdp=-1")
  wait_for_step(str(workdir), 2, [_Job(cluster, job)])
  tasks = dict(line.split() for line in open(cluster["state"] / "jobs" / f"{job}.tasks"))
  os.kill(int(tasks["1"]), signal.SIGTERM)            # node 1 only, as a maintenance event would
  assert _wait_done(cluster, job) == 0, open(logs / f"t-{job}.out").read()

  (submitted,) = calls(cluster, "sbatch")
  script = open(submitted[-1]).read()
  for line in ("--nodes=2", "--ntasks-per-node=1", "--gpus-per-node=4", "--cpus-per-task=2", "--requeue",
               "--signal=TERM@300", "--exclusive", "--mem=0"):
    assert f"#SBATCH {line}\n" in script, line
  assert _requeues(cluster) == [["requeue", str(job)]]
  # The default partition's grace (the fake's: 300 s) was read before submitting and in each run.
  assert calls(cluster, "scontrol").count(["-o", "show", "partition", "gpu"]) == 3
  assert "WARNING" not in open(logs / f"t-{job}.out").read()
  assert [c[:2] for c in calls(cluster, "srun")] == [["--kill-on-bad-exit=1", "--cpus-per-task=2"]] * 2

  for run in (0, 1):
    for node in (0, 1):
      log = open(logs / f"t-{job}-run{run}-node{node}.log").read()
      assert (f"distributed: process {node} of 2, 4 local cpu devices "
              "(jax_cuda_visible_devices=0,1,2,3)") in log, log[-2000:]
  first = open(logs / f"t-{job}-run0-node0.log").read()
  step = int(re.search(r"train: preempted at step (\d+)", first).group(1))
  assert "resumed" in open(logs / f"t-{job}-run1-node0.log").read()
  assert sorted(int(s) for s in os.listdir(workdir / "checkpoints")) == [step, 14]
  losses = losses_of(str(workdir))
  assert sorted(losses) == list(range(1, 15)) and step < 14
  np.testing.assert_allclose([losses[s] for s in range(1, 15)], [reference_losses[s] for s in range(1, 15)],
                             rtol=1e-5)
  assert "preempted; checkpoint saved; requeueing (run 1 resumes)" in open(logs / f"t-{job}.out").read()


def test_a_failing_node_is_named_and_the_job_is_not_requeued(cluster, tiny_data, tmp_path):
  logs = tmp_path / "logs"
  # The job lands on the default partition, which preempts with a 30 s grace: its log says so.
  cluster["env"]["FAKE_SLURM_PARTITIONS"] = json.dumps(
      {"gpu": {"Default": "YES", "GraceTime": "30", "PreemptMode": "REQUEUE"}})
  job = _submit(cluster, tiny_data, tmp_path / "run", logs, "--config.train.steps=1000",
                SYNERGEN_FAULT_DRILL="1:0")
  status = _wait_done(cluster, job)
  out = open(logs / f"t-{job}.out").read()
  assert "slurm_gpu: WARNING: partition gpu has GraceTime=30 (30 s)" in out, out
  assert status != 0 and _requeues(cluster) == [], out
  assert re.search(r"slurm_gpu: node 1 \(\S+\) failed first with status 1; its log: \S+-run0-node1.log", out), out
  assert "fault drill" in open(logs / f"t-{job}-run0-node1.log").read()


def test_a_grace_time_too_short_for_a_checkpoint_is_warned_about_at_submit(cluster):
  partitions = {"short": {"GraceTime": "0", "PreemptMode": "REQUEUE"},
                "minute": {"Default": "YES", "GraceTime": "00:01:00", "PreemptMode": "CANCEL"},
                "long": {"GraceTime": "00:05:00", "PreemptMode": "REQUEUE"},
                "never": {"GraceTime": "0", "PreemptMode": "OFF"},
                "suspends": {"GraceTime": "0", "PreemptMode": "SUSPEND,GANG"}}
  short = _dry_run(cluster, partitions, PARTITION="short")
  assert short.returncode == 0, short.stderr
  warning = " ".join(short.stderr.split())
  for words in ("WARNING: partition short has GraceTime=0 (0 s) and PreemptMode=REQUEUE",
                "saving a checkpoint needs about 120 s (MIN_GRACE_SECONDS)",
                "Ask the cluster's admins for GraceTime>=120 on short",
                "--signal=TERM@N"):
    assert words in warning, (words, short.stderr)
  assert "#SBATCH --partition=short" in short.stdout     # a warning, not a refusal
  # Without PARTITION: sbatch's default partition, named by SBATCH_PARTITION or marked Default=YES.
  default = _dry_run(cluster, partitions)
  assert "partition minute has GraceTime=00:01:00 (60 s)" in default.stderr, default.stderr
  assert "partition short has" in _dry_run(cluster, partitions, SBATCH_PARTITION="short").stderr
  # Enough grace, a partition that never kills a preempted job, a lower need, no check: silent.
  for env in (dict(PARTITION="long"), dict(PARTITION="never"), dict(PARTITION="suspends"),
              dict(MIN_GRACE_SECONDS="60"), dict(PARTITION="short", MIN_GRACE_SECONDS="0")):
    quiet = _dry_run(cluster, partitions, **env)
    assert quiet.returncode == 0 and "WARNING" not in quiet.stderr, (env, quiet.stderr)
  unknown = _dry_run(cluster, partitions, PARTITION="nope")
  assert unknown.returncode == 0 and "cannot read partition nope" in unknown.stderr
  bad = _dry_run(cluster, partitions, MIN_GRACE_SECONDS="2m")
  assert bad.returncode == 2 and "MIN_GRACE_SECONDS=2m must be a number of seconds" in bad.stderr


def test_whole_nodes_with_all_their_memory_unless_the_knobs_say_otherwise(cluster):
  partitions = {"gpu": {"Default": "YES", "GraceTime": "300", "PreemptMode": "REQUEUE"}}
  default = _dry_run(cluster, partitions).stdout
  assert "#SBATCH --exclusive\n" in default and "#SBATCH --mem=0\n" in default
  shared = _dry_run(cluster, partitions, EXCLUSIVE="0", MEM="480G").stdout
  assert "--exclusive" not in shared and "#SBATCH --mem=480G\n" in shared
  assert "--mem" not in _dry_run(cluster, partitions, MEM="").stdout      # the partition's default
  bad = _dry_run(cluster, partitions, EXCLUSIVE="yes")
  assert bad.returncode == 2 and "EXCLUSIVE=yes must be 1 (whole nodes) or 0" in bad.stderr
