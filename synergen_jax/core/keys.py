"""Every config key, declared once: its type, its default and what it means.

An experiment config (`configs/*.py`) is an ml_collections ConfigDict with the sections below. These
declarations are the only place a key is named: `config.base_config` builds the ConfigDict from their
defaults, `config.validate_config` rejects unknown keys and wrong types against them (naming the key
and its declaration), the typed model config and the HF shapes derive their fields from them, and
`python -m synergen_jax.config --describe` prints them. A key with no default must be set by every
config (the model's shape). Cross-key rules (fold divides the code grid, ...) live in config.py.

Run `python -m synergen_jax.config --describe --config configs/synergen_vl_2b.py` for the paper's
values, one line per key.
"""

import dataclasses
import types
import typing
from typing import Any

# Don't add `from __future__ import annotations`: the checks below read the field types as objects.


def key(default: Any = dataclasses.MISSING, doc: str = "") -> Any:
  """A declared key: its default (none: every config sets it) and a one-line description."""
  assert doc, "every config key needs a description"
  return dataclasses.field(default=default, metadata={"doc": doc})


def section(cls):
  """A frozen, keyword-only dataclass: a config section whose fields are its keys."""
  return dataclasses.dataclass(frozen=True, kw_only=True)(cls)


# ---------------------------------------------------------------------------------------------------
# config.model
# ---------------------------------------------------------------------------------------------------

@section
class StackShape:
  """The shape of one stack of decoder blocks; `config.model.unfold` is the unfold head's."""
  num_layers: int = key(doc="decoder blocks in the stack")
  d_model: int = key(doc="width of the residual stream")
  num_heads: int = key(doc="query heads")
  num_kv_heads: int = key(doc="key/value heads (grouped-query attention; divides num_heads)")
  head_dim: int = key(doc="width of one attention head (even: rotary embeddings)")
  mlp_dim: int = key(doc="hidden width of the SwiGLU FFN")


@section
class ModelKeys(StackShape):
  """`config.model`: the LLM's shape (StackShape's keys), the image side, and how it runs."""
  text_vocab: int = key(doc="text vocabulary rows (embedding and LM head), special tokens included")
  codebook_size: int = key(doc="K: image codes of the image tokenizer")
  code_embed_dim: int = key(doc="width of the image-code embedding before folding")
  code_grid: tuple[int, int] = key(doc="codes per image (rows, columns); the tokenizer's grid")
  fold: tuple[int, int] = key(
      doc="(fh, fw) codes per sequence slot, written 2x4 or 2,4; (1, 1) = no folding")
  fold_mlp_hidden: int = key(doc="hidden width of the fold MLP (fh*fw*code_embed_dim -> d_model)")
  unfold: StackShape = key(doc="the unfold head's decoder: the LLM's block design, its own sizes")
  norm_eps: float = key(1e-5, "RMSNorm epsilon")
  rope_theta: float = key(10_000.0, "RoPE base frequency")
  qkv_bias: bool = key(False, "q/k/v projections have biases (Qwen2: yes; Llama, InternLM2: no)")
  tie_embeddings: bool = key(False, "the LM head reuses the text embedding matrix")
  vision_experts: bool = key(True, "a vision FFN beside the text FFN in every layer, routed by modality")
  init_vision_from_text: bool = key(True, "the vision FFN starts as a copy of the text FFN")
  scan_layers: bool = key(False, "run the LLM's layers with nn.scan (faster compiles at depth)")
  remat_policy: str = key(
      "none", "what the backward pass recomputes: none, full, dots, dots_no_batch, save_attention_out")
  dtype: str = key("float32", "compute dtype: float32, bfloat16 or float16")
  param_dtype: str = key("float32", "master-weight dtype: float32, bfloat16 or float16")
  attention_impl: str = key(
      "auto", "attention kernel: auto, xla, cudnn, pallas_gpu, pallas_mgpu or pallas_tpu")
  attention_block_q: int = key(0, "flash-attention query block (0 = the kernel's default)")
  attention_block_k: int = key(0, "flash-attention key block (0 = the kernel's default)")
  text_target_capacity: int | None = key(
      None, "per-row budget: text-target slots through the LM head (None = derived from the data)")
  image_slot_capacity: int | None = key(
      None, "per-row budget: image slots through the fold MLP (None = derived from the data)")
  unfold_capacity: int | None = key(
      None, "per-row budget: image-target windows through the unfold head (None = derived)")
  loss_chunk_rows: int = key(2048, "chunked cross-entropy: positions per chunk")
  loss_vocab_tile: int = key(8192, "chunked cross-entropy: vocabulary entries per tile")
  unfold_chunk: int = key(256, "target windows per row through the unfold head at a time")
  new_tokens: tuple[int, ...] = key(
      (), "token ids whose embedding / LM-head rows are separate (trainable in stage 1) parameters")


# ---------------------------------------------------------------------------------------------------
# config.loss, config.data, config.vq
# ---------------------------------------------------------------------------------------------------

@section
class LossKeys:
  """`config.loss`."""
  image_weight: float = key(2.0, "lambda in L = CE_text + lambda * CE_image (paper: 2)")


@section
class TaskKeys:
  """`config.data.tasks`: expected examples of each task per raw image (fractions drawn per image)."""
  caption: float = key(1.0, "captioning examples per image (loss on the caption)")
  generation: float = key(1.0, "text-to-image examples per image (loss on the image)")
  interleaved: float = key(0.0, "interleaved text/image documents per image")


@section
class DataKeys:
  """`config.data`: where examples come from, how they are made, how batches are packed."""
  name: str = key("mnist5k", "raw source: an embedded dataset, tfds:NAME, jsonl or a web format")
  path: str | None = key(None, "prepared data folder (or raw input files, by name); None = the cache")
  eval_path: str | None = key(None, "held-out raw input files of the same format as path")
  components: tuple[str, ...] = key(
      (), "the config's recipe components (its `component=NAME` argument): what prepare --check "
      "lists")
  code_cache: str | None = key(
      None, "folder (or gs:// path) of image codes shared by prepares: each tile is encoded once "
      "per image tokenizer, so later stages encode only new tiles (prepare/code_cache.py)")
  image_root: str | None = key(None, "folder relative image paths resolve against (default: the record's)")
  cache_dir: str | None = key(None, "root of the data cache (default $SYNERGEN_CACHE, ~/.cache/synergen_jax)")
  tokenizer: str | None = key(None, "text tokenizer folder or .model (None = train SentencePiece)")
  tfds_text_key: str | None = key(None, "the TFDS feature that holds the caption (default: the label)")
  seq_len: int = key(doc="sequence slots per row (folded: one slot per window)")
  seed: int = key(0, "seed of the train/eval split and the shuffle")
  image_fit: str = key("resize", "how a raw image becomes the tokenizer's square: resize, pad or exact")
  max_tiles: int = key(1, "InternVL dynamic-resolution tiles of an understanding image (1 = one tile)")
  thumbnail: bool = key(True, "add a thumbnail tile after several tiles")
  tasks: TaskKeys = key(doc="the task mix")
  interleaved_images: int = key(2, "images per interleaved document")
  p_uncond: float = key(0.1, "probability a generation prompt becomes the unconditional one (CFG)")
  caption_prompt: str = key("Provide a one-sentence caption for the image", "captioning prompt")
  generation_prompt: str = key("Generate an image of:", "prefix of a generation prompt")
  uncond_prompt: str = key("Here is a random image <UNCOND>:", "the unconditional (CFG) prompt")
  reserved_tokens: int = key(8, "spare <extra_i> special tokens reserved in the text vocabulary")
  eval_count: int = key(500, "raw examples held out for evaluation (index sources)")
  records_per_shard: int = key(4096, "source indices per input shard of prepare")
  too_long: str = key("skip", "an example longer than a row: skip (and count) or error")
  num_workers: int = key(0, "Grain worker processes (0 = in the main process)")
  prefetch: int = key(2, "batches prepared ahead")
  packing_bins: int = key(0, "first-fit packing bins (0 = one row per shard's share of a batch)")
  shards: int = key(
      0, "logical data shards, each packed on its own (0 = one per process; fix it for same batches "
         "on any process count)")
  image_column: str = key("image", "parquet column of the image")
  text_column: str = key("text", "parquet column of the text")
  in_flight: int = key(1024, "examples prepare decodes and encodes at once (bounds its memory)")
  mixture: tuple = key((), "prepared sets read as one stream: ((path, weight), ...); empty = path")


@section
class VQKeys:
  """`config.vq`: the image tokenizer, its training and its use."""
  workdir: str | None = key(None, "a trained or imported image tokenizer (None = train one into the cache)")
  downsample: int = key(4, "pixels per code along a side: 4, 8 or 16")
  channels: int = key(3, "image channels: 1 (grayscale) or 3 (RGB)")
  code_dim: int = key(32, "width of a codebook entry")
  width: int = key(64, "base channels of the conv encoder/decoder")
  num_res_blocks: int = key(1, "residual blocks per resolution")
  beta: float = key(0.25, "commitment loss weight")
  steps: int = key(2000, "tokenizer training steps")
  batch_size: int = key(64, "tokenizer training batch")
  learning_rate: float = key(1e-3, "tokenizer learning rate")
  usage_decay: float = key(0.99, "decay of the codes' running usage (dead-code detection)")
  restart_every: int = key(100, "steps between dead-code restarts")
  restart_threshold: float = key(0.03, "usage below which a code counts as dead")
  eval_count: int = key(256, "held-out images of the tokenizer's evaluation")
  encode_batch: int = key(256, "images per jitted encode/decode call")
  log_every: int = key(100, "tokenizer training steps between log lines")


# ---------------------------------------------------------------------------------------------------
# config.train, config.optim, config.mesh, config.stage
# ---------------------------------------------------------------------------------------------------

@section
class WandbKeys:
  """`config.train.wandb`: optional Weights & Biases logging (pip install wandb), one run per workdir."""
  mode: str = key("disabled", "disabled, offline (files under the run's wandb dir) or online")
  project: str = key("synergen_jax", "the W&B project the run logs to")
  entity: str | None = key(None, "the W&B team or user (None = the account's default)")


@section
class TrainKeys:
  """`config.train`."""
  steps: int = key(1000, "optimizer steps")
  batch_size: int = key(32, "rows per global batch (all processes)")
  seed: int = key(0, "seed of the parameters and the dropout/sampling streams")
  log_every: int = key(10, "steps between metrics.jsonl lines")
  checkpoint_every: int = key(500, "steps between checkpoints")
  keep_checkpoints: int = key(2, "most recent checkpoints kept")
  keep_period: int = key(0, "also keep every N-th step's checkpoint (0 = none)")
  grad_accum: int = key(1, "micro-batches per step (divides batch_size)")
  nonfinite: str = key("skip", "a non-finite loss: skip the update (and count it) or stop")
  eval_every: int = key(0, "steps between held-out passes (0 = at the end only)")
  eval_batches: int = key(0, "batches per held-out pass (0 = all)")
  max_replicated_fraction: float = key(
      1.0, "fail when more than this share of parameter bytes is replicated on every device")
  init_from: str | None = key(None, "a workdir (training or HF import) whose parameters start the run")
  preview_images: int = key(
      8, "images per preview grid at each held-out pass, generated and captioned (0 = no previews)")
  preview_prompts: tuple[str, ...] = key(
      (), "texts the preview images are generated from, cycled (empty = held-out captions)")
  preview_cfg: float = key(3.0, "classifier-free guidance scale of the preview images (1 = off)")
  preview_temperature: float = key(
      1.0, "sampling temperature of the preview images, seeded by train.seed (0 = greedy)")
  events_every_secs: float = key(
      60.0, "least seconds between flushes of the TensorBoard events file (bucket workdirs: copies to the bucket)")
  wandb: WandbKeys = key(doc="Weights & Biases logging")


@section
class OptimKeys:
  """`config.optim`: AdamW with a warm-up and a constant or cosine schedule."""
  learning_rate: float = key(1e-3, "peak learning rate")
  warmup_steps: int = key(100, "linear warm-up steps")
  schedule: str = key("cosine", "after warm-up: constant or cosine")
  decay_steps: int = key(1000, "cosine length in steps (base_config ties it to train.steps)")
  min_lr_ratio: float = key(0.1, "the cosine's final learning rate over the peak")
  b1: float = key(0.9, "Adam beta1")
  b2: float = key(0.95, "Adam beta2")
  eps: float = key(1e-8, "Adam epsilon")
  weight_decay: float = key(0.05, "decoupled weight decay")
  clip_norm: float = key(1.0, "global gradient-norm clip")


@section
class MeshKeys:
  """`config.mesh`: devices per axis; -1 = the rest of the devices. Across several nodes (GPU hosts,
  one process each, or TPU slices) data, fsdp and tensor size one node and the dcn_* keys count nodes
  (parallel/mesh.py)."""
  data: int = key(-1, "data-parallel axis (devices of one node when there are several)")
  fsdp: int = key(
      1, "fully-sharded data-parallel axis, parameters and optimizer state sharded (within one node)")
  tensor: int = key(1, "tensor-parallel axis (within one node)")
  dcn_data: int = key(-1, "nodes (GPU hosts or TPU slices) the data axis spans; -1 = the rest")
  dcn_fsdp: int = key(1, "nodes the fsdp axis spans (its gathers then cross nodes); -1 = the rest")


@section
class ExperimentKeys:
  """A whole experiment config."""
  model: ModelKeys = key(doc="the network")
  loss: LossKeys = key(doc="the loss weights")
  data: DataKeys = key(doc="the data")
  vq: VQKeys = key(doc="the image tokenizer")
  train: TrainKeys = key(doc="the trainer")
  optim: OptimKeys = key(doc="the optimizer")
  mesh: MeshKeys = key(doc="the device mesh")
  stage: str = key("1", "progressive alignment stage: 1, 2 or sft (what is trainable)")


# ---------------------------------------------------------------------------------------------------
# Reading the declarations.
# ---------------------------------------------------------------------------------------------------

def is_section(t) -> bool:
  return isinstance(t, type) and dataclasses.is_dataclass(t)


def fields(cls) -> tuple[dataclasses.Field, ...]:
  return dataclasses.fields(cls)


def defaults(cls) -> dict:
  """{key: default} of the keys that have one (sections included, recursively)."""
  out = {}
  for f in fields(cls):
    if is_section(f.type):
      out[f.name] = defaults(f.type)
    elif f.default is not dataclasses.MISSING:
      out[f.name] = f.default
  return out


def optional_type(t):
  """int for `int | None`, None for a type that does not admit None."""
  if isinstance(t, types.UnionType) and type(None) in typing.get_args(t):
    rest = [a for a in typing.get_args(t) if a is not type(None)]
    return rest[0] if len(rest) == 1 else None
  return None


def type_name(t) -> str:
  return getattr(t, "__name__", None) if isinstance(t, type) and not typing.get_args(t) else str(t)


def matches(value, t) -> bool:
  """Whether a config value has the declared type (an int is a float; lists pass as tuples)."""
  inner = optional_type(t)
  if inner is not None:
    return value is None or matches(value, inner)
  if t is bool:
    return isinstance(value, bool)
  if t is int:
    return isinstance(value, int) and not isinstance(value, bool)
  if t is float:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
  if t is str:
    return isinstance(value, str)
  if t is tuple or typing.get_origin(t) is tuple:
    if not isinstance(value, (tuple, list)):
      return False
    args = typing.get_args(t)
    if not args:
      return True
    if len(args) == 2 and args[1] is Ellipsis:
      return all(matches(v, args[0]) for v in value)
    return len(value) == len(args) and all(matches(v, a) for v, a in zip(value, args))
  raise TypeError(f"no check for declared type {t}")


def declaration(cls, f: dataclasses.Field) -> str:
  """How a key is declared, for error messages: `ModelKeys.fold: tuple[int, int]  # ...`."""
  owner = next(c for c in cls.__mro__ if f.name in getattr(c, "__annotations__", {}))
  return f"{owner.__name__}.{f.name}: {type_name(f.type)}  # {f.metadata['doc']} (synergen_jax/core/keys.py)"


def describe(cls, values=None, prefix: str = "config") -> list[str]:
  """One line per key, `section.key = value  # description`; values from a config when given,
  else the declared defaults (`<required>` where there is none)."""
  lines = []
  for f in fields(cls):
    name = f"{prefix}.{f.name}"
    value = values[f.name] if values is not None and f.name in values else (
        f.default if f.default is not dataclasses.MISSING else "<required>")
    if is_section(f.type):
      lines += describe(f.type, values[f.name] if values is not None and f.name in values else None,
                        name)
    else:
      lines.append(f"{name} = {value!r}  # {f.metadata['doc']}")
  return lines


def derived(name: str, base, source, names, extra=(), doc: str = ""):
  """A frozen dataclass with `base`'s fields (None: no base), then the keys `names` as `source` declares them (type and
  description, no default), then `extra` (name, type, description) fields that are not config keys.
  How typed configs take fields from the declarations instead of restating them."""
  by_name = {f.name: f for f in fields(source)}
  spec = [(n, by_name[n].type, dataclasses.field(metadata=by_name[n].metadata)) for n in names]
  spec += [(n, t, dataclasses.field(metadata={"doc": d})) for n, t, d in extra]
  cls = dataclasses.make_dataclass(name, spec, bases=(base,) if base else (), frozen=True,
                                    kw_only=True)
  cls.__doc__ = doc or f"{', '.join(names)} as {source.__name__} declares them."
  return cls
