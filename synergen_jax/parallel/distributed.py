"""Joining a multi-process run: `jax.distributed.initialize()` from the environment, before any
other JAX call.

  SYNERGEN_NUM_PROCESSES=N SYNERGEN_PROCESS_ID=i SYNERGEN_COORDINATOR=host:port
      explicit (launch/local_multiprocess.sh sets these for N processes on one machine)
  SYNERGEN_DISTRIBUTED=1
      let JAX find the cluster itself (Cloud TPU slices, Slurm, Open MPI: launch/tpu_pod.sh,
      launch/slurm_gpu.sh)
  JAX_LOCAL_DEVICE_IDS=0,1,...
      (read by JAX itself) the devices this process drives; launch/slurm_gpu.sh sets all of the
      node's GPUs, since JAX's Slurm detection would otherwise pin each process to the one GPU
      numbered SLURM_LOCALID
  SYNERGEN_HEARTBEAT_TIMEOUT=S
      seconds without a heartbeat after which a process counts as dead (default 100); the survivors
      then stop with an error instead of waiting in a collective forever

Neither variable set: a single process, nothing to do. On CPU, cross-process collectives use gloo.
"""

from __future__ import annotations

import os
import sys

import jax

from synergen_jax.core.errors import ConfigError


def _int_env(name: str) -> int:
  value = os.environ[name]
  try:
    return int(value)
  except ValueError:
    raise ConfigError(f"environment variable {name}={value!r} must be an integer") from None


def initialize_from_env() -> bool:
  """Calls jax.distributed.initialize when the environment asks for it; True when it did."""
  explicit = "SYNERGEN_NUM_PROCESSES" in os.environ
  auto = os.environ.get("SYNERGEN_DISTRIBUTED", "") not in ("", "0")
  if not explicit and not auto:
    return False
  heartbeat = _int_env("SYNERGEN_HEARTBEAT_TIMEOUT") if "SYNERGEN_HEARTBEAT_TIMEOUT" in os.environ else 100
  if os.environ.get("JAX_PLATFORMS", "").startswith("cpu") or explicit:
    # Harmless on GPU/TPU (only the CPU backend reads it); without it CPU processes cannot all-reduce.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if explicit:
    count = _int_env("SYNERGEN_NUM_PROCESSES")
    index = _int_env("SYNERGEN_PROCESS_ID") if "SYNERGEN_PROCESS_ID" in os.environ else -1
    if count < 1 or not 0 <= index < count:
      raise ConfigError(f"SYNERGEN_NUM_PROCESSES={count} needs SYNERGEN_PROCESS_ID in [0, {count}), "
                        f"got {os.environ.get('SYNERGEN_PROCESS_ID')!r}")
    if count == 1:
      return False
    coordinator = os.environ.get("SYNERGEN_COORDINATOR", "localhost:12355")
    jax.distributed.initialize(coordinator, count, index, heartbeat_timeout_seconds=heartbeat)
  else:
    jax.distributed.initialize(heartbeat_timeout_seconds=heartbeat)
  # Every process says who it is and what it drives: the first thing to read in a node's log.
  visible = jax.config.values.get("jax_cuda_visible_devices")     # set from JAX_LOCAL_DEVICE_IDS
  print(f"distributed: process {jax.process_index()} of {jax.process_count()}, "
        f"{jax.local_device_count()} local {jax.local_devices()[0].platform} devices "
        f"(jax_cuda_visible_devices={visible})", file=sys.stderr, flush=True)
  return True


# Why our own barrier: JAX's multihost_utils.sync_global_devices is a device collective, and on CPU
# gloo gives every process 30 s (fixed in XLA) to join a collective's first use. One process still
# compiling or loading on a loaded host while the other waits past that fails the run. The
# coordination service's barrier waits as long as we ask; a dead process still ends it, through the
# heartbeat.
BARRIER_TIMEOUT_S = 3600
_barrier_uses: dict[str, int] = {}


def barrier(name: str, timeout_s: int = BARRIER_TIMEOUT_S) -> None:
  """All processes meet here, through the coordination service (nothing to do in one process).

  Every process must pass the same barriers in the same order: the n-th use of a name is its own
  barrier, so a name may be reused (each step, each eval)."""
  if jax.process_count() == 1:
    return
  from orbax.checkpoint import multihost
  n = _barrier_uses.get(name, 0)
  _barrier_uses[name] = n + 1
  multihost.get_barrier_sync_fn()(key=f"{name}#{n}", timeout_ms=timeout_s * 1000)


def compiled_together(jitted, *args, name: str):
  """Compiles `jitted` for `args` and lets every process finish compiling before any runs it.

  The compiled program lands in jit's cache, so calling `jitted(*args)` afterwards runs it without
  compiling again; the barrier keeps a fast process from waiting in the program's first collective
  while a slow one still compiles (see `barrier`). One process: nothing to do, jit compiles on call."""
  if jax.process_count() == 1:
    return
  jitted.lower(*args).compile()
  barrier(f"synergen_jax: {name} compiled")
