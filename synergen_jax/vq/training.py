"""Trains the image tokenizer (vq/autoencoder.py) on the configured source's training split.

The library behind `python -m synergen_jax.train_vq --config configs/demo.py --workdir DIR`; the
trainer's data cache (prepare/cache.py) calls `train` when a config has no tokenizer yet.

Writes to the workdir: `vq_config.json` (what `ImageTokenizer.load` rebuilds the model from), Orbax
checkpoints in `checkpoints/`, `vq_metrics.jsonl`, `recon.png` (held-out originals above their
reconstructions) and `vq_report.json`: reconstruction MSE / PSNR and codebook usage on the held-out
images of the split `prepare` also holds out.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp

from synergen_jax.core import storage
from synergen_jax.core.config import validate_config
from synergen_jax.data import images as image_ops
from synergen_jax.core.errors import BadRecord
from synergen_jax.data.sources import open_source, split_indices
from synergen_jax.vq import autoencoder as vq


def load_pixels(source, indices, config) -> tuple[np.ndarray, np.ndarray, collections.Counter]:
  """Decodes and fits the images at `indices`: (uint8 [N, S, S, C], kept indices, skips by reason)."""
  size = vq.VQConfig.from_config(config).image_size
  pixels, kept, skipped = [], [], collections.Counter()
  for i in indices:
    try:
      raw = source[int(i)]
      img = image_ops.decode(raw.image)
      pixels.append(image_ops.fit(img, size, config.vq.channels, config.data.image_fit,
                                  source.background))
      kept.append(int(i))
    except BadRecord as e:
      skipped[e.reason] += 1
  if not pixels:
    raise BadRecord("no_images", f"none of {len(indices)} images of {source.name} could be used: "
                    f"{dict(skipped)}")
  return np.stack(pixels), np.asarray(kept), skipped


def make_train_step(model: vq.VQModel, optimizer, config):
  v = config.vq

  def loss_fn(params, images):
    out = model.apply(params, images)
    mse = jnp.mean(jnp.square(out["recon"] - images))
    return mse + out["vq_loss"], (out, mse)

  @jax.jit
  def train_step(state, images, rng):
    params, opt_state, usage, step = state["params"], state["opt_state"], state["usage"], state["step"]
    (loss, (out, mse)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, images)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    usage = vq.update_usage(usage, out["codes"], v.usage_decay)
    # Dead-code restart, every `restart_every` steps: a pure where(), so the step stays one program.
    due = (step + 1) % v.restart_every == 0
    book, new_usage, n_dead = vq.restart_dead_codes(
        params["params"]["codebook"], usage, jax.lax.stop_gradient(out["z"]), rng, v.restart_threshold)
    params = {"params": {**params["params"],
                         "codebook": jnp.where(due, book, params["params"]["codebook"])}}
    usage = jnp.where(due, new_usage, usage)
    metrics = dict(loss=loss, recon_mse=mse, vq_loss=out["vq_loss"],
                   restarted=jnp.where(due, n_dead, 0), active_codes=jnp.sum(usage > v.restart_threshold))
    return dict(params=params, opt_state=opt_state, usage=usage, step=step + 1), metrics
  return train_step


def evaluate(model, params, pixels, batch_size: int, codebook_size: int) -> dict:
  """Held-out reconstruction error (on [0, 255] pixels, and PSNR) and codebook usage."""
  recon_fn = jax.jit(lambda p, x: (vq.to_uint8(model.apply(p, x)["recon"]),
                                   model.apply(p, x, method=model.encode)))
  recons, codes = [], []
  for start in range(0, len(pixels), batch_size):
    r, c = recon_fn(params, vq.to_model_range(jnp.asarray(pixels[start:start + batch_size])))
    recons.append(np.asarray(r)); codes.append(np.asarray(c))
  recons, codes = np.concatenate(recons), np.concatenate(codes)
  err = (recons.astype(np.float64) - pixels.astype(np.float64)) / 255.0
  mse = float(np.mean(err ** 2))
  counts = np.bincount(codes.reshape(-1), minlength=codebook_size)
  baseline = float(np.mean((pixels / 255.0 - pixels.mean(0) / 255.0) ** 2))
  return dict(held_out=int(len(pixels)), mse=mse, psnr=float(-10 * np.log10(max(mse, 1e-12))),
              mse_of_mean_image=baseline, codes_used=int(np.sum(counts > 0)),
              codebook_size=codebook_size, usage_fraction=float(np.mean(counts > 0)),
              perplexity=float(vq.perplexity(jnp.asarray(counts, jnp.float32)))), recons


def train(config, workdir: str) -> dict:
  """Trains, checkpoints and evaluates the tokenizer; returns the report written to vq_report.json."""
  validate_config(config)
  v, vq_config = config.vq, vq.VQConfig.from_config(config)
  root = storage.absolute(workdir, "image tokenizer workdir")     # a folder or a bucket path
  root.mkdir(parents=True, exist_ok=True)
  source = open_source(config.data)
  train_idx, eval_idx = split_indices(len(source), config.data.eval_count, config.data.seed)
  eval_idx = eval_idx[:v.eval_count]
  train_px, _, train_skipped = load_pixels(source, train_idx, config)
  eval_px, _, eval_skipped = load_pixels(source, eval_idx, config)
  print(f"train_vq: {len(train_px)} training and {len(eval_px)} held-out images of {source.name} "
        f"({'x'.join(map(str, train_px.shape[1:]))}); skipped {dict(train_skipped + eval_skipped)}",
        flush=True)

  model = vq.VQModel(vq_config)
  rng = jax.random.key(config.train.seed)
  params = model.init(rng, jnp.zeros((1,) + train_px.shape[1:], jnp.float32))
  schedule = optax.warmup_cosine_decay_schedule(0.0, v.learning_rate, min(100, v.steps // 10 + 1),
                                                max(v.steps, 1), v.learning_rate * 0.1)
  optimizer = optax.adam(schedule)
  state = dict(params=params, opt_state=optimizer.init(params),
               usage=jnp.ones(vq_config.codebook_size, jnp.float32), step=jnp.zeros((), jnp.int32))
  train_step = make_train_step(model, optimizer, config)

  storage.write_text(root / "vq_config.json", json.dumps(dict(
      vq=dataclasses.asdict(vq_config), data_name=config.data.name, image_fit=config.data.image_fit,
      background=source.background), indent=1))
  order_rng = np.random.default_rng(config.train.seed)
  order, cursor = order_rng.permutation(len(train_px)), 0
  t0 = time.time()
  with (root / "vq_metrics.jsonl").open("w") as log:      # on a bucket: whole when training ends
    for step in range(v.steps):
      if cursor + v.batch_size > len(order):
        order, cursor = order_rng.permutation(len(train_px)), 0
      batch = vq.to_model_range(jnp.asarray(train_px[order[cursor:cursor + v.batch_size]]))
      cursor += v.batch_size
      state, metrics = train_step(state, batch, jax.random.fold_in(rng, step))
      if (step + 1) % v.log_every == 0 or step + 1 == v.steps:
        row = dict(step=step + 1, **{k: float(m) for k, m in metrics.items()},
                   seconds=round(time.time() - t0, 2))
        log.write(json.dumps(row) + "\n"); log.flush()
        print(f"train_vq step {row['step']}/{v.steps}: recon_mse {row['recon_mse']:.4f} "
              f"active_codes {int(row['active_codes'])} restarted {int(row['restarted'])} "
              f"({row['seconds']:.0f}s)", flush=True)

  with ocp.CheckpointManager(root / "checkpoints") as manager:
    manager.save(v.steps, args=ocp.args.StandardSave(dict(params=state["params"], usage=state["usage"])))
    manager.wait_until_finished()
  report, recons = evaluate(model, state["params"], eval_px, v.encode_batch, vq_config.codebook_size)
  report.update(steps=v.steps, train_images=int(len(train_px)), seconds=round(time.time() - t0, 1),
                skipped=dict(train_skipped + eval_skipped))
  storage.write_text(root / "vq_report.json", json.dumps(report, indent=1))
  n = min(16, len(eval_px))
  image_ops.save_grid(np.concatenate([eval_px[:n], recons[:n]]), str(root / "recon.png"), cols=n)
  return report

