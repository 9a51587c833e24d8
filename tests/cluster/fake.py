"""What the fake cluster executables in bin/ share: their state folder and call records.

The fakes stand in for gcloud, sbatch, srun, scontrol, gcsfuse, uv and the TPU VM metadata server
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
