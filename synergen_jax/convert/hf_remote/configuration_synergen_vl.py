"""SynerGenVLConfig: what the PyTorch SynerGen-VL needs, written by synergen_jax.convert.full_export.

Sizes and names follow synergen_jax's config.model (ModelConfig); `unfold` is the unfold head's
stack shape as a dict. Token ids are the run's own (`special`: pad, bos, eos, boi, eoi, uncond).
image_fit / background / max_tiles / thumbnail: how the processor fits images (as prepare did);
trained_on_chat: whether the run learned the chat template (the processor then prompts through it).
"""

from __future__ import annotations

from transformers import PretrainedConfig


class SynerGenVLConfig(PretrainedConfig):
  model_type = "synergen_vl"

  def __init__(self, text_vocab: int = 64, num_layers: int = 2, d_model: int = 32,
               num_heads: int = 4, num_kv_heads: int = 2, head_dim: int = 8, mlp_dim: int = 64,
               num_experts: int = 2, qkv_bias: bool = False, norm_eps: float = 1e-5,
               rope_theta: float = 10_000.0, tie_embeddings: bool = False, new_tokens=(),
               codebook_size: int = 32, code_embed_dim: int = 16, code_grid=(4, 4), fold=(2, 2),
               fold_mlp_hidden: int = 64, unfold: dict | None = None, special: dict | None = None,
               generation_prompt: str = "", uncond_prompt: str = "<UNCOND>",
               caption_prompt: str = "", image_fit: str = "resize", background: int = 255,
               max_tiles: int = 1, thumbnail: bool = False, trained_on_chat: bool = False,
               **kwargs):
    self.text_vocab, self.vocab_size = text_vocab, text_vocab
    self.num_layers, self.num_hidden_layers, self.d_model, self.hidden_size = (
        num_layers, num_layers, d_model, d_model)
    self.num_heads, self.num_attention_heads = num_heads, num_heads
    self.num_kv_heads, self.num_key_value_heads, self.head_dim = num_kv_heads, num_kv_heads, head_dim
    self.mlp_dim, self.num_experts, self.qkv_bias = mlp_dim, num_experts, qkv_bias
    self.norm_eps, self.rope_theta, self.tie_embeddings = norm_eps, rope_theta, tie_embeddings
    self.new_tokens = list(new_tokens)
    self.codebook_size, self.code_embed_dim = codebook_size, code_embed_dim
    self.code_grid, self.fold, self.fold_mlp_hidden = list(code_grid), list(fold), fold_mlp_hidden
    self.unfold = dict(unfold or dict(num_layers=1, d_model=16, num_heads=2, num_kv_heads=1,
                                      head_dim=8, mlp_dim=32))
    self.special = dict(special or dict(pad=0, bos=1, eos=2, boi=3, eoi=4, uncond=5))
    self.generation_prompt, self.uncond_prompt = generation_prompt, uncond_prompt
    self.caption_prompt = caption_prompt
    # The processor's image fitting (prepare's), and whether prompts go through the chat template.
    self.image_fit, self.background, self.max_tiles = image_fit, background, max_tiles
    self.thumbnail, self.trained_on_chat = thumbnail, trained_on_chat
    kwargs.setdefault("pad_token_id", self.special["pad"])
    kwargs.setdefault("bos_token_id", self.special["bos"])
    kwargs.setdefault("eos_token_id", self.special["eos"])
    kwargs["tie_word_embeddings"] = False     # a tied head is written out as its own table
    super().__init__(**kwargs)

  @property
  def fold_ratio(self) -> int:
    return self.fold[0] * self.fold[1]

  @property
  def windows_per_image(self) -> int:
    return (self.code_grid[0] // self.fold[0]) * (self.code_grid[1] // self.fold[1])
