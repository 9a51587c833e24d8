"""SynerGen-VL in PyTorch, equal to synergen_jax's model (synergen_jax/model/*) slot for slot.

One transformer over interleaved text and image slots. A text slot embeds its token; an image slot
holds one fh x fw window of VQ codes, embedded by FoldEmbed (code embedding + 2-D position
embedding, concatenated over the window, MLP). Every layer's FFN is chosen by the slot's modality
(0 text, 1 vision expert). The text head reads every slot; the unfold head (a small causal
transformer) turns the hidden state of <boi> or of a window into the next window's r codes.

Parameters keep synergen_jax's names and layouts (flax paths joined by "."), so the export is a
copy of the checkpoint's arrays, unstacked per layer.

Inputs of `forward` (what the processor makes): input_ids [B, T] (the pad id at image slots),
image_codes [B, T, r], window_ids [B, T], modality [B, T], attention_mask [B, T] (left padding).
`generate()` (transformers' GenerationMixin) continues text; `generate_images()` draws images with
classifier-free guidance.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.cache_utils import DynamicCache
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration_synergen_vl import SynerGenVLConfig

TEXT, IMAGE = 0, 1
# transformers >= 5 passes the KV cache to forward() and reads it back from the output as `cache`;
# earlier releases as `past_key_values`. generate() keeps the cache only under the name it expects,
# so a wrong name silently recomputes the whole sequence at every step.
CACHE_FIELD = ("cache" if "cache" in getattr(CausalLMOutputWithPast, "__dataclass_fields__", {})
               else "past_key_values")


def _param(*shape):
  return nn.Parameter(torch.zeros(*shape))


def window_cell_ids(code_grid, fold) -> torch.Tensor:
  """[N, r]: the grid cell (row * w + col) of every code of every window, windows in raster order."""
  h, w = code_grid
  fh, fw = fold
  cells = torch.arange(h * w).reshape(h // fh, fh, w // fw, fw)
  return cells.permute(0, 2, 1, 3).reshape(-1, fh * fw)


def windows_to_grid(windows: torch.Tensor, code_grid, fold) -> torch.Tensor:
  """[..., N, r] -> [..., h, w]."""
  h, w = code_grid
  fh, fw = fold
  lead = windows.shape[:-2]
  x = windows.reshape(*lead, h // fh, w // fw, fh, fw)
  return x.transpose(-3, -2).reshape(*lead, h, w)


def grid_to_windows(grid: torch.Tensor, fold) -> torch.Tensor:
  """[..., h, w] -> [..., N, r]."""
  fh, fw = fold
  *lead, h, w = grid.shape
  x = grid.reshape(*lead, h // fh, fh, w // fw, fw).transpose(-3, -2)
  return x.reshape(*lead, (h // fh) * (w // fw), fh * fw)


class RMSNorm(nn.Module):
  def __init__(self, dim, eps):
    super().__init__()
    self.eps, self.scale = eps, nn.Parameter(torch.ones(dim))

  def forward(self, x):
    x32 = x.float()
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
    return x32.to(x.dtype) * self.scale.to(x.dtype)


def apply_rope(x, positions, theta):
  """x [B, T, H, D]; rotate_half convention, computed in float32."""
  d = x.shape[-1]
  inv = 1.0 / (theta ** (torch.arange(0, d, 2, dtype=torch.float32, device=x.device) / d))
  ang = positions.float()[..., None] * inv
  cos, sin = torch.cos(ang)[:, :, None], torch.sin(ang)[:, :, None]
  x1, x2 = x.float().chunk(2, dim=-1)
  return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).to(x.dtype)


class Attention(nn.Module):
  def __init__(self, d, heads, kv_heads, head_dim, bias, theta, layer_idx):
    super().__init__()
    self.heads, self.kv_heads, self.head_dim, self.theta = heads, kv_heads, head_dim, theta
    self.layer_idx = layer_idx
    self.query_kernel, self.key_kernel = _param(d, heads, head_dim), _param(d, kv_heads, head_dim)
    self.value_kernel, self.output_kernel = _param(d, kv_heads, head_dim), _param(heads, head_dim, d)
    self.bias = bias
    if bias:
      self.query_bias, self.key_bias = _param(heads, head_dim), _param(kv_heads, head_dim)
      self.value_bias = _param(kv_heads, head_dim)

  def forward(self, x, positions, mask, cache=None):
    """mask [B, T, S] bool over the S keys (cached + new); cache: a transformers Cache or None."""
    proj = lambda k, b: torch.einsum("btd,dhk->bthk", x, k) + (b if self.bias else 0)
    q = proj(self.query_kernel, self.query_bias if self.bias else None)
    k = proj(self.key_kernel, self.key_bias if self.bias else None)
    v = proj(self.value_kernel, self.value_bias if self.bias else None)
    q, k = apply_rope(q, positions, self.theta), apply_rope(k, positions, self.theta)
    if cache is not None:      # the cache holds [B, H, S, D]
      k, v = cache.update(k.transpose(1, 2), v.transpose(1, 2), self.layer_idx)
      k, v = k.transpose(1, 2), v.transpose(1, 2)
    b, t = q.shape[:2]
    group = self.heads // self.kv_heads
    qg = q.reshape(b, t, self.kv_heads, group, self.head_dim)
    scores = torch.einsum("btkgd,bskd->bkgts", qg.float(), k.float()) * self.head_dim ** -0.5
    scores = scores.masked_fill(~mask[:, None, None], torch.finfo(torch.float32).min)
    probs = scores.softmax(-1).to(v.dtype)
    out = torch.einsum("bkgts,bskd->btkgd", probs, v).reshape(b, t, self.heads, self.head_dim)
    return torch.einsum("bthk,hkd->btd", out.to(x.dtype), self.output_kernel)


class ExpertFFN(nn.Module):
  NAMES = ("text", "vision")

  def __init__(self, d, f, experts):
    super().__init__()
    self.experts = experts
    for name in self.NAMES[:experts]:
      setattr(self, f"{name}_gate", _param(d, f))
      setattr(self, f"{name}_up", _param(d, f))
      setattr(self, f"{name}_down", _param(f, d))

  def forward(self, x, modality):
    out = torch.zeros_like(x)
    expert = modality.clamp(0, self.experts - 1)
    for i, name in enumerate(self.NAMES[:self.experts]):
      sel = expert == i
      if sel.any():
        h = x[sel]
        y = F.silu(h @ getattr(self, f"{name}_gate")) * (h @ getattr(self, f"{name}_up"))
        out[sel] = y @ getattr(self, f"{name}_down")
    return out


class DecoderBlock(nn.Module):
  def __init__(self, s: dict, experts: int, bias: bool, eps: float, theta: float, layer_idx: int):
    super().__init__()
    self.attention_norm, self.ffn_norm = RMSNorm(s["d_model"], eps), RMSNorm(s["d_model"], eps)
    self.attention = Attention(s["d_model"], s["num_heads"], s["num_kv_heads"], s["head_dim"], bias,
                               theta, layer_idx)
    self.ffn = ExpertFFN(s["d_model"], s["mlp_dim"], experts)

  def forward(self, x, positions, mask, modality, cache=None):
    x = x + self.attention(self.attention_norm(x), positions, mask, cache)
    return x + self.ffn(self.ffn_norm(x), modality)


class DecoderStack(nn.Module):
  def __init__(self, s: dict, experts: int, bias: bool, eps: float, theta: float):
    super().__init__()
    self.num_layers = s["num_layers"]
    for i in range(self.num_layers):
      setattr(self, f"layer_{i}", DecoderBlock(s, experts, bias, eps, theta, i))
    self.final_norm = RMSNorm(s["d_model"], eps)

  def forward(self, x, positions, mask, modality, cache=None):
    for i in range(self.num_layers):
      x = getattr(self, f"layer_{i}")(x, positions, mask, modality, cache)
    return self.final_norm(x)


class Linear(nn.Module):
  """flax nn.Dense's layout: kernel [in, out], bias [out]."""

  def __init__(self, n_in, n_out, bias=True):
    super().__init__()
    self.kernel = _param(n_in, n_out)
    self.bias = _param(n_out) if bias else None

  def forward(self, x):
    y = x @ self.kernel
    return y + self.bias if self.bias is not None else y


class Embedding(nn.Module):
  def __init__(self, n, d):
    super().__init__()
    self.embedding = _param(n, d)

  def forward(self, ids):
    return F.embedding(ids, self.embedding)


class FoldEmbed(nn.Module):
  """One window's r codes -> one LLM input vector (synergen_jax/model/folding.py)."""

  def __init__(self, c: SynerGenVLConfig):
    super().__init__()
    self.code_embed = Embedding(c.codebook_size, c.code_embed_dim)
    self.pos_embed = _param(c.code_grid[0] * c.code_grid[1], c.code_embed_dim)
    self.mlp_in = Linear(c.fold_ratio * c.code_embed_dim, c.fold_mlp_hidden)
    self.mlp_out = Linear(c.fold_mlp_hidden, c.d_model)
    self.code_grid, self.fold = c.code_grid, c.fold

  def forward(self, codes, window_ids):
    # Made here, not held as a buffer: transformers builds the model on the meta device and leaves
    # non-persistent buffers unset.
    table = window_cell_ids(self.code_grid, self.fold).to(window_ids.device)
    cells = table[window_ids.clamp(0, table.shape[0] - 1)]
    e = self.code_embed(codes) + self.pos_embed[cells]
    e = e.reshape(*e.shape[:-2], -1)
    return self.mlp_out(F.gelu(self.mlp_in(e), approximate="tanh"))


class UnfoldHead(nn.Module):
  """hidden [N, d_model] + the window's codes so far -> logits of the next code (paper Eq. 3)."""

  def __init__(self, c: SynerGenVLConfig):
    super().__init__()
    u = c.unfold
    self.r = c.fold_ratio
    self.prefix_proj = Linear(c.d_model, u["d_model"])
    self.code_embed = Embedding(c.codebook_size, u["d_model"])
    self.pos_table = _param(self.r, u["d_model"])
    self.blocks = DecoderStack(u, 1, c.qkv_bias, c.norm_eps, c.rope_theta)
    self.classifier = Linear(u["d_model"], c.codebook_size, bias=False)

  def forward(self, hidden, codes):
    """hidden [N, D]; codes [N, j] (j < r codes of the window) -> logits [N, j + 1, K]: position i
    predicts code i from hidden and codes[:, :i]."""
    x = torch.cat([self.prefix_proj(hidden)[:, None], self.code_embed(codes)], dim=1)
    n, t = x.shape[:2]
    x = x + self.pos_table[:t].to(x.dtype)[None]
    positions = torch.arange(t, device=x.device).expand(n, t)
    mask = torch.ones(t, t, dtype=torch.bool, device=x.device).tril().expand(n, t, t)
    modality = torch.zeros(n, t, dtype=torch.long, device=x.device)
    return self.classifier(self.blocks(x, positions, mask, modality)).float()


class SynerGenVLPreTrainedModel(PreTrainedModel):
  config_class = SynerGenVLConfig
  base_model_prefix = "model"
  _no_split_modules = ["DecoderBlock"]
  _supports_cache_class = True

  def _init_weights(self, module):
    pass      # every parameter comes from the checkpoint


class SynerGenVLForCausalLM(SynerGenVLPreTrainedModel, GenerationMixin):
  def __init__(self, config: SynerGenVLConfig):
    super().__init__(config)
    c = config
    llm = dict(num_layers=c.num_layers, d_model=c.d_model, num_heads=c.num_heads,
               num_kv_heads=c.num_kv_heads, head_dim=c.head_dim, mlp_dim=c.mlp_dim)
    self.text_embed = Embedding(c.text_vocab, c.d_model)
    self.fold_embed = FoldEmbed(c)
    self.decoder = DecoderStack(llm, c.num_experts, c.qkv_bias, c.norm_eps, c.rope_theta)
    self.lm_head = Linear(c.d_model, c.text_vocab, bias=False)
    self.unfold_head = UnfoldHead(c)
    self.post_init()

  def get_input_embeddings(self):
    return self.text_embed

  # -- the LLM -----------------------------------------------------------------------------------

  def embed(self, input_ids, image_codes=None, window_ids=None, modality=None):
    x = self.text_embed(input_ids)
    if image_codes is not None and modality is not None and bool((modality == IMAGE).any()):
      image = self.fold_embed(image_codes, window_ids)
      x = torch.where((modality == IMAGE)[..., None], image.to(x.dtype), x)
    return x

  def hidden_states(self, input_ids, image_codes=None, window_ids=None, modality=None,
                    attention_mask=None, position_ids=None, past_key_values=None):
    """Final LLM states [B, T, d_model] of the new slots; appends to `past_key_values`."""
    b, t = input_ids.shape
    past = past_key_values.get_seq_length() if past_key_values is not None else 0
    if attention_mask is None:
      attention_mask = torch.ones(b, past + t, dtype=torch.long, device=input_ids.device)
    keys = attention_mask.bool()
    if position_ids is None:
      position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -t:]
    if modality is None:
      modality = torch.full_like(input_ids, TEXT)
    causal = torch.arange(keys.shape[1], device=keys.device)[None, :] <= (
        past + torch.arange(t, device=keys.device))[:, None]
    mask = keys[:, None, :] & causal[None]
    x = self.embed(input_ids, image_codes, window_ids, modality)
    return self.decoder(x, position_ids, mask, modality, past_key_values)

  def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
              image_codes=None, window_ids=None, modality=None, use_cache=None, labels=None,
              logits_to_keep: int = 0, cache=None, **kwargs):
    """Logits of the new slots; `cache` (or `past_key_values`): a transformers Cache that the new
    slots' keys and values are appended to, returned in the output's cache field."""
    past_key_values = cache if cache is not None else past_key_values
    if use_cache and past_key_values is None:
      past_key_values = DynamicCache()
    h = self.hidden_states(input_ids, image_codes, window_ids, modality, attention_mask,
                           position_ids, past_key_values if use_cache or past_key_values is not None
                           else None)
    if logits_to_keep:
      h = h[:, -logits_to_keep:]
    logits = (h @ self.lm_head.kernel.to(h.dtype)).float()
    loss = None
    if labels is not None:
      loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                             ignore_index=-100)
    return CausalLMOutputWithPast(loss=loss, logits=logits, hidden_states=(h,),
                                  **{CACHE_FIELD: past_key_values})

  def prepare_inputs_for_generation(self, input_ids, past_key_values=None, attention_mask=None,
                                    image_codes=None, window_ids=None, modality=None,
                                    use_cache=True, cache=None, **kwargs):
    """The prompt (with its image slots) first; then one new text slot per step, its keys and
    values appended to the cache that generate() made (the prompt's are computed once)."""
    past_key_values = cache if cache is not None else past_key_values
    past = past_key_values.get_seq_length() if past_key_values is not None else 0
    if past:
      input_ids = input_ids[:, past:]
    if modality is not None and modality.shape[1] != input_ids.shape[1]:
      # The prompt's image inputs cover the prompt only; later slots are text.
      image_codes = window_ids = modality = None
    if attention_mask is None:
      attention_mask = torch.ones(input_ids.shape[0], past + input_ids.shape[1], dtype=torch.long,
                                  device=input_ids.device)
    position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -input_ids.shape[1]:]
    return {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids,
            CACHE_FIELD: past_key_values, "image_codes": image_codes, "window_ids": window_ids,
            "modality": modality, "use_cache": use_cache}

  # -- images ------------------------------------------------------------------------------------

  @staticmethod
  def _pick(logits, temperature, top_k, top_p, generator):
    if temperature == 0:
      return logits.argmax(-1)
    logits = logits / temperature
    if top_k:
      kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[..., -1:]
      logits = logits.masked_fill(logits < kth, torch.finfo(logits.dtype).min)
    if top_p < 1.0:
      probs_sorted, order = logits.softmax(-1).sort(-1, descending=True)
      drop_sorted = (probs_sorted.cumsum(-1) - probs_sorted) >= top_p
      drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
      logits = logits.masked_fill(drop, torch.finfo(logits.dtype).min)
    return torch.multinomial(logits.softmax(-1), 1, generator=generator)[:, 0]

  @torch.no_grad()
  def generate_images(self, input_ids, attention_mask=None, uncond_input_ids=None,
                      uncond_attention_mask=None, cfg_scale: float = 7.5, temperature: float = 1.0,
                      top_k: int = 0, top_p: float = 1.0, generator=None) -> torch.Tensor:
    """Image code grids [N, h, w] for N text prompts, with classifier-free guidance.

    input_ids [N, T]: left-padded prompts `<s> generation_prompt text <boi>` (the processor makes
    them with `processor(text=..., generate_image=True)`); uncond_input_ids: the unconditional
    prompt `<s> <UNCOND> <boi>` ([1, T'] or [N, T']). Every code is drawn from
    `l_u + cfg_scale * (l_c - l_u)` (cfg_scale 1 or no unconditional prompt: the conditional logits
    alone); temperature 0 is greedy. Decode the grids to pixels with the export's image tokenizer.
    """
    c = self.config
    rows = input_ids.shape[0]
    if attention_mask is None:
      attention_mask = torch.ones_like(input_ids)
    guided = uncond_input_ids is not None and cfg_scale != 1.0
    if guided:
      if uncond_attention_mask is None:
        uncond_attention_mask = torch.ones_like(uncond_input_ids)
      if uncond_input_ids.shape[0] == 1:
        uncond_input_ids = uncond_input_ids.expand(rows, -1)
        uncond_attention_mask = uncond_attention_mask.expand(rows, -1)
      length = max(input_ids.shape[1], uncond_input_ids.shape[1])
      pad = lambda x, v: F.pad(x, (length - x.shape[1], 0), value=v)
      input_ids = torch.cat([pad(input_ids, c.special["pad"]), pad(uncond_input_ids, c.special["pad"])])
      attention_mask = torch.cat([pad(attention_mask, 0), pad(uncond_attention_mask, 0)])
    total, r = input_ids.shape[0], c.fold_ratio
    cache = DynamicCache()
    h = self.hidden_states(input_ids, attention_mask=attention_mask, past_key_values=cache)[:, -1]
    start = (attention_mask.long().sum(-1) - 1)
    windows = []
    for w in range(c.windows_per_image):
      codes = torch.zeros(rows, 0, dtype=torch.long, device=input_ids.device)
      for j in range(r):
        both = torch.cat([codes, codes]) if guided else codes
        logits = self.unfold_head(h, both)[:, -1]
        if guided:
          logits = logits[rows:] + cfg_scale * (logits[:rows] - logits[rows:])
        codes = torch.cat([codes, self._pick(logits, temperature, top_k, top_p, generator)[:, None]],
                          dim=1)
      windows.append(codes)
      both = torch.cat([codes, codes]) if guided else codes
      attention_mask = torch.cat([attention_mask, torch.ones_like(attention_mask[:, :1])], dim=1)
      h = self.hidden_states(
          torch.full((total, 1), c.special["pad"], dtype=torch.long, device=input_ids.device),
          both[:, None], torch.full((total, 1), w, dtype=torch.long, device=input_ids.device),
          torch.full((total, 1), IMAGE, dtype=torch.long, device=input_ids.device),
          attention_mask, (start + 1 + w)[:, None], cache)[:, -1]
    return windows_to_grid(torch.stack(windows, dim=1), c.code_grid, c.fold)
