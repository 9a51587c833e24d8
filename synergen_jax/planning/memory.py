"""Bytes per device of one config under one layout: an analytic model of what the compiled step
holds, with its few free coefficients fitted to AOT compiles (tests/planning/aot_memory.json).

Exact terms (counted as the AOT report counts them): master weights and Adam's two moments of the
trained parameters, sharded over fsdp x tensor; the batch. Modelled terms (the compiler's
temporaries), each from the shapes that produce it, per micro-batch of `rows` rows on the device:

  gradients     float32 gradients of the trained parameters (+ the accumulator when accumulating)
  gathered      one LLM layer's weights gathered by FSDP (two in flight: this one and the next) in
                the compute dtype, and that layer's float32 weight gradients before reduce-scatter;
                the heads' large matrices (LM head, embeddings, code tables, classifier) gathered
  saved         what the remat policy keeps of every LLM layer for the backward pass
  layer         the activations of one LLM layer recomputed and differentiated (attention scores
                [heads, T, T] in float32 with the XLA reference kernel; none with a flash kernel)
  unfold        one chunk of the unfold head: rows x chunk windows x r positions through its layers,
                held whole for the chunk's backward (the chunk is rematerialised whole)
  fold          the fold MLP's r x code_dim wide inputs of the image slots, rematerialised
  heads         the LM head's and classifiers' chunked cross-entropy tiles

Temporaries = scale[platform] x (the sum above) + overhead[platform]: XLA's scheduler keeps more or
fewer buffers alive than the shapes alone say (v5e's 16 GiB makes it frugal), and each compiler adds
its own workspace; `scale` and `overhead` are fitted by least squares on the recorded compiles
(bench/aot_memory.py --fit prints them).
"""

from __future__ import annotations

import dataclasses

from synergen_jax.planning.facts import Facts
from synergen_jax.planning.layouts import Layout

# platform family -> (scale, overhead GiB): fitted by `python bench/aot_memory.py --fit` on the
# compiles in tests/planning/aot_memory.json (see docs/results/planner.md).
CALIBRATION = {"tpu_large": (0.949, 0.6), "tpu_small": (1.193, -3.37), "gpu": (0.75, 3.47)}
SMALL_HBM = 40 * 2**30          # below this a TPU compiler schedules for memory ("tpu_small")


def calibration_key(platform: str, hbm_bytes: int) -> str:
  if platform == "gpu":
    return "gpu"
  return "tpu_small" if hbm_bytes < SMALL_HBM else "tpu_large"


@dataclasses.dataclass
class Memory:
  params: int
  optimizer: int
  batch: int
  terms: dict                  # modelled temporaries before calibration, by name
  temporaries: int             # calibrated
  total: int

  def dominant(self) -> tuple[str, int]:
    """The largest term (exact or modelled) and its bytes."""
    parts = dict(self.terms, params=self.params, optimizer=self.optimizer)
    name = max(parts, key=parts.get)
    return name, parts[name]


def saved_per_token(f: Facts, remat: str) -> int:
  """Elements each LLM layer keeps per token for the backward pass under a remat policy."""
  s = f.mc.llm
  d, qkv, attn, mlp = s.d_model, (s.num_heads + 2 * s.num_kv_heads) * s.head_dim, \
      s.num_heads * s.head_dim, s.mlp_dim
  dots = d + qkv + d + 2 * mlp + d               # residual, q/k/v, out-projection, gate/up, down
  return {"full": d, "save_attention_out": d + attn, "dots": dots, "dots_no_batch": dots,
          "none": dots + 2 * d + attn + 2 * mlp}[remat]


def _layer_elements(d: int, qkv: int, attn: int, mlp: int) -> int:
  """Elements per token of one layer's forward held for its backward, plus the gradient in flight:
  norms, q/k/v, attention output, out-projection, gate, up and their product, down."""
  return 5 * d + qkv + attn + 3 * mlp


def micro_rows(f: Facts, layout: Layout) -> int:
  return max(1, f.batch_size // layout.replicas // layout.grad_accum)


def model_terms(f: Facts, layout: Layout) -> dict:
  m, s, u, b = f.mc, f.mc.llm, f.mc.unfold, f.compute_bytes
  rows = micro_rows(f, layout)
  tokens = rows * f.seq_len
  shards, tp = layout.shards, layout.tensor
  terms = {"gradients": f.trained * 4 // shards * (2 if layout.grad_accum > 1 else 1)}
  gathered = 0
  if shards > 1:
    gathered += 2 * f.layer_params * b // tp + f.layer_trained * 4 // tp
    big = m.text_vocab * s.d_model * (1 if m.tie_embeddings else 2) + 2 * m.codebook_size * u.d_model
    gathered += big * b // tp
  terms["gathered"] = gathered
  terms["saved"] = s.num_layers * tokens * saved_per_token(f, layout.remat) * b // tp
  qkv, attn = (s.num_heads + 2 * s.num_kv_heads) * s.head_dim, s.num_heads * s.head_dim
  per_token = _layer_elements(s.d_model, qkv, attn, s.mlp_dim) + 2 * s.d_model  # + routed copies
  if layout.remat == "none":                        # every layer's activations stay: in `saved`
    per_token = 0
  layer = tokens * per_token * b // tp
  if layout.attention == "xla":                     # [rows, heads, T, T] scores and probabilities
    layer += 2 * rows * s.num_heads * f.seq_len ** 2 * 4 // tp
  terms["layer"] = layer
  r = m.fold_ratio
  w = m.unfold_capacity or 0
  if w:
    chunks = -(-w // layout.unfold_chunk)
    size = -(-w // chunks)
    positions = rows * size * r
    uqkv, uattn = (u.num_heads + 2 * u.num_kv_heads) * u.head_dim, u.num_heads * u.head_dim
    terms["unfold"] = positions * u.num_layers * _layer_elements(u.d_model, uqkv, uattn, u.mlp_dim) \
        * b // tp
  else:
    terms["unfold"] = 0
  image = rows * (m.image_slot_capacity or 0)
  terms["fold"] = image * (r * m.code_embed_dim + 2 * m.fold_mlp_hidden + s.d_model) * b
  tile = m.loss_chunk_rows * m.loss_vocab_tile * 4
  text = rows * (m.text_target_capacity or f.seq_len)
  terms["heads"] = 2 * tile + text * s.d_model * 4
  return terms


def batch_bytes(f: Facts, layout: Layout) -> int:
  """Input arrays of the device's rows: about eight int32 / float32 values per slot."""
  return f.batch_size // layout.replicas * f.seq_len * 8 * 4


def memory(f: Facts, layout: Layout, platform: str, hbm_bytes: int,
           calibration: dict | None = None) -> Memory:
  params = f.params * f.param_bytes // layout.shards
  optimizer = 2 * f.trained * 4 // layout.shards
  terms = model_terms(f, layout)
  scale, overhead = (calibration or CALIBRATION)[calibration_key(platform, hbm_bytes)]
  temporaries = int(scale * sum(terms.values()) + overhead * 2**30)
  batch = batch_bytes(f, layout)
  return Memory(params=params, optimizer=optimizer, batch=batch, terms=terms,
                temporaries=temporaries, total=params + optimizer + batch + temporaries)
