"""The training loop, top to bottom: config -> data -> mesh -> state -> steps -> checkpoints/metrics."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from synergen_jax.core import storage
from synergen_jax.core.config import validate_config
from synergen_jax.core.errors import ConfigError
from synergen_jax.prepare.cache import with_prepared_data
from synergen_jax.data.pipeline import make_iterator, split_examples
from synergen_jax.model import accounting
from synergen_jax.parallel.distributed import barrier, compiled_together
from synergen_jax.parallel.failure import Preempted, PreemptionNotice, fault_drill
from synergen_jax.parallel.mesh import make_mesh
from synergen_jax.parallel.sharding import LOGICAL_RULES
from synergen_jax.train import checkpoint
from synergen_jax.train.heldout import heldout_metrics
from synergen_jax.train.metrics import MetricWriter, component_examples, peak_flops_per_device
from synergen_jax.train.previews import Previews
from synergen_jax.train.state import build_train_step, init_state


class NonFiniteLoss(RuntimeError):
  pass


def _global_sum(value: float) -> float:
  """Sum of a host number over processes (each process counts its own rows)."""
  if jax.process_count() == 1:
    return value
  from jax.experimental import multihost_utils
  return float(np.sum(multihost_utils.process_allgather(np.float64(value))))


def _check_paths(config, workdir: str) -> None:
  """Every folder the run reads or writes that lives in a bucket is reachable (the bucket exists,
  credentials and permission suffice): one error naming the key, before any data or device work."""
  for what, path in (("--workdir", workdir), ("config.data.path", config.data.path),
                     ("config.data.cache_dir", config.data.cache_dir),
                     ("config.data.tokenizer", config.data.tokenizer),
                     ("config.vq.workdir", config.vq.workdir),
                     ("config.train.init_from", config.train.init_from)):
    if path:
      storage.check_reachable(path, what)


def log(message: str) -> None:
  """Progress lines from process 0 only (every process runs the same loop)."""
  if jax.process_index() == 0:
    print(message, flush=True)


# ---------------------------------------------------------------------------------------------------
# The loop.
# ---------------------------------------------------------------------------------------------------

def train(config, workdir: str, *, stop_after: int | None = None, devices=None) -> dict:
  """Trains until config.train.steps (or `stop_after` more steps, for tests); resumes from workdir.

  Returns {"step", "losses": {step: loss} of the logged steps this call ran, "state"}. `devices`
  restricts the mesh to some devices (tests: one device vs eight). On SIGTERM it saves a checkpoint
  at a step every process agrees on and raises Preempted (parallel/failure.py).
  """
  preemption = PreemptionNotice()     # SIGTERM from here on means "checkpoint, then stop"
  try:
    return _train(config, workdir, stop_after, devices, preemption)
  finally:
    preemption.close()


def _train(config, workdir, stop_after, devices, preemption: PreemptionNotice) -> dict:
  """The loop itself; train() owns the SIGTERM handler around it."""
  validate_config(config)                        # every config error before any device work
  _check_paths(config, workdir)
  if config.train.init_from:
    checkpoint.check_init_from_config(config.train.init_from, config)
  mesh = make_mesh(config.mesh, devices)
  rows_axes = mesh.shape["data"] * mesh.shape["fsdp"]
  if config.train.batch_size % rows_axes:
    raise ConfigError(f"config.train.batch_size={config.train.batch_size} does not split over the "
                      f"mesh's data x fsdp = {rows_axes} devices; use a multiple of {rows_axes}")
  checkpoint.workdir_path(workdir).mkdir(parents=True, exist_ok=True)
  fault_drill(0)
  config = with_prepared_data(config)          # data.path and new-token ids (prepare/cache.py)
  mc = validate_config(config)
  checkpoint.check_workdir_config(workdir, config)
  t_cfg = config.train

  with jax.set_mesh(mesh), nn.logical_axis_rules(LOGICAL_RULES):
    plan = build_train_step(config, mc, mesh)
    model, tx, example = plan.model, plan.tx, plan.example
    abstract_state, shardings, step_fn = plan.abstract_state, plan.shardings, plan.step_fn

    data = make_iterator(config, mesh=mesh)
    # Orbax's own barriers (creating the manager, restoring) are gloo collectives: meet here first.
    barrier("synergen_jax: before restoring or initializing the state")
    mngr = checkpoint.manager(workdir, t_cfg)
    start = mngr.latest_step()
    if start is not None:
      abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                              abstract_state, shardings)
      state, data_state = checkpoint.restore(mngr, start, abstract, data.get_state())
      data.set_state(data_state)
      log(f"train: resumed {workdir} at step {start}")
    else:
      start = 0
      state = jax.jit(lambda: init_state(model, tx, example, t_cfg.seed), out_shardings=shardings)()
      if t_cfg.init_from:
        abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                                abstract_state["params"], shardings["params"])
        params, from_step = checkpoint.restore_params(t_cfg.init_from, abstract,
                                                       fresh=state["params"])
        state = dict(state, params=params)
        log(f"train: parameters from {t_cfg.init_from} step {from_step}")

    end = t_cfg.steps if stop_after is None else min(t_cfg.steps, start + stop_after)
    heldout_on = split_examples(config, "eval") > 0
    if not heldout_on:
      log(f"train: held-out metrics and previews are off: the prepared data "
          f"({config.data.path or 'config.data.mixture'}) has no 'eval' split (prepare with "
          "config.data.eval_path, or a source with a held-out part, to turn them on)")
    # Images at each held-out pass (train/previews.py); built before the first step.
    previews = Previews(config, model, mesh) if heldout_on else None
    writer = MetricWriter(workdir, t_cfg.steps, config)
    peak = peak_flops_per_device()
    losses, evaluation = {}, {}

    def fresh_window():
      return dict(t0=time.perf_counter(), wait=0.0, n=0, flops=0.0, counts=None)
    window = fresh_window()
    for step in range(start, end):
      t_wait = time.perf_counter()
      batch = next(data)
      window["wait"] += time.perf_counter() - t_wait
      if step == start:
        compiled_together(step_fn, state, batch, name="train step")
      state, metrics = step_fn(state, batch)
      fault_drill(step + 1)
      # Exact counts over the logging window, summed on device (no host sync per step).
      counts = {k: metrics[k] for k in ("nonpad_slots", "examples", "slots")}
      window["counts"] = counts if window["counts"] is None else jax.tree.map(
          jnp.add, window["counts"], counts)
      window["n"] += 1
      last = step + 1 == end
      if (step + 1) % t_cfg.log_every == 0 or last:
        m = jax.device_get(metrics)
        c = jax.device_get(window["counts"])
        window.update(tokens=float(c["nonpad_slots"]), examples=float(c["examples"]),
                      slots=float(c["slots"]))
        if peak is not None:
          # Model FLOPs of the logged step's batch times the window's steps: counting every batch
          # would pull each one to the host inside the step loop.
          window["flops"] = _global_sum(accounting.batch_train_flops(mc, data.last_local)) * window["n"]
        elapsed = time.perf_counter() - window["t0"]
        loss = float(m["loss"])
        losses[step + 1] = loss
        if not m["finite"] and t_cfg.nonfinite == "stop":
          raise NonFiniteLoss(f"non-finite loss at step {step + 1} (loss {loss}, grad_norm "
                              f"{float(m['grad_norm'])}); the update was not applied. Lower "
                              "config.optim.learning_rate or set config.train.nonfinite=skip")
        writer.write(step + 1, {
            "loss": loss, "loss/text": float(m["loss/text"]), "loss/image": float(m["loss/image"]),
            "accuracy/text": float(m["accuracy/text"]), "accuracy/image": float(m["accuracy/image"]),
            "lr": float(m["lr"]), "grad_norm": float(m["grad_norm"]),
            "tokens_per_sec": window["tokens"] / elapsed,
            "examples_per_sec": window["examples"] / elapsed,
            "padding_fraction": 1.0 - window["tokens"] / max(window["slots"], 1),
            "data_wait_fraction": window["wait"] / elapsed,
            "mfu": (window["flops"] / elapsed / (peak * jax.device_count())) if peak else None,
            "nonfinite_skipped": int(jax.device_get(state["nonfinite"])),
            **component_examples(data)})
        writer.progress(step + 1, loss, window["tokens"] / elapsed,
                        elapsed / window["n"] * (end - step - 1))
        window = fresh_window()
      # The checkpoint is started before the held-out pass, and an error there waits for it: no
      # evaluation failure ever costs the run its checkpoint (the final one above all).
      saved = (step + 1) % t_cfg.checkpoint_every == 0 or step + 1 == t_cfg.steps
      if saved:
        checkpoint.save(mngr, step + 1, state, data.get_state())
      if heldout_on and ((t_cfg.eval_every and (step + 1) % t_cfg.eval_every == 0)
                         or step + 1 == t_cfg.steps):
        try:
          evaluation = heldout_metrics(config, model, state["params"], mesh,
                                       t_cfg.eval_batches or None)
          writer.write(step + 1, evaluation)
          writer.previews(step + 1, previews(state["params"]))   # every process decodes
        except BaseException:
          mngr.wait_until_finished()
          raise
        log(f"\ntrain: held-out at step {step + 1}: " +
              ", ".join(f"{k[5:]} {v:.4g}" for k, v in evaluation.items()))
      if preemption.reached(step + 1) and step + 1 < t_cfg.steps:
        if not saved:
          checkpoint.save(mngr, step + 1, state, data.get_state(), force=True)
        mngr.wait_until_finished()
        barrier("synergen_jax: preemption checkpoint committed")   # nobody exits early
        mngr.close()
        writer.close()
        log(f"train: preempted at step {step + 1}: checkpoint saved; rerun the same command to resume")
        raise Preempted(step + 1)
    mngr.wait_until_finished()
    mngr.close()
    writer.close()
  return dict(step=end, losses=losses, state=state, heldout=evaluation)
