"""A process that dies without a word (kill -9, a lost host) stops the others through the
coordination service's heartbeats instead of leaving them in a collective; a process that is only
slow (frozen longer than gloo's 30 s) is waited for. (Two processes training
like one: tests/cluster/test_tpu_pod.py; their checkpoint resuming in one process, failures and
preemption: tests/parallel/test_failures.py.)"""

import json
import os
import signal
import time

import numpy as np

from helpers import RUN_FLAGS, losses_of, two_processes

TRAIN_FLAGS = ["--config.train.log_every=1", "--config.train.checkpoint_every=2",
               "--config.train.eval_batches=1", "--config.optim.schedule=constant",
               "--config.optim.warmup_steps=0", "--config.data.shards=2"]


def _config(tiny_data, steps):
  config = tiny_data["config"].copy_and_resolve_references()
  config.train.update(steps=steps, log_every=1, checkpoint_every=2, eval_batches=1)
  config.optim.update(schedule="constant", warmup_steps=0)
  config.data.shards = 2
  return config


def _losses(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  return {r["step"]: r["loss"] for r in rows if "loss" in r}


def test_a_dead_process_stops_the_others(tiny_data, tmp_path):
  workdir = str(tmp_path / "run")
  command = ["python", "-m", "synergen_jax.train", "--config", "configs/tiny.py", "--workdir", workdir,
             f"--config.data.path={tiny_data['data_dir']}", "--config.train.steps=100000",
             "--config.train.checkpoint_every=100000", *TRAIN_FLAGS[:1], *TRAIN_FLAGS[3:]]
  with two_processes(command, tmp_path, SYNERGEN_HEARTBEAT_TIMEOUT="5") as procs:
    deadline = time.time() + 300
    while not (os.path.exists(os.path.join(workdir, "metrics.jsonl")) and len(_losses(workdir)) >= 2):
      assert time.time() < deadline and procs[0].poll() is None, open(tmp_path / "p0.log").read()[-3000:]
      time.sleep(0.5)
    procs[1].send_signal(signal.SIGKILL)
    killed = time.time()
    code = procs[0].wait(timeout=90)        # heartbeat timeout 5 s: well within 90 s, never a hang
    waited = time.time() - killed
  assert code != 0, "the surviving process exited cleanly after its peer died"
  assert waited < 60


def test_a_process_frozen_longer_than_gloo_s_timeout_is_waited_for(tiny_data, reference_losses, tmp_path):
  """Process 1 is stopped (SIGSTOP) for 40 s right after joining, the way a loaded host delays one
  process's start-up or compile. Gloo fails a collective whose peer is 30 s late, so every meeting
  point before the first step must be a coordination-service barrier; the run then ends like one
  process's."""
  workdir = str(tmp_path / "run")
  command = ["python", "-m", "synergen_jax.train", "--config", "configs/tiny.py", "--workdir", workdir,
             f"--config.data.path={tiny_data['data_dir']}", "--config.train.steps=3", *RUN_FLAGS]
  logs = [tmp_path / f"p{i}.log" for i in range(2)]
  with two_processes(command, tmp_path, SYNERGEN_HEARTBEAT_TIMEOUT="120") as procs:
    deadline = time.time() + 300
    while "distributed: process 1 of 2" not in logs[1].read_text():
      assert time.time() < deadline and procs[1].poll() is None, logs[1].read_text()[-3000:]
      time.sleep(0.1)
    procs[1].send_signal(signal.SIGSTOP)
    time.sleep(40)
    procs[1].send_signal(signal.SIGCONT)
    codes = [p.wait(timeout=300) for p in procs]
  assert codes == [0, 0], logs[0].read_text()[-3000:] + logs[1].read_text()[-3000:]
  losses = losses_of(workdir)
  assert sorted(losses) == [1, 2, 3]
  np.testing.assert_allclose([losses[s] for s in (1, 2, 3)], [reference_losses[s] for s in (1, 2, 3)],
                             rtol=1e-5)
