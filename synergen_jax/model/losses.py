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


def synergen_loss(outputs, batch, image_weight: float):
  """Returns (loss, metrics) from SynerGenVL outputs and the batch."""
  text_w = batch["text_weights"].astype(jnp.float32)
  text_ce = optax.softmax_cross_entropy_with_integer_labels(outputs["text_logits"],
                                                            batch["text_targets"])
  text_loss, text_count = _weighted_mean(text_ce, text_w)
  text_acc, _ = _weighted_mean(
      (outputs["text_logits"].argmax(-1) == batch["text_targets"]).astype(jnp.float32), text_w)

  img_w = outputs["image_weights"].astype(jnp.float32)
  img_ce = optax.softmax_cross_entropy_with_integer_labels(outputs["image_logits"],
                                                           outputs["image_targets"])  # [B, W, r]
  img_loss, img_windows = _weighted_mean(img_ce.mean(-1), img_w)
  img_hit = (outputs["image_logits"].argmax(-1) == outputs["image_targets"]).astype(jnp.float32)
  img_acc, _ = _weighted_mean(img_hit.mean(-1), img_w)

  loss = text_loss + image_weight * img_loss
  r = outputs["image_targets"].shape[-1]
  metrics = {
      "loss": loss,
      "loss/text": text_loss,
      "loss/image": img_loss,
      "accuracy/text": text_acc,
      "accuracy/image": img_acc,
      "tokens/text": text_count,
      "tokens/image": img_windows * r,
      "image/overflow_windows": outputs["image_overflow"],
  }
  return loss, jax.tree.map(jnp.asarray, metrics)
