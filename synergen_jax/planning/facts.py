"""The figures of one config the planner needs, read once: the model (its per-row budgets resolved
as the trainer and the AOT compile resolve them from the synthetic mix), parameter counts (total,
trained by the stage, one LLM layer), the batch and the sequence, the stage's step count.
"""

from __future__ import annotations

import dataclasses

from synergen_jax.core.config import ModelConfig, validate_config
from synergen_jax.data.synthetic import with_synthetic_budgets
from synergen_jax.model import accounting


@dataclasses.dataclass(frozen=True)
class Facts:
  mc: ModelConfig
  stage: str
  batch_size: int
  seq_len: int
  steps: int
  params: int               # every parameter the model creates
  trained: int              # the ones the stage trains (optimizer state and gradients)
  layer_params: int         # one LLM layer (attention + every expert's FFN)
  layer_trained: int        # the part of one LLM layer the stage trains
  head_params: int          # what is not in the LLM layers: embeddings, LM head, fold, unfold head
  param_bytes: int          # bytes of a master weight
  compute_bytes: int        # bytes of an activation

  @property
  def text_only(self) -> bool:
    return self.mc.unfold_capacity == 0


_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def stage_trained(mc: ModelConfig, stage: str, parts: dict) -> tuple[int, int]:
  """(parameters the stage trains, of them in one LLM layer): train/optimizer.py's STAGE_PATTERNS
  by count: stage 1 the fold embedding, vision experts, unfold head and new-token rows; stage 2 also
  every attention block; sft everything."""
  s = mc.llm
  attention = accounting._attention_params(s)
  vision = (s.num_experts - 1) * accounting._ffn_params(s)
  if stage == "sft":
    return sum(parts.values()), attention + s.num_experts * accounting._ffn_params(s) + 2 * s.d_model
  layer = vision + (attention if stage == "2" else 0)
  return parts["fold"] + parts["unfold"] + parts["new_tokens"] + s.num_layers * layer, layer


def facts(config) -> Facts:
  """Facts of a validated experiment config (its budgets None = derived from the synthetic mix)."""
  mc = validate_config(config)
  mc = with_synthetic_budgets(mc, config.data.seq_len)
  counts = accounting.param_count(mc)
  parts = dict(counts.parts)
  if not parts["new_tokens"] and mc.vision_experts:   # aot.for_target adds three new-token rows
    parts["new_tokens"] = 2 * 3 * mc.llm.d_model
  stage = str(config.get("stage", "sft") or "sft")
  trained, layer_trained = stage_trained(mc, stage, parts)
  s = mc.llm
  layer = accounting._attention_params(s) + s.num_experts * accounting._ffn_params(s) + 2 * s.d_model
  return Facts(mc=mc, stage=stage, batch_size=int(config.train.batch_size),
               seq_len=int(config.data.seq_len), steps=int(config.train.steps),
               params=sum(parts.values()), trained=trained, layer_params=layer,
               layer_trained=layer_trained, head_params=sum(parts.values()) - s.num_layers * layer,
               param_bytes=_BYTES[mc.param_dtype], compute_bytes=_BYTES[mc.dtype])


def text_only(*, layers: int, d_model: int, heads: int, kv_heads: int, head_dim: int, mlp: int,
              vocab: int, seq_len: int, batch_size: int, remat: str = "full") -> Facts:
  """Facts of a text-only decoder of these shapes (no vision experts, no image slots or targets;
  the image modules shrunk to a few hundred parameters): how the planner is held to published
  measurements of dense LLMs."""
  from synergen_jax.core.config import base_config
  config = base_config(
      model=dict(text_vocab=vocab, num_layers=layers, d_model=d_model, num_heads=heads,
                 num_kv_heads=kv_heads, head_dim=head_dim, mlp_dim=mlp, codebook_size=2,
                 code_embed_dim=8, code_grid=(1, 1), fold_mlp_hidden=8, vision_experts=False,
                 remat_policy=remat, dtype="bfloat16", scan_layers=True,
                 text_target_capacity=seq_len, image_slot_capacity=1, unfold_capacity=1),
      unfold=dict(num_layers=1, d_model=8, num_heads=1, num_kv_heads=1, head_dim=8, mlp_dim=8),
      seq_len=seq_len, fold=(1, 1))
  config.train.batch_size = batch_size
  config.stage = "sft"
  f = facts(config)
  mc = dataclasses.replace(f.mc, image_slot_capacity=0, unfold_capacity=0)
  return dataclasses.replace(f, mc=mc)
