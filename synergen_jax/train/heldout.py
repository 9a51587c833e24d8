"""Teacher-forced metrics on the held-out split: one pass, weighted by target counts.

This is the trainer's own check (does the model fit unseen examples?); generation quality and
caption accuracy from free decoding are `python -m synergen_jax.evaluate` (eval/report.py).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from synergen_jax.data.pipeline import make_iterator
from synergen_jax.model.losses import synergen_loss
from synergen_jax.parallel.distributed import compiled_together


@functools.lru_cache(maxsize=8)
def _sums_fn(model, image_weight: float):
  """One jitted pass per (model, loss weight): a run with eval_every compiles it once, not per eval."""
  @jax.jit
  def sums(params, batch):
    _, m = synergen_loss(model.apply(params, batch), image_weight)
    t, i = m["tokens/text"], m["tokens/image"]
    return dict(text_loss=m["loss/text"] * t, text_acc=m["accuracy/text"] * t, text=t,
                image_loss=m["loss/image"] * i, image_acc=m["accuracy/image"] * i, image=i,
                examples=jnp.sum(jnp.max(batch["segment_ids"], axis=1)))
  return sums


def heldout_metrics(config, model, params, mesh, max_batches: int | None = None) -> dict:
  """{"eval/loss/text", "eval/loss/image", "eval/accuracy/text", "eval/accuracy/image",
  "eval/examples"} over one epoch of config.data.path's eval split (its last partial batch dropped)."""
  data = make_iterator(config, split="eval", mesh=mesh, num_epochs=1)
  sums = _sums_fn(model, float(config.loss.image_weight))
  total = None
  for n, batch in enumerate(data):
    if max_batches is not None and n >= max_batches:
      break
    if n == 0:
      compiled_together(sums, params, batch, name="held-out pass")
    s = sums(params, batch)
    total = s if total is None else jax.tree.map(jnp.add, total, s)
  if total is None:
    return {}
  t = jax.device_get(total)
  text, image = max(float(t["text"]), 1.0), max(float(t["image"]), 1.0)
  return {"eval/loss/text": float(t["text_loss"]) / text, "eval/accuracy/text": float(t["text_acc"]) / text,
          "eval/loss/image": float(t["image_loss"]) / image,
          "eval/accuracy/image": float(t["image_acc"]) / image, "eval/examples": int(t["examples"])}
