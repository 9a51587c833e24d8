"""How runs end: a failure in one process stops every process within seconds (at start-up and in
the middle of training), and SIGTERM (preemption) leaves a checkpoint at one agreed step from which
a rerun continues exactly like an uninterrupted run. Multi-process runs here are 2 local processes
x 4 CPU devices (launch/local_multiprocess.sh); the simulated clusters are in tests/cluster/."""

import os
import signal
import subprocess
import threading
import time

import numpy as np
import pytest

from helpers import RUN_FLAGS, ROOT, free_port, losses_of, run_config, two_processes, wait_for_step

FLAGS = RUN_FLAGS


def _local(n, tiny_data, workdir, tmp_path, *flags, env=None):
  command = ["bash", "launch/local_multiprocess.sh", str(n), "python", "-m", "synergen_jax.train",
             "--config", "configs/tiny.py", "--workdir", workdir,
             f"--config.data.path={tiny_data['data_dir']}", *FLAGS, *flags]
  t0 = time.time()
  run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, LOG_DIR=str(tmp_path), PORT=str(free_port()), **(env or {})))
  return run, time.time() - t0


@pytest.mark.parametrize("at", [0, 3], ids=["at_start_up", "mid_training"])
def test_a_failing_process_stops_every_process(tiny_data, tmp_path, at):
  run, _ = _local(2, tiny_data, str(tmp_path / "run"), tmp_path, "--config.train.steps=1000",
                  env={"SYNERGEN_FAULT_DRILL": f"1:{at}", "SYNERGEN_HEARTBEAT_TIMEOUT": "300"})
  peer = open(tmp_path / "process_1.log").read()
  assert run.returncode == 1, run.stderr[-3000:]
  assert "process 1 failed first, status 1" in run.stderr, run.stderr[-3000:]
  assert f"fault drill (SYNERGEN_FAULT_DRILL=1:{at}): process 1 fails at step {at}" in peer
  # Process 0 heard of it through the coordination service, not through a 300 s heartbeat timeout,
  # and stopped by itself (status 3) before the launcher's 10 s grace ran out.
  assert "process 0 stops because process 1: RuntimeError: fault drill" in run.stderr, run.stderr[-3000:]
  statuses = run.stderr.strip().splitlines()[-1].split("ended):")[1].split()
  assert sorted(statuses) == ["0:3", "1:1"], run.stderr[-2000:]
  if at:
    assert sorted(losses_of(str(tmp_path / "run")))[-1] >= at - 1


def test_sigterm_checkpoints_and_a_rerun_continues_like_one_run(tiny_data, reference_losses, tmp_path):
  """One process: SIGTERM (here sent to this very process while train() runs) ends the run at the
  next step with a checkpoint there; rerunning the same config continues with the reference's
  losses."""
  from synergen_jax.parallel.failure import Preempted
  from synergen_jax.train.loop import train
  workdir = str(tmp_path / "run")
  before = signal.getsignal(signal.SIGTERM)

  def preempt():
    wait_for_step(workdir, 2, [])
    os.kill(os.getpid(), signal.SIGTERM)
  threading.Thread(target=preempt, daemon=True).start()
  config = run_config(tiny_data, 1000)               # far beyond the signal: the run cannot end first
  config.train.checkpoint_every = 1000
  with pytest.raises(Preempted) as stopped:
    train(config, workdir)
  step = stopped.value.step
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == [str(step)]
  assert step <= 12, step
  rerun = train(run_config(tiny_data, step + 3), workdir)["losses"]
  assert sorted(rerun) == [step + 1, step + 2, step + 3]
  np.testing.assert_allclose([rerun[s] for s in sorted(rerun)],
                             [reference_losses[s] for s in sorted(rerun)], rtol=1e-5)
  assert signal.getsignal(signal.SIGTERM) is before          # train() put the handler back


def test_sigterm_to_one_of_two_processes_stops_both_at_one_step(tiny_data, reference_losses, tmp_path):
  """Two processes; only process 1 gets SIGTERM (a TPU maintenance event reaches one host). Both
  agree on a step through JAX's preemption sync point, save there and exit 75; the checkpoint
  resumes in one process with the reference's losses."""
  from synergen_jax.train.loop import train
  workdir = str(tmp_path / "run")
  command = ["python", "-m", "synergen_jax.train", "--config", "configs/tiny.py", "--workdir", workdir,
             f"--config.data.path={tiny_data['data_dir']}", "--config.train.steps=1000",
             "--config.train.checkpoint_every=1000", *FLAGS]
  with two_processes(command, tmp_path, JAX_PLATFORMS="cpu") as procs:
    wait_for_step(workdir, 2, procs)
    procs[1].send_signal(signal.SIGTERM)
    codes = [p.wait(timeout=120) for p in procs]
  out = open(tmp_path / "p0.log").read()
  assert codes == [75, 75], out[-3000:]
  step = int(out.split("train: preempted at step ")[1].split(":")[0])
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == [str(step)]
  assert max(losses_of(workdir)) == step and step <= 12
  rerun = train(run_config(tiny_data, step + 2), workdir)["losses"]
  np.testing.assert_allclose([rerun[step + 1], rerun[step + 2]],
                             [reference_losses[step + 1], reference_losses[step + 2]], rtol=1e-5)
