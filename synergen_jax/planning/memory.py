"""Bytes per device of one config under one layout: an analytic model of what the compiled step
holds, with its few free coefficients fitted to AOT compiles (tests/planning/aot_memory.json).

Exact terms (counted as the AOT report counts them): master weights and Adam's two moments of the
trained parameters, sharded over fsdp x tensor; the batch. Modelled terms (the compiler's
temporaries), each from the shapes that produce it, per micro-batch of `rows` rows on the device:

  gradients     float32 gradients of the trained parameters (+ the accumulator when accumulating)
  gathered      one LLM layer's weights gathered by FSDP (two in flight: this one and the next) in
                the compute dtype, and that layer's float32 weight gradients before reduce-scatter;
                the heads' large matrices (LM head, embeddings, code tables, classifier) gathered
  saved         what the remat policy keeps of every LLM layer for the backward pass (4 bytes per
                element, as measured by compiling 2 and 4 layers)
  layer         the activations of one LLM layer recomputed and differentiated (attention scores
                [heads, T, T] in float32 with the XLA reference kernel; none with a flash kernel)
  unfold        one chunk of the unfold head: rows x chunk windows x r positions through its layers,
                held whole for the chunk's backward (the chunk is rematerialised whole); every
                chunk, at 4 bytes per element, without remat
  fold          the fold MLP's r x code_dim wide inputs of the image slots, rematerialised
  heads         the LM head's and classifiers' chunked cross-entropy tiles

Temporaries = scale[platform] x (the sum above) + overhead[platform]: XLA's scheduler keeps more or
fewer buffers alive than the shapes alone say (v5e's 16 GiB makes it frugal), and each compiler adds
its own workspace; `scale` and `overhead` are fitted by least squares on the recorded compiles with
full remat and FSDP alone (bench/aot_memory.py --fit prints them); the rows marked held_out (other
remat policies, tensor and data parallelism) test the form without being fitted on.
"""

from __future__ import annotations

import dataclasses

from synergen_jax.planning.facts import Facts
from synergen_jax.planning.layouts import Layout

# platform family -> (scale, overhead GiB): fitted by `python bench/aot_memory.py --fit` on the
# compiles in tests/planning/aot_memory.json (see docs/results/planner.md).
CALIBRATION = {"tpu_large": (0.949, -0.82), "tpu_small": (1.193, -5.16), "gpu": (0.649, 3.28)}
SMALL_HBM = 40 * 2**30          # below this a TPU compiler schedules for memory ("tpu_small")
# How far a prediction may be from the compiled step (tests/planning/test_memory.py holds every
# recorded compile to it). Without remat the LLM's layers match the compiles at accumulation 1 (3%
# per layer), but the whole step comes out 12-13% under at accumulation 1 and 38-43% under at 2 and
# 4: with accumulation the compiler keeps more than one micro-batch's layer activations
# (docs/results/planner.md). The planner does not search that policy (layouts.REMAT).
ERROR_BOUND = {"none": 0.45}
DEFAULT_ERROR_BOUND = 0.10


def error_bound(layout: Layout) -> float:
  return ERROR_BOUND.get(layout.remat, DEFAULT_ERROR_BOUND)


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


def saved_per_token(f: Facts, remat: str, tensor: int = 1) -> float:
  """Elements each LLM layer keeps per token, per device, for the backward pass under a remat
  policy. Residual-stream vectors (d_model) are whole on every tensor shard (`act_embed` is not
  split); heads and the FFN's hidden units are split over `tensor`. The `dots` policies save the
  outputs of dot_general only: q/k/v and the out-projection, not the FFN, whose routed matmuls
  are ragged_dot (a primitive of its own)."""
  s = f.mc.llm
  d, qkv, attn, mlp = s.d_model, (s.num_heads + 2 * s.num_kv_heads) * s.head_dim, \
      s.num_heads * s.head_dim, s.mlp_dim
  whole, split = {"full": (d, 0), "save_attention_out": (d, attn), "dots": (2 * d, qkv),
                  "dots_no_batch": (2 * d, qkv),
                  "none": (5 * d, qkv + attn + 3 * mlp)}[remat]
  return whole + split / tensor


def _layer_elements(d: int, qkv: int, attn: int, mlp: int, tensor: int = 1) -> float:
  """Elements per token and device of one layer's forward held for its backward, plus the gradient
  in flight: norms, q/k/v, attention output, out-projection, gate, up and their product, down
  (the d_model-wide ones whole on every tensor shard, the rest split)."""
  return 5 * d + (qkv + attn + 3 * mlp) / tensor


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
  # Kept at 4 bytes per element whatever the compute dtype: compiling the paper config with 2 and
  # with 4 layers (v5p) gives 8,375 bytes per token and layer under `full` (d_model x 4.09) and
  # 33,001 under `dots` ((2 d_model + q/k/v) x 4.03) (docs/results/planner.md).
  terms["saved"] = int(s.num_layers * tokens * saved_per_token(f, layout.remat, tp) * 4)
  qkv, attn = (s.num_heads + 2 * s.num_kv_heads) * s.head_dim, s.num_heads * s.head_dim
  per_token = _layer_elements(s.d_model, qkv, attn, s.mlp_dim, tp) + 2 * s.d_model  # + routed copies
  if layout.remat == "none":                        # every layer's activations stay: in `saved`
    per_token = 0
  layer = int(tokens * per_token * b)
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
    per_chunk = positions * u.num_layers * _layer_elements(u.d_model, uqkv, uattn, u.mlp_dim, tp)
    # Without remat the chunks are not rematerialised either: the backward finds every chunk's
    # activations kept, at 4 bytes per element as the LLM's saved ones (compiled: 2 vs 4 layers).
    terms["unfold"] = int(chunks * per_chunk * 4 if layout.remat == "none" else per_chunk * b)
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
