"""Configs: `get_config(arg)` argument parsing, the skeleton every config fills, the typed model
config, and validation.

Configs live in `configs/*.py` as ml_collections `get_config(arg)` functions (big_vision style) that
call `base_config` and adjust it. Every key is declared once in core/keys.py (type, default,
description); `validate_config` checks a config against those declarations and the rules between keys
before any device work. The model never reads a ConfigDict directly: `ModelConfig.from_config(
config.model)` turns it into frozen, hashable dataclasses, so Flax modules can hold them.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import pathlib
from typing import Any

import ml_collections

from synergen_jax.core import keys
from synergen_jax.core.errors import ConfigError
from synergen_jax.kernels.attention import GPU_KERNELS, IMPLS as ATTENTION_IMPLS

REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch", "save_attention_out")
DTYPES = ("float32", "bfloat16", "float16")


# ---------------------------------------------------------------------------------------------------
# `get_config(arg)` arguments: "fold=2x4,scan=True" -> ConfigDict(fold=(2, 4), scan=True).
# ---------------------------------------------------------------------------------------------------

def parse_fold(value: Any) -> tuple[int, int]:
  """Accepts "2x4", "2,4", (2, 4) or [2, 4] and returns (fh, fw). A command line's
  `--config.model.fold=2x4` reaches here as ("2x4",): ml_collections reads a tuple flag by commas."""
  if isinstance(value, (tuple, list)) and len(value) == 1 and isinstance(value[0], str):
    value = value[0]
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

# The execution options a stack takes from config.model (the unfold head overrides a few of them).
STACK_OPTIONS = ("norm_eps", "rope_theta", "qkv_bias", "dtype", "param_dtype", "attention_impl",
                 "attention_block_q", "attention_block_k", "scan_layers", "remat_policy")

StackConfig = keys.derived(
    "StackConfig", keys.StackShape, keys.ModelKeys, STACK_OPTIONS,
    extra=(("num_experts", int, "2 = text FFN + vision FFN, hard-routed by modality; 1 = one FFN"),
           ("copy_expert_init", bool, "every expert starts as a copy of expert 0 (vision = text)")),
    doc="""Shape and execution options of one stack of decoder blocks (the LLM, or the unfold head):
    StackShape's keys plus the config.model options above, declared in core/keys.py.""")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelConfig(keys.ModelKeys):
  """Everything the SynerGen-VL modules need: config.model's keys (ModelKeys, typed and normalised:
  fold and code_grid as int pairs, new_tokens as a tuple) plus each stack's StackConfig. Built by
  `from_config`; frozen and hashable, so Flax modules can hold it."""
  llm: StackConfig
  unfold: StackConfig   # config.model.unfold's shape with the execution options it runs under

  @property
  def fold_ratio(self) -> int:
    return self.fold[0] * self.fold[1]

  @property
  def windows_per_image(self) -> int:
    return (self.code_grid[0] // self.fold[0]) * (self.code_grid[1] // self.fold[1])

  @classmethod
  def from_config(cls, section: ml_collections.ConfigDict) -> "ModelConfig":
    """`config.model`, already checked against its declarations (validate_config, the only caller,
    checks the whole config first)."""
    m = {f.name: section[f.name] for f in keys.fields(keys.ModelKeys) if f.name != "unfold"}
    options = {k: m[k] for k in STACK_OPTIONS}
    shape = lambda source: {f.name: source[f.name] for f in keys.fields(keys.StackShape)}
    llm = StackConfig(**shape(m), **options, num_experts=2 if m["vision_experts"] else 1,
                      copy_expert_init=m["init_vision_from_text"])
    # The unfold head's rows are one window (fold_ratio codes), shorter than a GPU kernel's tiles (16
    # rows for Triton's dots, 64 for wgmma): with the GPU kernels it uses the XLA reference, whose
    # [N, heads, r, r] scores are tiny.
    unfold = StackConfig(**shape(section.unfold), **dict(
        options, qkv_bias=False, scan_layers=False,
        attention_impl="xla" if m["attention_impl"] in GPU_KERNELS else m["attention_impl"]),
        num_experts=1, copy_expert_init=False)
    m.update(code_grid=tuple(m["code_grid"]), fold=parse_fold(m["fold"]),
             new_tokens=tuple(int(t) for t in m["new_tokens"]))
    return cls(**m, llm=llm, unfold=unfold)


# ---------------------------------------------------------------------------------------------------
# Validation: one function, run before any device work.
# ---------------------------------------------------------------------------------------------------

def _check(ok: bool, message: str) -> None:
  if not ok:
    raise ConfigError(message)


def check_section(declared, section: ml_collections.ConfigDict, where: str) -> None:
  """Every key of `section` is declared in `declared` (core/keys.py) with a value of its type, and
  every declared key is there; nested sections are checked the same way. The error names the key and
  its declaration."""
  names = {f.name for f in keys.fields(declared)}
  unknown = sorted(set(section.keys()) - names)
  _check(not unknown, f"unknown {where} keys {unknown}; valid keys: {sorted(names)} (declared in "
                      f"synergen_jax/core/keys.py {declared.__name__})")
  missing = sorted(names - set(section.keys()))
  _check(not missing, f"{where} is missing keys {missing} (declared in synergen_jax/core/keys.py "
                      f"{declared.__name__}; base_config fills every key that has a default)")
  for f in keys.fields(declared):
    value = section[f.name]
    if keys.is_section(f.type):
      _check(isinstance(value, (ml_collections.ConfigDict, dict)),
             f"{where}.{f.name}={value!r} must be a section; declared {keys.declaration(declared, f)}")
      check_section(f.type, value, f"{where}.{f.name}")
    else:
      _check(keys.matches(value, f.type),
             f"{where}.{f.name}={value!r} has the wrong type; declared {keys.declaration(declared, f)}")


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
        f"columns {_divisors(gw)}), e.g. --config.model.fold=2x2")
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
  # A command line's --config.model.fold=2x4 arrives as ("2x4",): normalise it in place, so everything
  # that reads the config afterwards (config.json included) sees the pair.
  if config.model.get("fold") is not None:
    config.model.fold = parse_fold(config.model.fold)
  check_section(keys.ExperimentKeys, config, "config")
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


IMAGE_FITS = ("resize", "pad", "exact")


def validate_data(config: ml_collections.ConfigDict) -> None:
  """The data section: task mix, tiles, policies, pipeline knobs."""
  d = config.data
  _check(d.image_fit in IMAGE_FITS, f"config.data.image_fit={d.image_fit!r}; choose one of {IMAGE_FITS}")
  _check(d.too_long in ("skip", "error"), f"config.data.too_long={d.too_long!r}; choose skip or error")
  _check(isinstance(d.max_tiles, int) and d.max_tiles >= 1,
         f"config.data.max_tiles={d.max_tiles!r} must be an int >= 1 (1 = no dynamic resolution)")
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

def _section(declared, values: dict) -> ml_collections.ConfigDict:
  """A ConfigDict of `values` in declaration order. A key declared `X | None` holds a FieldReference
  typed X, so that `--config.a.b=v` can set it on the locked config although its default is None."""
  out = {}
  for f in keys.fields(declared):
    if f.name not in values:
      continue
    value = values[f.name]
    if keys.is_section(f.type):
      value = _section(f.type, value)
    elif keys.optional_type(f.type) is not None:
      value = ml_collections.FieldReference(value, field_type=keys.optional_type(f.type))
    out[f.name] = value
  return ml_collections.ConfigDict(out)


def base_config(*, model: dict, unfold: dict, seq_len: int, fold) -> ml_collections.ConfigDict:
  """A full experiment config with every declared default (core/keys.py); `configs/*.py` call this
  with the keys that have no default (the model's shape, the sequence length) and adjust the rest.

  The names under `train`, `model.fold`, `stage`, `mesh` and `data.name` are used by other tools
  (launch scripts, sweeps) and must keep their spelling.
  """
  values = keys.defaults(keys.ExperimentKeys)
  values["model"].update(model, fold=parse_fold(fold), unfold=unfold)
  values["data"].update(seq_len=seq_len)
  config = _section(keys.ExperimentKeys, values)
  # The cosine decays over the run unless a config says otherwise.
  config.optim.decay_steps = config.train.get_ref("steps")
  return config
