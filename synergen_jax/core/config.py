"""Config helpers: `get_config(arg)` argument parsing, the typed model config, and validation.

Configs live in `configs/*.py` as ml_collections `get_config(arg)` functions (big_vision style). The
model never reads a ConfigDict directly: `ModelConfig.from_config(config.model)` turns it into frozen,
hashable dataclasses, so Flax modules can hold them and a typo in a key fails loudly.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import pathlib
from typing import Any

import ml_collections

from synergen_jax.core.errors import ConfigError
from synergen_jax.kernels.attention import GPU_KERNELS, IMPLS as ATTENTION_IMPLS

REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch", "save_attention_out")
DTYPES = ("float32", "bfloat16", "float16")


# ---------------------------------------------------------------------------------------------------
# `get_config(arg)` arguments: "fold=2x4,scan=True" -> ConfigDict(fold=(2, 4), scan=True).
# ---------------------------------------------------------------------------------------------------

def parse_fold(value: Any) -> tuple[int, int]:
  """Accepts "2x4", "2,4", (2, 4) or [2, 4] and returns (fh, fw)."""
  if isinstance(value, str):
    parts = value.lower().replace(",", "x").split("x")
  else:
    parts = list(value)
  try:
    fh, fw = (int(p) for p in parts)
  except (TypeError, ValueError):
    raise ConfigError(f"fold={value!r} is not a pair: write it as FHxFW, e.g. fold=2x4") from None
  return fh, fw


def parse_arg(arg: str | None, **defaults: Any) -> ml_collections.ConfigDict:
  """Parses a config argument string `k1=v1,k2=v2` against typed defaults.

  Every key must be one of `defaults`; values are converted to the default's type (bool accepts
  true/false/1/0 or the bare name for true, tuples accept 2x4). Unknown keys raise a ConfigError
  listing the valid ones.
  """
  out = dict(defaults)
  for item in filter(None, (arg or "").split(",")):
    if "=" not in item and isinstance(defaults.get(item), bool):
      out[item] = True                 # a bare boolean name switches it on: `sweep.py:runlocal`
      continue
    if "=" not in item:
      raise ConfigError(f"config argument {item!r} is not key=value (valid keys: {sorted(defaults)})")
    key, value = item.split("=", 1)
    if key not in defaults:
      raise ConfigError(f"unknown config argument {key!r}; valid keys: {sorted(defaults)}")
    default = defaults[key]
    if isinstance(default, bool):
      if value.lower() not in ("true", "false", "1", "0"):
        raise ConfigError(f"config argument {key}={value!r} must be true or false")
      out[key] = value.lower() in ("true", "1")
    elif isinstance(default, tuple):
      out[key] = parse_fold(value)
    elif default is None:
      out[key] = value
    else:
      try:
        out[key] = type(default)(value)
      except ValueError:
        raise ConfigError(f"config argument {key}={value!r} is not a {type(default).__name__}") from None
  return ml_collections.ConfigDict(out)


def load_module(path: str, what: str = "config file"):
  """Imports a config-style Python file by path (configs/*.py, configs/sweeps/*.py)."""
  if not pathlib.Path(path).is_file():
    raise ConfigError(f"{what} {path!r} does not exist")
  module_spec = importlib.util.spec_from_file_location(pathlib.Path(path).stem, path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module


def load_config(spec: str) -> ml_collections.ConfigDict:
  """Loads `path/to/config.py[:arg]` the way `--config` does: runs its get_config(arg)."""
  path, _, arg = spec.partition(":")
  return load_module(path).get_config(arg or None)


# ---------------------------------------------------------------------------------------------------
# Typed model config.
# ---------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class StackConfig:
  """Shape and execution options of one stack of decoder blocks (the LLM, or the unfold head); built
  by ModelConfig.from_config from the keys declared in ModelKeys (see there for what each means)."""
  num_layers: int
  d_model: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  mlp_dim: int
  num_experts: int              # 2 = text FFN + vision FFN, hard-routed by modality
  norm_eps: float
  rope_theta: float
  qkv_bias: bool
  dtype: str
  param_dtype: str
  attention_impl: str
  attention_block_q: int
  attention_block_k: int
  scan_layers: bool
  remat_policy: str
  copy_expert_init: bool = False  # every expert starts as a copy of expert 0 (vision FFN = text FFN)


# `config.model`, declared once: its keys, their types and defaults (a key without a default must be
# set by every config). base_config() fills the defaults, ModelConfig.from_config() rejects unknown
# and missing keys against these declarations and builds the typed config from them.

@dataclasses.dataclass(frozen=True)
class UnfoldKeys:
  """`config.model.unfold`: the unfold head's transformer (the LLM's block design, its own sizes)."""
  num_layers: int
  d_model: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  mlp_dim: int


@dataclasses.dataclass(frozen=True)
class ModelKeys:
  """`config.model`, key by key."""
  text_vocab: int
  num_layers: int
  d_model: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  mlp_dim: int
  codebook_size: int
  code_embed_dim: int             # width of the image-code embedding before folding
  code_grid: tuple[int, int]      # codes per image (rows, columns)
  fold: tuple[int, int]           # (fh, fw) codes per sequence slot; (1, 1) = no folding
  fold_mlp_hidden: int
  unfold: UnfoldKeys
  norm_eps: float = 1e-5
  rope_theta: float = 10_000.0
  qkv_bias: bool = False          # Qwen2 has q/k/v biases; Llama and InternLM2 do not
  tie_embeddings: bool = False
  vision_experts: bool = True     # a vision FFN beside the text FFN in every layer
  init_vision_from_text: bool = True
  scan_layers: bool = False
  remat_policy: str = "none"
  dtype: str = "float32"          # compute dtype
  param_dtype: str = "float32"    # master weights
  attention_impl: str = "auto"
  attention_block_q: int = 0      # flash-attention query / key block sizes (0 = the kernel's default)
  attention_block_k: int = 0
  # Per-row budgets (README "Per-row budgets"): the packer never puts more into a row, and the model
  # runs each head only on that many gathered slots. None: derived from the prepared data's index
  # when the trainer opens it, the whole row where no data is read (AOT, benchmarks).
  text_target_capacity: int | None = None   # text-target slots through the LM head
  image_slot_capacity: int | None = None    # image slots through the fold MLP
  unfold_capacity: int | None = None        # image-target windows through the unfold head
  # The chunked cross-entropy (model/chunked_xent.py): positions per chunk, vocabulary per tile.
  loss_chunk_rows: int = 2048
  loss_vocab_tile: int = 8192
  unfold_chunk: int = 256         # target windows per row through the unfold head at a time
  new_tokens: tuple[int, ...] = ()     # ids whose embedding / LM-head rows are separate parameters


def _defaults(keys) -> dict:
  return {f.name: f.default for f in dataclasses.fields(keys) if f.default is not dataclasses.MISSING}


def _check_keys(keys, section: ml_collections.ConfigDict, where: str) -> None:
  names = {f.name for f in dataclasses.fields(keys)}
  unknown = sorted(set(section.keys()) - names)
  if unknown:
    raise ConfigError(f"unknown {where} keys {unknown}; valid keys: {sorted(names)}")
  missing = sorted(names - set(section.keys()))
  if missing:
    raise ConfigError(f"{where} is missing keys {missing}")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Everything the SynerGen-VL modules need; built from `config.model` by `from_config`."""
  llm: StackConfig
  unfold: StackConfig
  text_vocab: int
  tie_embeddings: bool
  codebook_size: int
  code_embed_dim: int
  code_grid: tuple[int, int]
  fold: tuple[int, int]
  fold_mlp_hidden: int
  init_vision_from_text: bool
  unfold_capacity: int | None        # per-row budgets (ModelKeys); None = the whole row
  text_target_capacity: int | None = None
  image_slot_capacity: int | None = None
  loss_chunk_rows: int = 2048
  loss_vocab_tile: int = 8192
  unfold_chunk: int = 256
  new_tokens: tuple[int, ...] = ()   # ids whose embedding / LM-head rows are separate parameters

  @property
  def fold_ratio(self) -> int:
    return self.fold[0] * self.fold[1]

  @property
  def windows_per_image(self) -> int:
    return (self.code_grid[0] // self.fold[0]) * (self.code_grid[1] // self.fold[1])

  @classmethod
  def from_config(cls, section: ml_collections.ConfigDict) -> "ModelConfig":
    _check_keys(ModelKeys, section, "config.model")
    _check_keys(UnfoldKeys, section.unfold, "config.model.unfold")
    m = ModelKeys(**{k: v for k, v in section.items() if k != "unfold"},
                  unfold=UnfoldKeys(**section.unfold))
    common = dict(norm_eps=m.norm_eps, rope_theta=m.rope_theta, dtype=m.dtype,
                  param_dtype=m.param_dtype, attention_impl=m.attention_impl,
                  attention_block_q=m.attention_block_q, attention_block_k=m.attention_block_k,
                  remat_policy=m.remat_policy)
    llm = StackConfig(num_layers=m.num_layers, d_model=m.d_model, num_heads=m.num_heads,
                      num_kv_heads=m.num_kv_heads, head_dim=m.head_dim, mlp_dim=m.mlp_dim,
                      num_experts=2 if m.vision_experts else 1, qkv_bias=m.qkv_bias,
                      scan_layers=m.scan_layers, copy_expert_init=m.init_vision_from_text,
                      **common)
    # The unfold head's rows are one window (fold_ratio codes), shorter than a GPU kernel's tiles (16
    # rows for Triton's dots, 64 for wgmma): with the GPU kernels it uses the XLA reference, whose
    # [N, heads, r, r] scores are tiny.
    unfold_common = dict(common, attention_impl="xla" if m.attention_impl in GPU_KERNELS
                         else m.attention_impl)
    unfold = StackConfig(**dataclasses.asdict(m.unfold), num_experts=1, qkv_bias=False,
                         scan_layers=False, **unfold_common)
    return cls(llm=llm, unfold=unfold, text_vocab=m.text_vocab, tie_embeddings=m.tie_embeddings,
               codebook_size=m.codebook_size, code_embed_dim=m.code_embed_dim,
               code_grid=tuple(m.code_grid), fold=parse_fold(m.fold),
               fold_mlp_hidden=m.fold_mlp_hidden, init_vision_from_text=m.init_vision_from_text,
               unfold_capacity=m.unfold_capacity, text_target_capacity=m.text_target_capacity,
               image_slot_capacity=m.image_slot_capacity, loss_chunk_rows=m.loss_chunk_rows,
               loss_vocab_tile=m.loss_vocab_tile, unfold_chunk=m.unfold_chunk, new_tokens=tuple(int(t) for t in m.new_tokens))


# ---------------------------------------------------------------------------------------------------
# Validation: one function, run before any device work.
# ---------------------------------------------------------------------------------------------------

def _check(ok: bool, message: str) -> None:
  if not ok:
    raise ConfigError(message)


def _check_stack(name: str, s: StackConfig) -> None:
  for field in ("num_layers", "d_model", "num_heads", "num_kv_heads", "head_dim", "mlp_dim"):
    value = getattr(s, field)
    _check(isinstance(value, int) and value > 0, f"{name}.{field}={value!r} must be a positive int")
  _check(s.num_heads % s.num_kv_heads == 0,
         f"{name}.num_heads={s.num_heads} is not divisible by {name}.num_kv_heads={s.num_kv_heads}: "
         f"grouped-query attention needs whole groups; pick num_kv_heads among "
         f"{[d for d in range(1, s.num_heads + 1) if s.num_heads % d == 0]}")
  _check(s.head_dim % 2 == 0, f"{name}.head_dim={s.head_dim} must be even for rotary embeddings")
  _check(s.dtype in DTYPES, f"{name.rsplit('.', 1)[0]}.dtype={s.dtype!r}; choose one of {DTYPES}")
  _check(s.param_dtype in DTYPES, f"config.model.param_dtype={s.param_dtype!r}; choose one of {DTYPES}")
  _check(s.remat_policy in REMAT_POLICIES,
         f"config.model.remat_policy={s.remat_policy!r}; choose one of {REMAT_POLICIES}")
  _check(s.attention_impl in ATTENTION_IMPLS,
         f"config.model.attention_impl={s.attention_impl!r}; choose one of {ATTENTION_IMPLS}")
  _check(s.attention_block_q >= 0 and s.attention_block_k >= 0,
         f"config.model.attention_block_q={s.attention_block_q}, attention_block_k="
         f"{s.attention_block_k} must be >= 0 (0 = the kernel's default)")
  if s.attention_impl == "pallas_gpu":
    pow2 = lambda n: n > 0 and n & (n - 1) == 0
    _check(s.head_dim in (16, 32, 64, 128, 256),
           f"config.model.attention_impl='pallas_gpu' (Triton) needs {name}.head_dim a power of two in "
           f"16..256; got {s.head_dim}")
    _check(all(b == 0 or pow2(b) for b in (s.attention_block_q, s.attention_block_k)),
           f"config.model.attention_impl='pallas_gpu' needs power-of-two attention_block_q/k (or 0 = "
           f"64); got {s.attention_block_q}, {s.attention_block_k}")
  if s.attention_impl == "pallas_mgpu":
    _check(s.dtype in ("bfloat16", "float16"),
           f"config.model.attention_impl='pallas_mgpu' (wgmma) needs config.model.dtype bfloat16 or "
           f"float16, not {s.dtype!r}; use attention_impl=pallas_gpu for float32")
    _check(s.head_dim in (64, 128),
           f"config.model.attention_impl='pallas_mgpu' needs {name}.head_dim 64 or 128; got "
           f"{s.head_dim} (use pallas_gpu)")
    _check(s.attention_block_q in (0, 64) and s.attention_block_k in (0, 64, 128),
           f"config.model.attention_impl='pallas_mgpu' needs attention_block_q 64 and "
           f"attention_block_k 64 or 128 (0 = 64 x 128; larger blocks spill registers); got "
           f"{s.attention_block_q}, {s.attention_block_k}")
  _check(s.norm_eps > 0, f"config.model.norm_eps={s.norm_eps} must be > 0")
  _check(s.rope_theta > 0, f"config.model.rope_theta={s.rope_theta} must be > 0")


def validate_model(mc: ModelConfig) -> None:
  """Raises ConfigError naming the first inconsistent `config.model` value."""
  _check_stack("config.model", mc.llm)
  _check_stack("config.model.unfold", mc.unfold)
  gh, gw = mc.code_grid
  fh, fw = mc.fold
  _check(gh > 0 and gw > 0, f"config.model.code_grid={mc.code_grid} must be positive")
  _check(fh > 0 and fw > 0, f"config.model.fold={mc.fold} must be positive")
  if gh % fh or gw % fw:
    raise ConfigError(
        f"config.model.fold={fh}x{fw} does not divide config.model.code_grid={gh}x{gw}: fold rows must "
        f"divide {gh} and fold columns must divide {gw} (valid rows {_divisors(gh)}, "
        f"columns {_divisors(gw)}), e.g. --config.model.fold='(2, 2)'")
  for field in ("text_vocab", "codebook_size", "code_embed_dim", "fold_mlp_hidden"):
    value = getattr(mc, field)
    _check(isinstance(value, int) and value > 0, f"config.model.{field}={value!r} must be a positive int")
  _check(all(0 <= t < mc.text_vocab for t in mc.new_tokens) and len(set(mc.new_tokens)) == len(mc.new_tokens),
         f"config.model.new_tokens={mc.new_tokens} must be distinct ids in [0, text_vocab={mc.text_vocab})")
  for field in CAPACITIES:
    value = getattr(mc, field)
    _check(value is None or (isinstance(value, int) and value > 0),
           f"config.model.{field}={value!r} must be None (derived from the data) or > 0")
  for field in ("loss_chunk_rows", "loss_vocab_tile", "unfold_chunk"):
    value = getattr(mc, field)
    _check(isinstance(value, int) and value > 0, f"config.model.{field}={value!r} must be a positive int")


# The per-row budgets of config.model besides the row's slots (data.seq_len).
CAPACITIES = ("text_target_capacity", "image_slot_capacity", "unfold_capacity")


def _divisors(n: int) -> list[int]:
  return [d for d in range(1, n + 1) if n % d == 0]


def validate_config(config: ml_collections.ConfigDict) -> ModelConfig:
  """Validates a whole experiment config and returns its typed ModelConfig.

  Checks the model (see `validate_model`) and the cross-section constraints: the sequence length must
  hold at least one image plus its <boi>/<eoi>, the unfold capacity fits the row, the loss weights and
  the training section are sane, and the stage is known.
  """
  mc = ModelConfig.from_config(config.model)
  validate_model(mc)
  seq_len = config.data.seq_len
  _check(isinstance(seq_len, int) and seq_len > 0, f"config.data.seq_len={seq_len!r} must be > 0")
  needed = mc.windows_per_image + 2
  _check(seq_len >= needed,
         f"config.data.seq_len={seq_len} cannot hold one image: {mc.code_grid[0]}x{mc.code_grid[1]} "
         f"codes folded {mc.fold[0]}x{mc.fold[1]} take {mc.windows_per_image} slots plus <boi>/<eoi> "
         f"= {needed}; raise seq_len or the fold ratio")
  if mc.llm.attention_impl == "pallas_mgpu":
    blocks = (64, mc.llm.attention_block_k or 128)
    _check(seq_len % blocks[0] == 0 and seq_len % blocks[1] == 0,
           f"config.data.seq_len={seq_len} must be a multiple of the pallas_mgpu attention blocks "
           f"{blocks} (config.model.attention_block_q/k)")
  for field in CAPACITIES:
    value = getattr(mc, field)
    _check(value is None or value <= seq_len,
           f"config.model.{field}={value} exceeds config.data.seq_len={seq_len}")
  _check(mc.image_slot_capacity is None or mc.image_slot_capacity >= mc.windows_per_image,
         f"config.model.image_slot_capacity={mc.image_slot_capacity} cannot hold one image of "
         f"{mc.windows_per_image} windows; raise it or set None")
  _check(config.loss.image_weight >= 0, f"config.loss.image_weight={config.loss.image_weight} < 0")
  _check(config.train.batch_size > 0, f"config.train.batch_size={config.train.batch_size} must be > 0")
  _check(config.train.steps >= 0, f"config.train.steps={config.train.steps} must be >= 0")
  _check(str(config.stage) in ("1", "2", "sft"), f"config.stage={config.stage!r}; choose 1, 2 or sft")
  _check(config.train.grad_accum >= 1 and config.train.batch_size % config.train.grad_accum == 0,
         f"config.train.grad_accum={config.train.grad_accum} must be >= 1 and divide "
         f"config.train.batch_size={config.train.batch_size}")
  _check(config.train.nonfinite in ("skip", "stop"),
         f"config.train.nonfinite={config.train.nonfinite!r}; choose skip or stop")
  _check(config.optim.schedule in ("constant", "cosine"),
         f"config.optim.schedule={config.optim.schedule!r}; choose constant or cosine")
  _check(config.optim.learning_rate > 0 and config.optim.warmup_steps >= 0,
         f"config.optim.learning_rate={config.optim.learning_rate} must be > 0, warmup_steps >= 0")
  validate_data(config)
  validate_vq(config)
  return mc


TASKS = ("caption", "generation", "interleaved")
IMAGE_FITS = ("resize", "pad", "exact")


def validate_data(config: ml_collections.ConfigDict) -> None:
  """The data section: task mix, tiles, policies, pipeline knobs."""
  d = config.data
  _check(d.image_fit in IMAGE_FITS, f"config.data.image_fit={d.image_fit!r}; choose one of {IMAGE_FITS}")
  _check(d.too_long in ("skip", "error"), f"config.data.too_long={d.too_long!r}; choose skip or error")
  _check(isinstance(d.max_tiles, int) and d.max_tiles >= 1,
         f"config.data.max_tiles={d.max_tiles!r} must be an int >= 1 (1 = no dynamic resolution)")
  unknown = set(d.tasks.keys()) - set(TASKS)
  _check(not unknown, f"config.data.tasks has unknown task(s) {sorted(unknown)}; known: {TASKS}")
  _check(all(v >= 0 for v in d.tasks.values()) and sum(d.tasks.values()) > 0,
         f"config.data.tasks={dict(d.tasks)} needs non-negative weights, at least one positive")
  _check(d.interleaved_images >= 2, f"config.data.interleaved_images={d.interleaved_images} must be >= 2")
  _check(0.0 <= d.p_uncond < 1.0, f"config.data.p_uncond={d.p_uncond} must be in [0, 1)")
  _check("<UNCOND>" in d.uncond_prompt,
         f"config.data.uncond_prompt={d.uncond_prompt!r} must contain <UNCOND> (the CFG stream's token)")
  _check(isinstance(d.shards, int) and d.shards >= 0 and (d.shards == 0 or config.train.batch_size % d.shards == 0),
         f"config.data.shards={d.shards!r} must be 0 (one per process) or a positive divisor of "
         f"config.train.batch_size={config.train.batch_size}")
  _check(d.num_workers >= 0 and d.prefetch >= 0,
         f"config.data.num_workers={d.num_workers} and prefetch={d.prefetch} must be >= 0")
  _check(d.reserved_tokens >= 0 and d.eval_count >= 0 and d.records_per_shard > 0,
         f"config.data.reserved_tokens={d.reserved_tokens}, eval_count={d.eval_count} must be >= 0 "
         f"and records_per_shard={d.records_per_shard} > 0")
  _check(isinstance(d.in_flight, int) and d.in_flight > 0,
         f"config.data.in_flight={d.in_flight!r} must be an int > 0 (examples prepare holds at once)")


def validate_vq(config: ml_collections.ConfigDict) -> None:
  """The image tokenizer section, against the model's code grid."""
  v, (gh, gw) = config.vq, config.model.code_grid
  _check(v.downsample in (4, 8, 16), f"config.vq.downsample={v.downsample}; choose 4, 8 or 16")
  _check(gh == gw, f"config.model.code_grid={gh}x{gw}: the image tokenizer takes square images, "
                   "so the grid must be square")
  _check(v.channels in (1, 3), f"config.vq.channels={v.channels}; choose 1 (grayscale) or 3 (RGB)")
  _check(v.code_dim > 0 and v.width > 0 and v.num_res_blocks >= 0,
         f"config.vq.code_dim={v.code_dim}, width={v.width} must be > 0, num_res_blocks >= 0")
  _check(0.0 < v.usage_decay < 1.0, f"config.vq.usage_decay={v.usage_decay} must be in (0, 1)")



# ---------------------------------------------------------------------------------------------------
# The skeleton every experiment config fills in.
# ---------------------------------------------------------------------------------------------------

def base_config(*, model: dict, unfold: dict, seq_len: int, fold) -> ml_collections.ConfigDict:
  """A full experiment config with framework defaults; `configs/*.py` call this and adjust.

  The names under `train`, `model.fold`, `stage`, `mesh` and `data.name` are used by other tools
  (launch scripts, sweeps) and must keep their spelling.
  """
  m = dict(_defaults(ModelKeys), fold=parse_fold(fold))
  m.update(model)
  m["unfold"] = ml_collections.ConfigDict(unfold)
  config = ml_collections.ConfigDict(dict(
      model=ml_collections.ConfigDict(m),
      loss=ml_collections.ConfigDict(dict(image_weight=2.0)),
      data=ml_collections.ConfigDict(dict(
          name="mnist5k", seq_len=seq_len, seed=0,
          # Pixels: how a raw image becomes the tokenizer's square input (data/images.fit).
          image_fit="resize",
          # Understanding images: InternVL-1.5 dynamic resolution (1 = one tile, no thumbnail).
          max_tiles=1, thumbnail=True,
          # Task mix: expected examples of each task per raw image (fractions are drawn per image).
          tasks=ml_collections.ConfigDict(dict(caption=1.0, generation=1.0, interleaved=0.0)),
          interleaved_images=2, p_uncond=0.1,
          caption_prompt="Provide a one-sentence caption for the image",
          generation_prompt="Generate an image of:",
          uncond_prompt="Here is a random image <UNCOND>:",
          # Text tokenizer: train SentencePiece on the captions (tokenizer=None) or load a .model.
          reserved_tokens=8, eval_count=500, records_per_shard=4096,
          # Pipeline: an example longer than seq_len is "skip"ped and counted, or an "error".
          too_long="skip", num_workers=0, prefetch=2, packing_bins=0,
          # Logical data shards, each packed and batched on its own (0 = one per process). Fix it
          # (e.g. to the largest process count you will use) to get the same batches on any number
          # of processes; it must divide train.batch_size and be a multiple of the process count.
          shards=0,
          # Web-scale formats (data/formats.py): parquet columns; prepare's bound on examples
          # decoded and encoded at once (memory is flat in the dataset's size).
          image_column="image", text_column="text", in_flight=1024,
          # Several prepared sets read as one stream: ((path, weight), ...), weights need not sum
          # to 1 (data/mixture.py). Empty: read config.data.path alone.
          mixture=())),
      vq=ml_collections.ConfigDict(dict(
          downsample=4, channels=3, code_dim=32, width=64, num_res_blocks=1, beta=0.25,
          steps=2000, batch_size=64, learning_rate=1e-3, usage_decay=0.99, restart_every=100,
          restart_threshold=0.03, eval_count=256, encode_batch=256, log_every=100)),
      train=ml_collections.ConfigDict(dict(
          steps=1000, batch_size=32, seed=0, log_every=10, checkpoint_every=500,
          keep_checkpoints=2, keep_period=0, grad_accum=1, nonfinite="skip",
          eval_every=0, eval_batches=0,    # held-out pass: every N steps (0 = at the end), N batches (0 = all)
          max_replicated_fraction=1.0)),
      optim=ml_collections.ConfigDict(dict(
          learning_rate=1e-3, warmup_steps=100, schedule="cosine", decay_steps=1000,
          min_lr_ratio=0.1, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.05, clip_norm=1.0)),
      stage="1",
      mesh=ml_collections.ConfigDict(dict(data=-1, fsdp=1, tensor=1)),
  ))
  # The capacities may be None or an int: declare their type so `--config.model.unfold_capacity=64`
  # overrides work on the locked config.
  for field in CAPACITIES:
    config.model[field] = ml_collections.FieldReference(m[field], field_type=int)
  config.data.path = ml_collections.FieldReference(None, field_type=str)
  config.data.tokenizer = ml_collections.FieldReference(None, field_type=str)
  config.data.tfds_text_key = ml_collections.FieldReference(None, field_type=str)
  config.vq.workdir = ml_collections.FieldReference(None, field_type=str)
  config.data.cache_dir = ml_collections.FieldReference(None, field_type=str)
  # Eval shards of a web-scale format (same format as data.path); None: no eval split. Relative image
  # paths in jsonl / chat / interleaved records resolve against image_root, else the record file's folder.
  config.data.eval_path = ml_collections.FieldReference(None, field_type=str)
  config.data.image_root = ml_collections.FieldReference(None, field_type=str)
  config.train.init_from = ml_collections.FieldReference(None, field_type=str)
  # The cosine decays over the run unless a config says otherwise.
  config.optim.decay_steps = config.train.get_ref("steps")
  return config
