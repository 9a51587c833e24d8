"""The whole SynerGen-VL model: embeddings -> decoder with vision experts -> text head + unfold head.

It reads the batch defined in `synergen_jax/core/batch.py` (T sequence slots, r = fh*fw codes per window).
The hidden state at <boi> predicts the first window; the last window's slot predicts nothing
(<eoi> is a text target there).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from synergen_jax.core.batch import IMAGE
from synergen_jax.core.config import ModelConfig
from synergen_jax.model.folding import FoldEmbed, UnfoldHead
from synergen_jax.model.chunked_xent import linear_cross_entropy
from synergen_jax.model.layers import Classifier, constrain, dtype_of, lookup, normal_init
from synergen_jax.model.transformer import DecoderStack
from synergen_jax.parallel.sharding import per_batch_shard


def gather_slots(selected: jax.Array, capacity: int):
  """The first `capacity` slots of each row where `selected` holds, compacted to the front.

  Returns (slots [B, capacity] int32, valid [B, capacity] bool); entries past a row's count are
  valid=False (they point at unselected slots). The packer's per-row budgets guarantee that no
  selected slot falls beyond the capacity (data/budgets.py checks every batch on the host).
  """
  order = jnp.argsort(~selected, axis=-1, stable=True)[:, :capacity].astype(jnp.int32)
  return order, jnp.take_along_axis(selected, order, axis=-1)


def take_rows(x: jax.Array, slots: jax.Array) -> jax.Array:
  """x [B, T, ...] at slots [B, C] -> [B, C, ...]."""
  return jnp.take_along_axis(x, slots.reshape(slots.shape + (1,) * (x.ndim - 2)), axis=1)


class SynerGenVL(nn.Module):
  cfg: ModelConfig
  routed_experts: bool = True   # False: masked dense expert reference (tests only)
  decode: bool = False          # KV-cached attention in the LLM and the unfold head (infer/decode.py)

  def setup(self):
    cfg = self.cfg
    pdt, cdt = dtype_of(cfg.llm.param_dtype), dtype_of(cfg.llm.dtype)
    self.text_embed = nn.Embed(cfg.text_vocab, cfg.llm.d_model, dtype=cdt, param_dtype=pdt,
                               embedding_init=normal_init(("vocab", "embed")))
    # The fold MLP's input is r x code_embed_dim wide per image slot (16 x 2048 in the paper config):
    # recomputed in the backward pass rather than held, when the config rematerialises.
    fold = FoldEmbed if cfg.llm.remat_policy == "none" or self.decode else nn.remat(FoldEmbed)
    self.fold_embed = fold(cfg)
    self.decoder = DecoderStack(cfg.llm, self.routed_experts, decode=self.decode)
    if not cfg.tie_embeddings:
      self.lm_head = Classifier(cfg.llm.d_model, cfg.text_vocab, ("embed", "vocab"),
                                cfg.llm.dtype, cfg.llm.param_dtype)
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

    The fold MLP runs on the row's image slots only, gathered into `image_slot_capacity` slots (all
    slots when it is None) and scattered back over the text embeddings.
    """
    text = lookup((self.text_embed.embedding.astype(dtype_of(self.cfg.llm.dtype)),),
                  (batch["text_tokens"],), (("vocab", "embed"),))
    for i, token in enumerate(self.cfg.new_tokens):
      text = jnp.where((batch["text_tokens"] == token)[..., None],
                       self.new_token_embed[i].astype(text.dtype), text)
    is_image = batch["modality"] == IMAGE
    t = is_image.shape[1]
    capacity = self.cfg.image_slot_capacity
    if capacity is None or capacity >= t:
      image = self.fold_embed(batch["image_codes"], batch["window_ids"])
      x = jnp.where(is_image[..., None], image, text)
    else:
      slots, valid = gather_slots(is_image, capacity)
      image = self.fold_embed(take_rows(batch["image_codes"], slots),
                              take_rows(batch["window_ids"], slots))               # [B, C, D]
      slots = jnp.where(valid, slots, t)                  # unused entries write nowhere ("drop")
      x = jax.vmap(lambda row, s, u: row.at[s].set(u.astype(row.dtype), mode="drop"))(
          text, slots, image)
    return constrain(x, ("batch", "length", "act_embed"))

  def backbone(self, x, batch) -> jax.Array:
    return self.decoder(x, batch["positions"], batch["segment_ids"], batch["modality"])

  def text_kernel(self) -> jax.Array:
    """The LM head as a [d_model, text_vocab] matrix: the tied embedding or lm_head's kernel, with
    the new tokens' columns taken from new_token_head."""
    kernel = self.text_embed.embedding.T if self.cfg.tie_embeddings else self.lm_head.kernel
    if self.cfg.new_tokens:
      kernel = kernel.at[:, jnp.asarray(self.cfg.new_tokens)].set(
          self.new_token_head.astype(kernel.dtype))
    return kernel

  def text_logits(self, hidden) -> jax.Array:
    """Full logits [..., text_vocab] float32 (decoding and scoring; training uses __call__)."""
    cdt = dtype_of(self.cfg.llm.dtype)
    logits = jnp.dot(hidden.astype(cdt), self.text_kernel().astype(cdt))
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
    """Teacher-forced forward to per-target losses; no [*, vocabulary] logits are ever built.

    Returns a dict (C_t = text_target_capacity, C_w = unfold_capacity, None = T):
      text_nll, text_hit [B, C_t]: -log p and argmax == target at the gathered text-target slots
      text_weights [B, C_t]: their loss weights (0 for unused capacity)
      image_nll, image_hit [B, C_w, r]: the same per code of the gathered target windows
      image_weights [B, C_w]
    """
    hidden = self.hidden_states(batch)
    t = hidden.shape[1]
    m = self.cfg

    slots, valid = gather_slots(batch["text_weights"] > 0, min(m.text_target_capacity or t, t))
    text_nll, text_hit = per_batch_shard(
        lambda h, y, kernel: linear_cross_entropy(
            h.reshape(-1, h.shape[-1]), kernel, y.reshape(-1), chunk_rows=m.loss_chunk_rows,
            vocab_tile=m.loss_vocab_tile),
        (take_rows(hidden, slots), take_rows(batch["text_targets"], slots)),
        (self.text_kernel().astype(hidden.dtype),), (("embed", "vocab"),))
    b, c = slots.shape
    text_weights = jnp.where(valid, take_rows(batch["text_weights"], slots), 0.0)

    windows, valid = gather_slots(batch["image_weights"] > 0, min(m.unfold_capacity or t, t))
    image_nll, image_hit = self.unfold_head.loss_terms(take_rows(hidden, windows),
                                                       take_rows(batch["image_targets"], windows))
    return dict(text_nll=text_nll.reshape(b, c), text_hit=text_hit.reshape(b, c),
                text_weights=text_weights, image_nll=image_nll, image_hit=image_hit,
                image_weights=jnp.where(valid, take_rows(batch["image_weights"], windows), 0.0))
