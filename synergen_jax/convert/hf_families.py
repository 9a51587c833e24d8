"""The three HF LLM families we read and write, and how their tensors map onto ours.

Naming map (per layer i; HF `Linear.weight` is [out, in], ours are [in, ...] kernels):

  ours (decoder/layer_i/...)       Llama / Qwen2 (model.layers.i.)    InternLM2 (model.layers.i.)
  attention/query_kernel [d,h,k]   self_attn.q_proj.weight [h*k, d]   attention.wqkv.weight, packed
  attention/key_kernel  [d,g,k]    self_attn.k_proj.weight [g*k, d]     [g * (h/g + 2) * k, d]:
  attention/value_kernel [d,g,k]   self_attn.v_proj.weight [g*k, d]     per kv head: h/g q, k, v
  attention/{query,key,value}_bias self_attn.{q,k,v}_proj.bias (Qwen2)  (InternLM2 bias=True refused)
  attention/output_kernel [h,k,d]  self_attn.o_proj.weight [d, h*k]   attention.wo.weight
  attention_norm/scale             input_layernorm.weight             attention_norm.weight
  ffn_norm/scale                   post_attention_layernorm.weight    ffn_norm.weight
  ffn/text_gate [d,f]              mlp.gate_proj.weight [f, d]        feed_forward.w1.weight
  ffn/text_up [d,f]                mlp.up_proj.weight [f, d]          feed_forward.w3.weight
  ffn/text_down [f,d]              mlp.down_proj.weight [d, f]        feed_forward.w2.weight

  text_embed/embedding [V,d]       model.embed_tokens.weight          model.tok_embeddings.weight
  decoder/final_norm/scale         model.norm.weight                  model.norm.weight
  lm_head/kernel [d,V]             lm_head.weight [V, d] (untied)     output.weight

Both use the "rotate half" RoPE layout that `layers.apply_rope` implements, so q/k are not permuted.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from synergen_jax.core import keys
from synergen_jax.core.errors import CheckpointError

FAMILIES = ("llama", "qwen2", "internlm2")
ARCHITECTURES = dict(llama="LlamaForCausalLM", qwen2="Qwen2ForCausalLM",
                     internlm2="InternLM2ForCausalLM")


# The config.model keys an HF config.json fixes, typed and described as core/keys.py declares them.
LLM_KEYS = ("text_vocab", "num_layers", "d_model", "num_heads", "num_kv_heads", "head_dim", "mlp_dim",
            "norm_eps", "rope_theta", "qkv_bias", "tie_embeddings")


class LLMShape(keys.derived("LLMShape", None, keys.ModelKeys, LLM_KEYS)):
  """The config.model fields an HF config.json fixes (LLM_KEYS)."""

  @property
  def fields(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def of(cls, model) -> "LLMShape":
    """The shape of a ModelConfig (or anything with those attributes)."""
    return cls(**{name: getattr(model, name) for name in LLM_KEYS})


def detect_family(hf_config: dict, where: str) -> str:
  model_type = str(hf_config.get("model_type", "")).lower()
  if model_type in FAMILIES:
    return model_type
  raise CheckpointError(f"{where}: model_type={model_type!r} is not a supported family; supported: "
                        f"{FAMILIES} (Llama-architecture models such as Mistral without sliding "
                        "windows can be imported by setting model_type to llama)")


def _rope_theta(c: dict, where: str) -> float:
  """Top-level rope_theta (older files) or rope_parameters (transformers 5); only plain RoPE."""
  params = c.get("rope_parameters") or {}
  scaling = c.get("rope_scaling") or {}
  for spec in (params, scaling):
    kind = spec.get("rope_type", spec.get("type", "default"))
    # Dynamic NTK (InternLM2) only rescales beyond max_position_embeddings: plain RoPE up to there.
    if kind == "dynamic":
      print(f"note: {where}: rope_type=dynamic equals plain RoPE up to max_position_embeddings="
            f"{c.get('max_position_embeddings')}; longer sequences are not rescaled here")
    elif kind not in ("default", None):
      raise CheckpointError(f"{where}: rope_type={kind!r} (scaled RoPE) is not supported; only plain "
                            "RoPE is implemented (layers.apply_rope)")
  theta = c.get("rope_theta", params.get("rope_theta", scaling.get("rope_theta", 10_000.0)))
  return float(theta)


def llm_shape(hf_config: dict, family: str, where: str) -> LLMShape:
  c = hf_config
  if c.get("hidden_act", "silu") != "silu":
    raise CheckpointError(f"{where}: hidden_act={c['hidden_act']!r}; only SwiGLU (silu) FFNs are supported")
  if c.get("mlp_bias"):
    raise CheckpointError(f"{where}: mlp_bias=true is not supported (our FFNs have no biases)")
  if family == "llama" and c.get("attention_bias"):
    raise CheckpointError(f"{where}: attention_bias=true puts a bias on o_proj too, which our attention "
                          "does not have; not supported")
  if family == "internlm2" and c.get("bias"):
    raise CheckpointError(f"{where}: bias=true (biases on wqkv and wo) is not supported")
  if family == "qwen2" and c.get("use_sliding_window"):
    raise CheckpointError(f"{where}: use_sliding_window=true is not supported (full attention only)")
  heads = int(c["num_attention_heads"])
  d = int(c["hidden_size"])
  return LLMShape(
      text_vocab=int(c["vocab_size"]), num_layers=int(c["num_hidden_layers"]), d_model=d,
      num_heads=heads, num_kv_heads=int(c.get("num_key_value_heads") or heads),
      head_dim=int(c.get("head_dim") or d // heads), mlp_dim=int(c["intermediate_size"]),
      norm_eps=float(c.get("rms_norm_eps", 1e-6)), rope_theta=_rope_theta(c, where),
      qkv_bias=family == "qwen2", tie_embeddings=bool(c.get("tie_word_embeddings", False)))


def global_names(family: str) -> dict[str, str]:
  if family == "internlm2":
    return dict(embed="model.tok_embeddings.weight", norm="model.norm.weight", head="output.weight")
  return dict(embed="model.embed_tokens.weight", norm="model.norm.weight", head="lm_head.weight")


# ---------------------------------------------------------------------------------------------------
# One layer: HF tensors -> our leaves (import) and back (export).
# ---------------------------------------------------------------------------------------------------

def _in_heads(w: np.ndarray, heads: int, head_dim: int) -> np.ndarray:
  """[heads*head_dim, d] -> kernel [d, heads, head_dim]."""
  return w.T.reshape(w.shape[1], heads, head_dim)


def _out_heads(kernel: np.ndarray) -> np.ndarray:
  """kernel [d, heads, head_dim] -> [heads*head_dim, d]."""
  return kernel.reshape(kernel.shape[0], -1).T


def pack_wqkv(q: np.ndarray, k: np.ndarray, v: np.ndarray, s: LLMShape) -> np.ndarray:
  """HF [out, d] q/k/v weights -> InternLM2's packed wqkv (rows: per kv head, its q heads, k, v)."""
  g, group, hd = s.num_kv_heads, s.num_heads // s.num_kv_heads, s.head_dim
  d = q.shape[1]
  packed = np.concatenate([q.reshape(g, group, hd, d), k.reshape(g, 1, hd, d), v.reshape(g, 1, hd, d)],
                          axis=1)
  return packed.reshape(g * (group + 2) * hd, d)


def unpack_wqkv(w: np.ndarray, s: LLMShape):
  g, group, hd = s.num_kv_heads, s.num_heads // s.num_kv_heads, s.head_dim
  packed = w.reshape(g, group + 2, hd, w.shape[1])
  return (packed[:, :group].reshape(g * group * hd, -1), packed[:, group].reshape(g * hd, -1),
          packed[:, group + 1].reshape(g * hd, -1))


def _layer_names(family: str, i: int) -> dict[str, str]:
  p = f"model.layers.{i}."
  if family == "internlm2":
    return dict(wqkv=p + "attention.wqkv.weight", o=p + "attention.wo.weight",
                attention_norm=p + "attention_norm.weight", ffn_norm=p + "ffn_norm.weight",
                gate=p + "feed_forward.w1.weight", up=p + "feed_forward.w3.weight",
                down=p + "feed_forward.w2.weight")
  return dict(q=p + "self_attn.q_proj.weight", k=p + "self_attn.k_proj.weight",
              v=p + "self_attn.v_proj.weight", o=p + "self_attn.o_proj.weight",
              q_bias=p + "self_attn.q_proj.bias", k_bias=p + "self_attn.k_proj.bias",
              v_bias=p + "self_attn.v_proj.bias",
              attention_norm=p + "input_layernorm.weight", ffn_norm=p + "post_attention_layernorm.weight",
              gate=p + "mlp.gate_proj.weight", up=p + "mlp.up_proj.weight", down=p + "mlp.down_proj.weight")


def read_layer(ckpt, family: str, i: int, s: LLMShape) -> dict[str, np.ndarray]:
  """Layer i of the checkpoint as our leaves, keyed by their path under decoder/layer_i/."""
  n = _layer_names(family, i)
  d, h, g, hd, f = s.d_model, s.num_heads, s.num_kv_heads, s.head_dim, s.mlp_dim
  if family == "internlm2":
    q, k, v = unpack_wqkv(ckpt.get(n["wqkv"], ((h + 2 * g) * hd, d)), s)
  else:
    q, k, v = (ckpt.get(n["q"], (h * hd, d)), ckpt.get(n["k"], (g * hd, d)), ckpt.get(n["v"], (g * hd, d)))
  out = {
      "attention/query_kernel": _in_heads(q, h, hd),
      "attention/key_kernel": _in_heads(k, g, hd),
      "attention/value_kernel": _in_heads(v, g, hd),
      "attention/output_kernel": ckpt.get(n["o"], (d, h * hd)).T.reshape(h, hd, d),
      "attention_norm/scale": ckpt.get(n["attention_norm"], (d,)),
      "ffn_norm/scale": ckpt.get(n["ffn_norm"], (d,)),
      "ffn/text_gate": ckpt.get(n["gate"], (f, d)).T,
      "ffn/text_up": ckpt.get(n["up"], (f, d)).T,
      "ffn/text_down": ckpt.get(n["down"], (d, f)).T,
  }
  if s.qkv_bias:
    out["attention/query_bias"] = ckpt.get(n["q_bias"], (h * hd,)).reshape(h, hd)
    out["attention/key_bias"] = ckpt.get(n["k_bias"], (g * hd,)).reshape(g, hd)
    out["attention/value_bias"] = ckpt.get(n["v_bias"], (g * hd,)).reshape(g, hd)
  return out


def write_layer(leaves: dict[str, np.ndarray], family: str, i: int, s: LLMShape) -> dict[str, np.ndarray]:
  """The inverse of read_layer: our leaves of layer i -> HF tensors."""
  n = _layer_names(family, i)
  q = _out_heads(leaves["attention/query_kernel"])
  k = _out_heads(leaves["attention/key_kernel"])
  v = _out_heads(leaves["attention/value_kernel"])
  out_kernel = leaves["attention/output_kernel"]
  out = {n["o"]: out_kernel.reshape(-1, out_kernel.shape[-1]).T,
         n["attention_norm"]: leaves["attention_norm/scale"],
         n["ffn_norm"]: leaves["ffn_norm/scale"],
         n["gate"]: leaves["ffn/text_gate"].T, n["up"]: leaves["ffn/text_up"].T,
         n["down"]: leaves["ffn/text_down"].T}
  if family == "internlm2":
    out[n["wqkv"]] = pack_wqkv(q, k, v, s)
  else:
    out.update({n["q"]: q, n["k"]: k, n["v"]: v})
  if s.qkv_bias:
    if family != "qwen2":
      raise CheckpointError(f"q/k/v biases cannot be written as {family}; export as qwen2")
    out.update({n["q_bias"]: leaves["attention/query_bias"].reshape(-1),
                n["k_bias"]: leaves["attention/key_bias"].reshape(-1),
                n["v_bias"]: leaves["attention/value_bias"].reshape(-1)})
  return {name: np.ascontiguousarray(x) for name, x in out.items()}


def hf_config(s: LLMShape, family: str, base: dict | None = None) -> dict:
  """config.json for the text model; `base` (the imported file) keeps its other keys."""
  c = dict(base or {})
  c.update(model_type=family, architectures=[ARCHITECTURES[family]], vocab_size=s.text_vocab,
           hidden_size=s.d_model, num_hidden_layers=s.num_layers, num_attention_heads=s.num_heads,
           num_key_value_heads=s.num_kv_heads, intermediate_size=s.mlp_dim, rms_norm_eps=s.norm_eps,
           hidden_act="silu", tie_word_embeddings=s.tie_embeddings)
  if s.head_dim != s.d_model // s.num_heads or "head_dim" in c:
    c["head_dim"] = s.head_dim
  if "rope_parameters" in c and isinstance(c["rope_parameters"], dict):
    c["rope_parameters"] = dict(c["rope_parameters"], rope_theta=s.rope_theta)
  else:
    c["rope_theta"] = s.rope_theta
  if family == "internlm2":
    c["bias"] = False
  if family == "llama":
    c.update(attention_bias=False, mlp_bias=False)
  return c
