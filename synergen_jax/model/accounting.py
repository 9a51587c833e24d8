"""Parameter counts and model FLOPs (the MFU convention below), analytic so they work for any config.

FLOPs convention (used for MFU): 2 FLOPs per multiply-add of every matmul a token really takes:
attention projections, the FFN of the expert it is routed to, the fold MLP (image slots), the unfold
head (r positions per target window, including its own attention and classifier), the LM head (text
target positions only), and attention scores + weighted values with causal halving (QK^T and PV over
T^2/2 pairs per head). Training counts 3x the forward (backward = 2x forward). Embedding lookups,
norms, RoPE and softmax are ignored.
"""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from synergen_jax.core.config import ModelConfig, StackConfig


# ---------------------------------------------------------------------------------------------------
# Parameters.
# ---------------------------------------------------------------------------------------------------

def _attention_params(s: StackConfig) -> int:
  q = s.d_model * s.num_heads * s.head_dim
  kv = 2 * s.d_model * s.num_kv_heads * s.head_dim
  o = s.num_heads * s.head_dim * s.d_model
  bias = (s.num_heads + 2 * s.num_kv_heads) * s.head_dim if s.qkv_bias else 0
  return q + kv + o + bias


def _ffn_params(s: StackConfig) -> int:
  return 3 * s.d_model * s.mlp_dim


def stack_params(s: StackConfig) -> int:
  per_layer = _attention_params(s) + s.num_experts * _ffn_params(s) + 2 * s.d_model
  return s.num_layers * per_layer + s.d_model


@dataclasses.dataclass(frozen=True)
class ParamCount:
  total: int
  activated: int      # per token: one expert's FFN instead of all of them
  parts: dict


def param_count(mc: ModelConfig) -> ParamCount:
  d, u = mc.llm.d_model, mc.unfold.d_model
  parts = dict(
      text_embed=mc.text_vocab * d,
      lm_head=0 if mc.tie_embeddings else d * mc.text_vocab,
      new_tokens=2 * len(mc.new_tokens) * d,
      llm_blocks=stack_params(mc.llm),
      fold=(mc.codebook_size * mc.code_embed_dim
            + mc.code_grid[0] * mc.code_grid[1] * mc.code_embed_dim
            + mc.fold_ratio * mc.code_embed_dim * mc.fold_mlp_hidden + mc.fold_mlp_hidden
            + mc.fold_mlp_hidden * d + d),
      unfold=(d * u + u + mc.codebook_size * u + mc.fold_ratio * u + stack_params(mc.unfold)
              + u * mc.codebook_size),
  )
  total = sum(parts.values())
  inactive = (mc.llm.num_experts - 1) * _ffn_params(mc.llm) * mc.llm.num_layers
  return ParamCount(total=total, activated=total - inactive, parts=parts)


def initialized_param_count(mc: ModelConfig, batch) -> int:
  """Counts the parameters the Flax module really creates (shapes only, nothing is allocated)."""
  from synergen_jax.model.synergen_vl import SynerGenVL
  shapes = jax.eval_shape(SynerGenVL(mc).init, jax.random.key(0), batch)
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(shapes))


# ---------------------------------------------------------------------------------------------------
# FLOPs.
# ---------------------------------------------------------------------------------------------------

def _stack_flops_per_token(s: StackConfig) -> int:
  """Matmul FLOPs of one token through a stack, excluding attention scores."""
  return 2 * s.num_layers * (_attention_params(s) + _ffn_params(s))


def _attention_score_flops(s: StackConfig, seq_len: int) -> int:
  """QK^T and PV, causal: seq_len^2 / 2 query-key pairs per head and layer."""
  return 2 * 2 * s.num_layers * s.num_heads * s.head_dim * seq_len * seq_len // 2


def forward_flops(mc: ModelConfig, *, text_slots: int, image_slots: int, text_targets: int,
                  image_targets: int, segment_lengths=None) -> int:
  """Model FLOPs of one forward over one sequence.

  segment_lengths: lengths of the packed examples (attention does not cross them); default one
  segment of text_slots + image_slots.
  """
  slots = text_slots + image_slots
  segment_lengths = segment_lengths or [slots]
  flops = slots * _stack_flops_per_token(mc.llm)
  flops += sum(_attention_score_flops(mc.llm, n) for n in segment_lengths)
  flops += image_slots * 2 * (mc.fold_ratio * mc.code_embed_dim * mc.fold_mlp_hidden
                              + mc.fold_mlp_hidden * mc.llm.d_model)
  flops += text_targets * 2 * mc.llm.d_model * mc.text_vocab
  r, u = mc.fold_ratio, mc.unfold
  per_window = (2 * mc.llm.d_model * u.d_model + r * _stack_flops_per_token(u)
                + _attention_score_flops(u, r) + r * 2 * u.d_model * mc.codebook_size)
  flops += image_targets * per_window
  return flops


def generation_example(mc: ModelConfig, prompt_tokens: int = 16) -> dict:
  """A text-to-image example: <s> prompt <boi> windows <eoi> </s>; loss on the image and <eoi>."""
  n = mc.windows_per_image
  return dict(text_slots=prompt_tokens + 4, image_slots=n, text_targets=1, image_targets=n)


def captioning_example(mc: ModelConfig, caption_tokens: int = 16) -> dict:
  """An image-to-text example: <s> <boi> windows <eoi> caption </s>; loss on the caption."""
  n = mc.windows_per_image
  return dict(text_slots=caption_tokens + 4, image_slots=n, text_targets=caption_tokens + 1,
              image_targets=0)


def train_flops(mc: ModelConfig, **example) -> int:
  return 3 * forward_flops(mc, **example)


def batch_train_flops(mc: ModelConfig, batch) -> int:
  """Training FLOPs of a host batch (numpy), summed per row from the slots and targets it holds."""
  total = 0
  for row in range(batch["segment_ids"].shape[0]):
    seg = batch["segment_ids"][row]
    image = int((batch["modality"][row] == 1).sum())
    total += train_flops(
        mc, text_slots=int((seg > 0).sum()) - image, image_slots=image,
        text_targets=int((batch["text_weights"][row] > 0).sum()),
        image_targets=int((batch["image_weights"][row] > 0).sum()),
        segment_lengths=[int((seg == s).sum()) for s in set(seg.tolist()) - {0}])
  return total
