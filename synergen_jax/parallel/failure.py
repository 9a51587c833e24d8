"""How a run ends when something goes wrong: the first failure reaches every process, and a
preemption notice (SIGTERM) becomes a checkpoint at a step every process agrees on.

Exit statuses of `python -m synergen_jax.train`:

  0   done
  1   this process failed; its traceback is in its log
  3   another process failed first: its id and error are printed, and this process stopped
  75  preempted (SIGTERM): a checkpoint was saved at the agreed step and rerunning the same
      command resumes there (75 is EX_TEMPFAIL: "try again"; the launchers requeue on it)

Under several processes a failing process writes "<its id>: <error>" into the coordination
service's key-value store under FAILURE_KEY (first writer wins) and exits at once, without
jax.distributed's shutdown, whose barrier would wait for peers that sit in a collective. Every
process runs a watchdog thread blocked on that key, so the others stop as soon as it is written
(the blocked read returns at once), wherever their main thread is. Process 0 hosts the service, so
it leaves last: it waits (at most 2 s) until every other process has written that it is stopping.
A process that dies without a word (kill -9, lost host) is noticed by the coordination service's
heartbeats instead (SYNERGEN_HEARTBEAT_TIMEOUT, parallel/distributed.py).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import traceback

import jax

EXIT_FAILED, EXIT_PEER_FAILED, EXIT_PREEMPTED = 1, 3, 75
FAILURE_KEY = "synergen_jax/first_failure"
POLL_SECONDS = 1.0
EXIT_GRACE_SECONDS = 0.5


class Preempted(Exception):
  """Raised by the training loop after the preemption checkpoint is safely written."""

  def __init__(self, step: int):
    super().__init__(f"preempted: checkpoint saved at step {step}; rerun the same command to resume")
    self.step = step


def _client():
  """jax.distributed's coordination-service client, or None in a single process."""
  from jax._src import distributed
  return distributed.global_state.client


def _exit_now(message: str, status: int, client=None) -> None:
  """Prints message and exits; with the coordination client, first says so (`_say_stopping`)."""
  print(message, file=sys.stderr, flush=True)
  if client is not None:
    _say_stopping(client, jax.process_index())
  sys.stdout.flush()
  os._exit(status)        # no atexit hooks: jax.distributed.shutdown would wait for the others


class Watchdog:
  """Stops this process as soon as another one reports a failure, or the coordination service
  (process 0) is gone. `stop()` before a normal exit: shutting down jax.distributed ends the
  service, which the watchdog would otherwise take for a lost coordinator."""

  def __init__(self):
    self._client = _client()
    self._stopped = threading.Event()
    self._thread = None
    if self._client is not None:
      self._thread = threading.Thread(target=self._watch, name="synergen-failure-watchdog", daemon=True)
      self._thread.start()

  def _watch(self) -> None:
    me = jax.process_index()
    while not self._stopped.is_set():
      try:
        first = self._client.blocking_key_value_get(FAILURE_KEY, int(POLL_SECONDS * 1000))
      except Exception as e:          # jax.errors.JaxRuntimeError; its text carries the gRPC code
        if "DEADLINE_EXCEEDED" in str(e) or self._stopped.is_set():
          continue
        _exit_now(f"synergen_jax: process {me} lost the coordination service (process 0): "
                  f"{str(e).splitlines()[0]}", EXIT_PEER_FAILED)
      if self._stopped.is_set():
        return
      if not first.startswith(f"{me}:"):
        _stop_for_peer(self._client, me, first)
      return                          # our own report: fail() exits this process

  def stop(self) -> None:
    self._stopped.set()
    if self._thread is not None:
      self._thread.join(timeout=2 * POLL_SECONDS + 1)


def _stopped_key(process: int) -> str:
  return f"{FAILURE_KEY}/stopped/{process}"


def _wait_for_peers_to_stop(client) -> None:
  """Process 0 hosts the coordination service: leaving takes it away, and a JAX client that loses
  it aborts (status 134) instead of exiting 1 / 3. So it waits until every other process has said
  it is stopping (`_say_stopping`, right before its exit), at most 2 * POLL_SECONDS, then gives them
  EXIT_GRACE_SECONDS to finish exiting (a peer that has said so but not yet exited still aborts if
  the service goes: seen in the fault drill). Not longer: a collective that the departed peers
  have broken can abort this process too."""
  deadline = time.monotonic() + 2 * POLL_SECONDS
  for peer in range(1, jax.process_count()):
    left_ms = int((deadline - time.monotonic()) * 1000)
    if left_ms <= 0:
      return
    try:
      client.blocking_key_value_get(_stopped_key(peer), left_ms)
    except Exception:               # DEADLINE_EXCEEDED: that peer is gone or stuck; stop anyway
      return
  time.sleep(EXIT_GRACE_SECONDS)


def _say_stopping(client, me: int) -> None:
  """Process 0 waits for this before it leaves (the last thing a process does before os._exit)."""
  if me == 0:
    _wait_for_peers_to_stop(client)
    return
  try:
    client.key_value_set(_stopped_key(me), "stopping")
  except Exception:                 # already said (watchdog and main thread both stopping), or the
    pass                            # service is gone and nobody waits for it


def _stop_for_peer(client, me: int, first: str) -> None:
  """Exits 3 because of the failure `first` ("<id>: <error>") another process reported."""
  _exit_now(f"synergen_jax: process {me} stops because process {first} (exit {EXIT_PEER_FAILED})",
            EXIT_PEER_FAILED, client)


def _reported_failure(client) -> str | None:
  try:
    return client.blocking_key_value_get(FAILURE_KEY, 100)
  except Exception:                 # no report (DEADLINE_EXCEEDED) or no service
    return None


def fail(error: BaseException) -> None:
  """Handles an exception that ends the run. A single process re-raises it (the usual traceback and
  status 1). Under several processes: print it, tell the others (first report wins; process 0, which
  hosts the service, waits until they have read it) and exit 1 without jax.distributed's shutdown."""
  client = _client()
  if client is None:
    raise error
  me = jax.process_index()
  traceback.print_exception(error, file=sys.stderr)
  summary = f"{type(error).__name__}: {error}".splitlines()[0][:500]
  try:
    client.key_value_set(FAILURE_KEY, f"{me}: {summary}", allow_overwrite=False)
  except Exception:                 # ALREADY_EXISTS (another process failed first) or no service
    first = _reported_failure(client)
    if first is not None and not first.startswith(f"{me}:"):
      # This error is a consequence (e.g. a collective broken by the failed peer's exit): report
      # it as the peer's failure, as the watchdog would.
      _stop_for_peer(client, me, first)
  _exit_now(f"synergen_jax: process {me} failed (exit {EXIT_FAILED}): {summary}", EXIT_FAILED,
            client)


class PreemptionNotice:
  """`reached(step)` turns True at the one step where every process saves and stops.

  Several processes: JAX's preemption sync manager (started by jax.distributed.initialize) catches
  SIGTERM in whichever processes get it, and all of them agree on the next step after the largest
  one any has reached (multihost_utils.reached_preemption_sync_point; it must be asked at every
  step). One process: a SIGTERM handler sets a flag, read at the next step boundary."""

  def __init__(self):
    self._multi = _client() is not None
    self._flag = False
    self._previous = None
    if not self._multi and threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)

  def _on_sigterm(self, signum, frame):
    del signum, frame
    self._flag = True
    print("train: SIGTERM: checkpointing after this step, then exiting with status "
          f"{EXIT_PREEMPTED}", flush=True)

  def reached(self, step: int) -> bool:
    if self._multi:
      from jax.experimental import multihost_utils
      return multihost_utils.reached_preemption_sync_point(step)
    return self._flag

  def close(self) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None


DRILL_ENV = "SYNERGEN_FAULT_DRILL"


def fault_drill(step: int) -> None:
  """SYNERGEN_FAULT_DRILL=PROCESS:STEP makes process PROCESS raise at step STEP (0: at start-up,
  while the others wait for it in a barrier). For checking, before a long run, that a cluster's
  processes and launcher stop as they should when one fails."""
  spec = os.environ.get(DRILL_ENV)
  if not spec:
    return
  try:
    process, at = (int(x) for x in spec.split(":"))
  except ValueError:
    raise ValueError(f"{DRILL_ENV}={spec!r}: expected PROCESS:STEP, e.g. 1:0 or 1:5") from None
  if process == jax.process_index() and at == step:
    raise RuntimeError(f"fault drill ({DRILL_ENV}={spec}): process {process} fails at step {step}")
