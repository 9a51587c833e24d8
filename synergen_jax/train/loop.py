"""The training loop, top to bottom: config -> data -> mesh -> state -> steps -> checkpoints/metrics."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from synergen_jax import train_vq
from synergen_jax.config import ConfigError, validate_config
from synergen_jax.data.image_tokenizer import ImageTokenizer
from synergen_jax.data.pipeline import BATCH_FIELDS, batch_sharding, make_iterator
from synergen_jax.data.prepare import prepare
from synergen_jax.model import accounting
from synergen_jax.model.synergen_vl import SynerGenVL
from synergen_jax.parallel.mesh import make_mesh
from synergen_jax.parallel.sharding import LOGICAL_RULES
from synergen_jax.train import checkpoint
from synergen_jax.train.heldout import heldout_metrics
from synergen_jax.train.metrics import MetricWriter, peak_flops_per_device
from synergen_jax.train.optimizer import make_optimizer, trainable_mask
from synergen_jax.train.state import (abstract_params, init_state, make_train_step,
                                      replicated_fraction, state_shardings,
                                      strip_boxes)


class NonFiniteLoss(RuntimeError):
  pass


def _global_sum(value: float) -> float:
  """Sum of a host number over processes (each process counts its own rows)."""
  if jax.process_count() == 1:
    return value
  from jax.experimental import multihost_utils
  return float(np.sum(multihost_utils.process_allgather(np.float64(value))))


def log(message: str) -> None:
  """Progress lines from process 0 only (every process runs the same loop)."""
  if jax.process_index() == 0:
    print(message, flush=True)


# ---------------------------------------------------------------------------------------------------
# Data: prepared once per (dataset, tokenizer) into a cache, so a train command alone works.
# ---------------------------------------------------------------------------------------------------

def _cache_key(config) -> str:
  d = json.loads(config.data.to_json_best_effort())
  for knob in ("path", "cache_dir", "seq_len", "too_long", "num_workers", "prefetch", "packing_bins",
               "shards"):
    d.pop(knob, None)
  v = json.loads(config.vq.to_json_best_effort())
  v.pop("workdir", None)
  m = config.model
  key = json.dumps(dict(data=d, vq=v, grid=list(m.code_grid), codebook=m.codebook_size,
                        text_vocab=m.text_vocab), sort_keys=True)
  return hashlib.sha256(key.encode()).hexdigest()[:12]


def cache_root(config) -> str:
  """config.data.cache_dir, else $SYNERGEN_CACHE, else ~/.cache/synergen_jax."""
  return config.data.cache_dir or os.environ.get(
      "SYNERGEN_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "synergen_jax"))


def ensure_prepared(config) -> str:
  """config.data.path if set; else the cache entry for this data/tokenizer config, built if missing
  (train the image tokenizer unless config.vq.workdir names one, then prepare)."""
  if config.data.path:
    return config.data.path
  if jax.process_count() > 1:
    # One process builds the cache entry (on a file system every process sees), the others wait.
    from jax.experimental import multihost_utils
    data_dir = ensure_prepared_here(config) if jax.process_index() == 0 else None
    multihost_utils.sync_global_devices("synergen_jax: data prepared")
    return data_dir or ensure_prepared_here(config)
  return ensure_prepared_here(config)


def ensure_prepared_here(config) -> str:
  root = cache_root(config)
  entry = os.path.join(root, f"{config.data.name.replace(':', '_')}-{_cache_key(config)}")
  data_dir = os.path.join(entry, "data")
  if os.path.exists(os.path.join(data_dir, "meta.json")):
    return data_dir
  vq_dir = config.vq.workdir or os.path.join(entry, "vq")
  if not os.path.exists(os.path.join(vq_dir, "vq_config.json")):
    print(f"train: no image tokenizer for this config yet; training one into {vq_dir}", flush=True)
    train_vq.train(config, vq_dir)
  print(f"train: preparing {config.data.name} into {data_dir}", flush=True)
  meta = prepare(config, data_dir + ".tmp", ImageTokenizer.load(vq_dir, config.vq.encode_batch))
  os.replace(data_dir + ".tmp", data_dir)     # a cut-off prepare is never mistaken for a finished one
  print(f"train: {meta['splits']['train']['examples']} training examples, skipped {meta['skipped']}")
  return data_dir


def _with_data(config, data_dir: str):
  """The config the model is built from: data path and the new-token ids of the prepared tokenizer."""
  config = config.copy_and_resolve_references()
  with open(os.path.join(data_dir, "meta.json")) as f:
    special = json.load(f)["special"]
  config.data.path = data_dir
  if not config.model.new_tokens:
    config.model.new_tokens = (special["boi"], special["eoi"], special["uncond"])
  return config


def _example_batch(config, mc, xp=jnp):
  b, t, r = config.train.batch_size, config.data.seq_len, mc.fold_ratio
  return {k: xp.zeros((b, t, r) if k in ("image_codes", "image_targets") else (b, t),
                      jnp.float32 if k.endswith("weights") else jnp.int32) for k in BATCH_FIELDS}


# ---------------------------------------------------------------------------------------------------
# The train step: built here for the loop and for AOT compilation (synergen_jax/aot.py).
# ---------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class StepPlan:
  model: SynerGenVL
  example: dict                 # a zero batch of the training shape
  tx: object
  abstract_state: dict          # ShapeDtypeStructs of the train state
  shardings: dict               # NamedShardings of the train state
  step_fn: object               # jitted (state, batch) -> (state, metrics), state donated


def build_train_step(config, mc, mesh, host_example: bool = False) -> StepPlan:
  """Model, optimizer, state shardings and the jitted step; call under the mesh and logical rules.
  Raises ConfigError when more parameter bytes would be replicated than the config allows.
  host_example: the zero batch as numpy (AOT: the mesh's devices are descriptions, nothing can be
  placed on them)."""
  t_cfg = config.train
  model = SynerGenVL(mc)
  example = _example_batch(config, mc, np if host_example else jnp)
  boxed = abstract_params(model, example)
  params_shape = strip_boxes(boxed)
  tx, schedule = make_optimizer(config, params_shape)
  abstract_state = jax.eval_shape(lambda: init_state(model, tx, example, t_cfg.seed))
  shardings = state_shardings(boxed, abstract_state, mesh)
  share = replicated_fraction(params_shape, shardings["params"])
  if share > t_cfg.max_replicated_fraction:
    raise ConfigError(f"{share:.0%} of parameter bytes would be replicated on mesh "
                      f"{dict(mesh.shape)}, above config.train.max_replicated_fraction="
                      f"{t_cfg.max_replicated_fraction}; shard more (fsdp/tensor) or raise the limit")
  trainable = trainable_mask(params_shape, config.stage)
  step_fn = jax.jit(
      make_train_step(model, tx, schedule, trainable, config.loss.image_weight, t_cfg.grad_accum),
      in_shardings=(shardings, batch_sharding(mesh)), out_shardings=(shardings, None),
      donate_argnums=0)
  return StepPlan(model, example, tx, abstract_state, shardings, step_fn)


# ---------------------------------------------------------------------------------------------------
# The loop.
# ---------------------------------------------------------------------------------------------------

def train(config, workdir: str, *, stop_after: int | None = None, devices=None) -> dict:
  """Trains until config.train.steps (or `stop_after` more steps, for tests); resumes from workdir.

  Returns {"step", "losses": {step: loss} of the logged steps this call ran, "state"}. `devices`
  restricts the mesh to some devices (tests: one device vs eight).
  """
  validate_config(config)                        # every config error before any device work
  if config.train.init_from:
    checkpoint.check_init_from_config(config.train.init_from, config)
  mesh = make_mesh(config.mesh, devices)
  rows_axes = mesh.shape["data"] * mesh.shape["fsdp"]
  if config.train.batch_size % rows_axes:
    raise ConfigError(f"config.train.batch_size={config.train.batch_size} does not split over the "
                      f"mesh's data x fsdp = {rows_axes} devices; use a multiple of {rows_axes}")
  checkpoint.workdir_path(workdir).mkdir(parents=True, exist_ok=True)
  config = _with_data(config, ensure_prepared(config))
  mc = validate_config(config)
  checkpoint.check_workdir_config(workdir, config)
  t_cfg = config.train

  with jax.set_mesh(mesh), nn.logical_axis_rules(LOGICAL_RULES):
    plan = build_train_step(config, mc, mesh)
    model, tx, example = plan.model, plan.tx, plan.example
    abstract_state, shardings, step_fn = plan.abstract_state, plan.shardings, plan.step_fn

    data = make_iterator(config, mesh=mesh)
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
    writer = MetricWriter(workdir, t_cfg.steps)
    peak = peak_flops_per_device()
    losses, evaluation = {}, {}

    def fresh_window():
      return dict(t0=time.perf_counter(), wait=0.0, n=0, flops=0.0, counts=None)
    window = fresh_window()
    for step in range(start, end):
      t_wait = time.perf_counter()
      batch = next(data)
      window["wait"] += time.perf_counter() - t_wait
      state, metrics = step_fn(state, batch)
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
            "image/overflow_windows": float(m["image/overflow_windows"])})
        writer.progress(step + 1, loss, window["tokens"] / elapsed,
                        elapsed / window["n"] * (end - step - 1))
        window = fresh_window()
      if (t_cfg.eval_every and (step + 1) % t_cfg.eval_every == 0) or step + 1 == t_cfg.steps:
        evaluation = heldout_metrics(config, model, state["params"], mesh, t_cfg.eval_batches or None)
        writer.write(step + 1, evaluation)
        log(f"\ntrain: held-out at step {step + 1}: " +
              ", ".join(f"{k[5:]} {v:.4g}" for k, v in evaluation.items()))
      if (step + 1) % t_cfg.checkpoint_every == 0 or step + 1 == t_cfg.steps:
        checkpoint.save(mngr, step + 1, state, data.get_state())
    mngr.wait_until_finished()
    mngr.close()
    writer.close()
  return dict(step=end, losses=losses, state=state, heldout=evaluation)
