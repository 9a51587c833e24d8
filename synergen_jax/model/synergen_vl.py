"""The whole SynerGen-VL model: embeddings -> decoder with vision experts -> text head + unfold head.

It reads the batch defined in `synergen_jax/batch.py` (T sequence slots, r = fh*fw codes per window).
The hidden state at <boi> predicts the first window; the last window's slot predicts nothing
(<eoi> is a text target there).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from synergen_jax.batch import IMAGE
from synergen_jax.config import ModelConfig
from synergen_jax.model.folding import FoldEmbed, UnfoldHead
from synergen_jax.model.layers import constrain, dtype_of, normal_init
from synergen_jax.model.transformer import DecoderStack


def gather_image_windows(image_weights: jax.Array, capacity: int):
  """Indices of the slots whose window is a loss target, compacted to the front of each row.

  Returns (slot_index [B, capacity], kept_weight [B, capacity], overflow [] int): targets beyond the
  capacity are not sent through the unfold head; `overflow` counts them so that is never silent.
  """
  is_target = image_weights > 0
  order = jnp.argsort(~is_target, axis=-1, stable=True)[:, :capacity]
  weights = jnp.take_along_axis(image_weights, order, axis=-1)
  overflow = jnp.maximum(is_target.sum(-1) - capacity, 0).sum()
  return order, weights, overflow


class SynerGenVL(nn.Module):
  cfg: ModelConfig
  routed_experts: bool = True   # False: masked dense expert reference (tests only)
  decode: bool = False          # KV-cached attention in the LLM and the unfold head (infer/decode.py)

  def setup(self):
    cfg = self.cfg
    pdt, cdt = dtype_of(cfg.llm.param_dtype), dtype_of(cfg.llm.dtype)
    self.text_embed = nn.Embed(cfg.text_vocab, cfg.llm.d_model, dtype=cdt, param_dtype=pdt,
                               embedding_init=normal_init(("vocab", "embed")))
    self.fold_embed = FoldEmbed(cfg)
    self.decoder = DecoderStack(cfg.llm, self.routed_experts, decode=self.decode)
    if not cfg.tie_embeddings:
      self.lm_head = nn.Dense(cfg.text_vocab, use_bias=False, dtype=cdt, param_dtype=pdt,
                              kernel_init=normal_init(("embed", "vocab")))
    self.unfold_head = UnfoldHead(cfg, decode=self.decode)
    if cfg.new_tokens:
      # Tokens the sequence format adds to a (pretrained) LLM: <boi>, <eoi>, <UNCOND>. Their rows live
      # in separate parameters so stage 1 can train them while the text table stays frozen.
      n = len(cfg.new_tokens)
      self.new_token_embed = self.param("new_token_embed", normal_init(("vocab", "embed")),
                                        (n, cfg.llm.d_model), pdt)
      self.new_token_head = self.param("new_token_head", normal_init(("embed", "vocab")),
                                       (cfg.llm.d_model, n), pdt)

  # -- pieces, so that decoding and tests can call them separately ---------------------------------

  def embed(self, batch) -> jax.Array:
    """Text embedding at text slots, folded window embedding at image slots: [B, T, d_model].

    The fold MLP runs on every slot and is selected by modality: simpler than a gather, at a cost of
    (fold MLP FLOPs x text slots), small next to one LLM layer.
    """
    text = self.text_embed(batch["text_tokens"])
    for i, token in enumerate(self.cfg.new_tokens):
      text = jnp.where((batch["text_tokens"] == token)[..., None],
                       self.new_token_embed[i].astype(text.dtype), text)
    image = self.fold_embed(batch["image_codes"], batch["window_ids"])
    x = jnp.where((batch["modality"] == IMAGE)[..., None], image, text)
    return constrain(x, ("batch", "length", "act_embed"))

  def backbone(self, x, batch) -> jax.Array:
    return self.decoder(x, batch["positions"], batch["segment_ids"], batch["modality"])

  def text_logits(self, hidden) -> jax.Array:
    if self.cfg.tie_embeddings:
      logits = self.text_embed.attend(hidden)
    else:
      logits = self.lm_head(hidden)
    if self.cfg.new_tokens:
      new = hidden @ self.new_token_head.astype(hidden.dtype)
      logits = logits.at[..., jnp.asarray(self.cfg.new_tokens)].set(new.astype(logits.dtype))
    return constrain(logits.astype(jnp.float32), ("batch", "length", "act_vocab"))

  def image_logits(self, hidden, codes) -> jax.Array:
    return self.unfold_head(hidden, codes)

  # -- decoding (decode=True): the LLM over new slots, the unfold head one code at a time -------------

  def hidden_states(self, batch) -> jax.Array:
    """Final LLM states of the batch's slots [B, t, d_model]; with decode=True, appends to the cache."""
    return self.backbone(self.embed(batch), batch)

  def unfold_first(self, hidden) -> jax.Array:
    return self.unfold_head.first(hidden)

  def unfold_next(self, codes, j) -> jax.Array:
    return self.unfold_head.next_code(codes, j)

  # -- training forward ------------------------------------------------------------------------------

  def __call__(self, batch):
    """Teacher-forced forward. Returns a dict:

      text_logits   [B, T, V] float32
      image_logits  [B, W, r, K] float32 for the W = unfold capacity gathered target windows
      image_targets [B, W, r], image_weights [B, W]: the gathered targets and their weights
      image_overflow []: target windows that did not fit the unfold capacity (not in the loss)
    """
    hidden = self.hidden_states(batch)
    b, t = batch["image_weights"].shape
    capacity = min(self.cfg.unfold_capacity or t, t)
    slots, weights, overflow = gather_image_windows(batch["image_weights"], capacity)
    h = jnp.take_along_axis(hidden, slots[..., None], axis=1)                       # [B, W, D]
    targets = jnp.take_along_axis(batch["image_targets"], slots[..., None], axis=1)  # [B, W, r]
    r = self.cfg.fold_ratio
    logits = self.image_logits(h.reshape(b * capacity, -1), targets.reshape(b * capacity, r))
    return dict(text_logits=self.text_logits(hidden),
                image_logits=logits.reshape(b, capacity, r, -1),
                image_targets=targets, image_weights=weights, image_overflow=overflow)
