"""What the fake cluster executables in bin/ share: their state folder and call records.

The fakes stand in for gcloud, sbatch, srun, scontrol, uv and the TPU VM metadata server
(curl). Each records its argv in $FAKE_CLUSTER_DIR/calls.jsonl and runs every worker's command as a
local process with the environment a real worker gets; the simulated accelerators are CPU devices
(JAX_PLATFORMS=cpu, --xla_force_host_platform_device_count), so jax.distributed, gloo collectives
and Orbax run for real across the workers.
"""

import json
import os
import signal
import subprocess
import sys
import time


def state_dir(*parts) -> str:
  root = os.environ.get("FAKE_CLUSTER_DIR")
  if not root:
    sys.exit(f"{os.path.basename(sys.argv[0])} (fake): set FAKE_CLUSTER_DIR")
  path = os.path.join(root, *parts)
  os.makedirs(os.path.dirname(path) if parts else path, exist_ok=True)
  return path


def record(tool: str, argv) -> None:
  with open(state_dir("calls.jsonl"), "a") as f:
    f.write(json.dumps({"tool": tool, "argv": list(argv), "cwd": os.getcwd()}) + "\n")


def simulated_devices(env: dict, count: int) -> dict:
  """A worker whose `count` accelerators are CPU devices."""
  return dict(env, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={count}")


def run_all(commands, kill_on_bad_exit=False, kill_wait=5.0, on_start=None) -> list:
  """Starts [(argv, env, cwd, output path or None)] at once, passes SIGTERM/SIGINT on to them,
  waits for all (on_start gets their pids first); with kill_on_bad_exit, the first non-zero exit terminates the others (SIGTERM,
  then SIGKILL after kill_wait seconds, as slurmstepd does). Returns their exit statuses
  (128 + signal for a signalled process, as a shell reports it)."""
  procs = []
  for argv, env, cwd, out in commands:
    stream = open(out, "a") if out else None
    procs.append(subprocess.Popen(argv, env=env, cwd=cwd, stdout=stream, stderr=subprocess.STDOUT if out else None))
  if on_start:
    on_start([p.pid for p in procs])
  for sig in (signal.SIGTERM, signal.SIGINT):
    signal.signal(sig, lambda s, f: [p.send_signal(s) for p in procs if p.poll() is None])
  killing_since = None
  while any(p.poll() is None for p in procs):
    bad = [p for p in procs if p.poll() not in (None, 0)]
    if kill_on_bad_exit and bad and killing_since is None:
      killing_since = time.time()
      for p in procs:
        if p.poll() is None:
          p.terminate()
    if killing_since is not None and time.time() - killing_since > kill_wait:
      for p in procs:
        if p.poll() is None:
          p.kill()
    time.sleep(0.1)
  return [p.returncode if p.returncode >= 0 else 128 - p.returncode for p in procs]


def processes_with_env(key: str, value: str) -> list:
  """Pids of this user's processes whose environment has key=value: the processes "on" a simulated
  machine, found by the variable every command started there inherits (setsid and nohup keep it)."""
  wanted, pids = f"{key}={value}".encode(), []
  for entry in os.listdir("/proc"):
    if not entry.isdigit() or int(entry) == os.getpid():
      continue
    try:
      with open(f"/proc/{entry}/environ", "rb") as f:
        if wanted in f.read().split(b"\0"):
          pids.append(int(entry))
    except OSError:                 # gone meanwhile, or not ours
      pass
  return pids


def _alive(pid: int) -> bool:
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rsplit(")", 1)[1].split()[0] != "Z"     # a zombie has already exited
  except OSError:
    return False


def stop_processes(pids, sig: int, grace: float) -> None:
  """Sends sig to pids, waits up to grace seconds for them to exit, then SIGKILLs what is left and
  waits for that too (as a machine that shuts down does)."""
  for s, wait in ((sig, grace), (signal.SIGKILL, 5.0)):
    for pid in pids:
      try:
        os.kill(pid, s)
      except ProcessLookupError:
        pass
    deadline = time.time() + wait
    while any(_alive(p) for p in pids) and time.time() < deadline:
      time.sleep(0.05)
    if not any(_alive(p) for p in pids):
      return
