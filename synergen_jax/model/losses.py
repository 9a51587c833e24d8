"""L = CE_text + lambda * CE_image, with per-modality metrics.

Normalisation (the paper does not state it; this is our choice): CE_text is the weighted mean over
text target positions; CE_image is the weighted mean over target windows of the mean over the window's
r codes, i.e. every code of a window counts the same and a window counts like one text token. Both
terms are means, so lambda (paper: 2) balances the two tasks independently of the fold ratio.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def _weighted_mean(values, weights):
  total = weights.sum()
  return (values * weights).sum() / jnp.maximum(total, 1e-8), total


def synergen_loss(outputs, image_weight: float):
  """Returns (loss, metrics) from SynerGenVL's outputs (per-target nll and hits, gathered)."""
  text_w = outputs["text_weights"].astype(jnp.float32)
  text_loss, text_count = _weighted_mean(outputs["text_nll"], text_w)
  text_acc, _ = _weighted_mean(outputs["text_hit"], text_w)

  img_w = outputs["image_weights"].astype(jnp.float32)
  img_loss, img_windows = _weighted_mean(outputs["image_nll"].mean(-1), img_w)
  img_acc, _ = _weighted_mean(outputs["image_hit"].mean(-1), img_w)

  loss = text_loss + image_weight * img_loss
  r = outputs["image_nll"].shape[-1]
  metrics = {
      "loss": loss,
      "loss/text": text_loss,
      "loss/image": img_loss,
      "accuracy/text": text_acc,
      "accuracy/image": img_acc,
      "tokens/text": text_count,
      "tokens/image": img_windows * r,
  }
  return loss, jax.tree.map(jnp.asarray, metrics)


def full_logits_loss(model, params, batch, image_weight: float):
  """The same loss from full [B, T, text_vocab] and [B, T, r, codebook] logits, every head on every
  slot: the reference the chunked, gathered heads are tested against, and the "before" of
  bench/forward_backward.py. Returns the loss."""
  hidden = model.apply(params, batch, method=model.hidden_states)
  text_logits = model.apply(params, hidden, method=model.text_logits)
  b, t, r = batch["image_targets"].shape
  image_logits = model.apply(params, hidden.reshape(b * t, -1),
                             batch["image_targets"].reshape(b * t, r), method=model.image_logits)
  text_ce = optax.softmax_cross_entropy_with_integer_labels(text_logits, batch["text_targets"])
  image_ce = optax.softmax_cross_entropy_with_integer_labels(
      image_logits, batch["image_targets"].reshape(b * t, r)).reshape(b, t, r).mean(-1)
  text_loss, _ = _weighted_mean(text_ce, batch["text_weights"].astype(jnp.float32))
  image_loss, _ = _weighted_mean(image_ce, batch["image_weights"].astype(jnp.float32))
  return text_loss + image_weight * image_loss
