"""AdamW with warm-up + constant/cosine schedule, clipping, a weight-decay mask and training stages.

Stages (SynerGen-VL's progressive alignment pretraining, `config.stage`) select trainable parameters by path; everything else
goes through `optax.set_to_zero()` inside `optax.multi_transform`, so it never moves and holds no
optimizer state:

  stage 1   image-specific parameters: fold embedding (code table, 2-D positions, fold MLP), the
            vision-expert FFNs, the unfold head, the new-token rows (<boi> <eoi> <UNCOND>)
  stage 2   stage 1 + every self-attention block of the LLM
  sft       everything
"""

from __future__ import annotations

import re

import jax
import optax

STAGE_PATTERNS = {
    "1": (r"fold_embed/", r"/ffn/vision_", r"unfold_head/", r"new_token_(embed|head)"),
    "2": (r"fold_embed/", r"/ffn/vision_", r"unfold_head/", r"new_token_(embed|head)",
          r"decoder/.*attention/"),
    "sft": (r".*",),
}


def _path(path) -> str:
  return jax.tree_util.keystr(path, simple=True, separator="/")


def trainable_mask(params, stage: str):
  """Pytree of bools: which parameters the stage trains."""
  patterns = [re.compile(p) for p in STAGE_PATTERNS[str(stage)]]
  return jax.tree_util.tree_map_with_path(
      lambda path, _: any(p.search(_path(path)) for p in patterns), params)


def decay_mask(params):
  """Weight decay on matrices only: norms' scales and biases are not decayed."""
  return jax.tree_util.tree_map_with_path(
      lambda path, x: x.ndim >= 2 and not _path(path).endswith(("scale", "_bias")), params)


def learning_rate_schedule(optim) -> optax.Schedule:
  warmup = optax.linear_schedule(0.0, optim.learning_rate, max(optim.warmup_steps, 1))
  if optim.schedule == "constant":
    after = optax.constant_schedule(optim.learning_rate)
  elif optim.schedule == "cosine":
    after = optax.cosine_decay_schedule(optim.learning_rate, max(optim.decay_steps, 1),
                                        alpha=optim.min_lr_ratio)
  else:
    raise ValueError(f"config.optim.schedule={optim.schedule!r}; choose constant or cosine")
  return optax.join_schedules([warmup, after], [optim.warmup_steps])


def make_optimizer(config, params) -> tuple[optax.GradientTransformation, optax.Schedule]:
  o = config.optim
  schedule = learning_rate_schedule(o)
  train = optax.chain(
      optax.clip_by_global_norm(o.clip_norm),
      optax.adamw(schedule, b1=o.b1, b2=o.b2, eps=o.eps, weight_decay=o.weight_decay,
                  mask=decay_mask))
  labels = jax.tree.map(lambda t: "train" if t else "frozen", trainable_mask(params, config.stage))
  return optax.multi_transform({"train": train, "frozen": optax.set_to_zero()}, labels), schedule
