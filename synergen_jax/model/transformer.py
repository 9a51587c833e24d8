"""Llama/InternLM2-style decoder stack: pre-RMSNorm, RoPE, grouped-query attention, SwiGLU experts.

The same `DecoderStack` serves the LLM (with text/vision experts) and the unfold head (one FFN).
Layers are either unrolled (`layer_0`, `layer_1`, ...) or one `nn.scan` over a stacked `layers` axis,
each optionally rematerialised with the policy named in the config.

`decode=True` turns every attention layer into a KV-cached one (flax "cache" collection: key, value,
which slots hold real tokens, and the write index). The first call, with inputs as long as the
cache should be, only creates the cache; every later call appends its slots and attends to the
cache. Left padding (segment id 0) lets prompts of different lengths share one cache index.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from synergen_jax.core import config as config_lib
from synergen_jax.core.config import StackConfig
from synergen_jax.kernels.attention import attention, decode_attention
from synergen_jax.model.experts import ExpertFFN
from synergen_jax.model.layers import RMSNorm, apply_rope, constrain, dtype_of, normal_init, zeros_init

REMAT_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
    "save_attention_out": jax.checkpoint_policies.save_only_these_names("attention_out"),
}
# validate_config accepts the names in config.REMAT_POLICIES; keep the two lists one list.
assert set(REMAT_POLICIES) | {"none"} == set(config_lib.REMAT_POLICIES), "remat policy lists diverged"


class Attention(nn.Module):
  cfg: StackConfig
  decode: bool = False

  @nn.compact
  def __call__(self, x, positions, segment_ids, causal: bool = True):
    cfg = self.cfg
    pdt, cdt = dtype_of(cfg.param_dtype), dtype_of(cfg.dtype)

    # Plain params + einsum rather than nn.DenseGeneral: DenseGeneral re-runs its init on a flattened
    # 2-D shape to check shapes, which breaks logical constraints of 3-D kernels under a mesh.
    def proj(name, heads, head_names):
      kernel = self.param(f"{name}_kernel", normal_init(("embed",) + head_names),
                          (x.shape[-1], heads, cfg.head_dim), pdt)
      y = jnp.einsum("btd,dhk->bthk", x.astype(cdt), kernel.astype(cdt))
      if cfg.qkv_bias:
        y = y + self.param(f"{name}_bias", zeros_init(head_names), (heads, cfg.head_dim),
                           pdt).astype(cdt)
      return y

    q = proj("query", cfg.num_heads, ("heads", "head_dim"))
    k = proj("key", cfg.num_kv_heads, ("kv_heads", "head_dim"))
    v = proj("value", cfg.num_kv_heads, ("kv_heads", "head_dim"))
    q = constrain(apply_rope(q, positions, cfg.rope_theta), ("batch", "length", "act_heads", None))
    k = constrain(apply_rope(k, positions, cfg.rope_theta), ("batch", "length", "act_kv_heads", None))
    if self.decode:
      out = self._cached(q, k, v, segment_ids)
    else:
      out = attention(q, k, v, segment_ids=segment_ids, causal=causal, impl=cfg.attention_impl,
                      block_q=cfg.attention_block_q or None, block_k=cfg.attention_block_k or None)
    out = checkpoint_name(out, "attention_out")
    w_out = self.param("output_kernel", normal_init(("heads", "head_dim", "embed")),
                       (cfg.num_heads, cfg.head_dim, x.shape[-1]), pdt)
    return jnp.einsum("bthk,hkd->btd", out, w_out.astype(cdt))

  def _cached(self, q, k, v, segment_ids):
    """Appends k/v of the new slots to the cache and attends causally to every real cached slot."""
    batch, new = q.shape[:2]
    valid = (jnp.ones((batch, new), bool) if segment_ids is None else segment_ids > 0)
    creating = not self.has_variable("cache", "key")
    k_cache = self.variable("cache", "key", jnp.zeros, k.shape, k.dtype)
    v_cache = self.variable("cache", "value", jnp.zeros, v.shape, v.dtype)
    filled = self.variable("cache", "valid", jnp.zeros, valid.shape, bool)
    index = self.variable("cache", "index", lambda: jnp.zeros((), jnp.int32))
    if creating:   # sizing call: the cache stays empty, the output only has to have the right shape
      return attention(q, k, v, segment_ids=segment_ids, causal=True, impl="xla")
    i = index.value
    k_cache.value = jax.lax.dynamic_update_slice(k_cache.value, k.astype(k_cache.value.dtype), (0, i, 0, 0))
    v_cache.value = jax.lax.dynamic_update_slice(v_cache.value, v.astype(v_cache.value.dtype), (0, i, 0, 0))
    filled.value = jax.lax.dynamic_update_slice(filled.value, valid, (0, i))
    index.value = i + new
    slot = jnp.arange(k_cache.value.shape[1])
    mask = filled.value[:, None, :] & (slot[None, None, :] <= (i + jnp.arange(new))[None, :, None])
    return decode_attention(q, k_cache.value, v_cache.value, mask)


class DecoderBlock(nn.Module):
  """x + Attn(RMSNorm(x)); x + FFN_modality(RMSNorm(x)). Returns (x, None) under nn.scan."""
  cfg: StackConfig
  routed: bool = True
  scanned: bool = False
  decode: bool = False

  @nn.compact
  def __call__(self, x, positions, segment_ids, modality):
    cfg = self.cfg
    norm = lambda name: RMSNorm(cfg.norm_eps, cfg.dtype, cfg.param_dtype, name=name)
    x = x + Attention(cfg, self.decode, name="attention")(norm("attention_norm")(x), positions,
                                                         segment_ids)
    x = x + ExpertFFN(cfg, self.routed, name="ffn")(norm("ffn_norm")(x), modality)
    x = constrain(x, ("batch", "length", "act_embed"))
    return (x, None) if self.scanned else x


class DecoderStack(nn.Module):
  """num_layers decoder blocks and a final RMSNorm."""
  cfg: StackConfig
  routed: bool = True
  decode: bool = False

  @nn.compact
  def __call__(self, x, positions, segment_ids, modality):
    cfg = self.cfg
    block = DecoderBlock
    if cfg.remat_policy != "none" and not self.decode:   # nothing to rematerialise without a backward
      block = nn.remat(block, policy=REMAT_POLICIES[cfg.remat_policy], prevent_cse=not cfg.scan_layers)
    if cfg.scan_layers:
      stack = nn.scan(block, variable_axes={"params": 0, "cache": 0}, split_rngs={"params": True},
                      in_axes=(nn.broadcast, nn.broadcast, nn.broadcast), length=cfg.num_layers,
                      metadata_params={nn.PARTITION_NAME: "layers"})
      x, _ = stack(cfg, self.routed, scanned=True, decode=self.decode, name="layers")(
          x, positions, segment_ids, modality)
    else:
      for i in range(cfg.num_layers):
        x = block(cfg, self.routed, decode=self.decode, name=f"layer_{i}")(
            x, positions, segment_ids, modality)
    return RMSNorm(cfg.norm_eps, cfg.dtype, cfg.param_dtype, name="final_norm")(x)
