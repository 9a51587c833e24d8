"""HF LLM checkpoint -> parameters of a SynerGen-VL model, and the workdir that holds them.

The vocabulary: where the HF folder has a tokenizer (SentencePiece tokenizer.model, or an HF
tokenizer.json for BPE releases such as Qwen2 and Llama 3), it is read exactly as
prepare will read it (`TextTokenizer.load(folder, config.data.reserved_tokens)`: the release's own
tokens, then its unused ones, then appended ids; data/tokenizers.py), and the embedding and LM head
get exactly the rows that tokenizer needs: `config.model.text_vocab` = max(config.json's vocab_size,
the tokenizer's ids), appended rows set to the mean pretrained row. hf_import.json records the
tokenizer's ids and fingerprint, which the prepared data of a run that starts from the import must
share. Without either file `extra_tokens` rows are appended as asked.

The CLI and what it writes: synergen_jax/convert/hf_import.py. The workdir may be a bucket path
(gs://...): Orbax writes the parameters there itself (tensorstore), the small files go whole through
core/storage.py. The HF folder is read locally (its safetensors are memory-mapped).
"""

from __future__ import annotations

import json
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from synergen_jax.core import batch as batch_lib
from synergen_jax.core import state_dict
from synergen_jax.core import storage
from synergen_jax.core.config import validate_config
from synergen_jax.core.errors import CheckpointError, ConfigError
from synergen_jax.convert.hf_checkpoint import HFCheckpoint
from synergen_jax.convert.hf_families import detect_family, global_names, llm_shape, read_layer
from synergen_jax.data.tokenizers import TextTokenizer, saved_tokenizer
from synergen_jax.model.synergen_vl import SynerGenVL
from synergen_jax.train.checkpoint import HF_FILES, IMPORT_RECORD

# Tensors HF checkpoints may carry that hold no weights (recomputed from the config).
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


def release_tokenizer(hf_dir: str, config) -> TextTokenizer | None:
  """The text tokenizer a run from this import trains with, read as prepare reads
  `--config.data.tokenizer=<import>/hf_files` (the same files, config.data.reserved_tokens): a
  SentencePiece tokenizer.model or an HF tokenizer.json (BPE); None when the folder has neither."""
  if saved_tokenizer(hf_dir) is None:
    return None
  return TextTokenizer.load(hf_dir, config.data.reserved_tokens)


def vocab_rows(rows: int, tokenizer: TextTokenizer | None, extra_tokens: int, where: str) -> int:
  """Embedding / LM-head rows of the import: the checkpoint's `rows`, grown to the tokenizer's ids
  (a checkpoint may already have more rows than its tokenizer: padding rows hold appended ids)."""
  if extra_tokens < 0:
    raise ConfigError(f"--extra_tokens={extra_tokens} must be >= 0")
  if tokenizer is None:
    return rows + extra_tokens
  if extra_tokens:
    raise ConfigError(f"--extra_tokens={extra_tokens}: {where} has a tokenizer ({tokenizer.backend}), "
                      f"which sizes the vocabulary itself ({tokenizer.vocab_size} ids with "
                      f"config.data.reserved_tokens); --extra_tokens is for folders without one")
  if tokenizer.release_size > rows:
    raise CheckpointError(f"{where}: its tokenizer has {tokenizer.release_size} ids but config.json's "
                          f"vocab_size is {rows}: the tokenizer does not belong to these weights")
  return max(rows, tokenizer.vocab_size)


def import_config(config, ckpt: HFCheckpoint, extra_tokens: int = 0,
                  tokenizer: TextTokenizer | None = None):
  """The experiment config with its LLM fields taken from the checkpoint's config.json and its
  vocabulary sized for `tokenizer` (see vocab_rows)."""
  where = os.path.join(ckpt.dir, "config.json")
  family = detect_family(ckpt.config, where)
  shape = llm_shape(ckpt.config, family, where)
  text_vocab = vocab_rows(shape.text_vocab, tokenizer, extra_tokens, ckpt.dir)
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.model.update(shape.fields)
    config.model.text_vocab = text_vocab
    # The new-token rows (<boi> <eoi> <UNCOND>) are created by the first training run, which knows the
    # tokenizer's ids; until then the model is exactly the HF one (scores match it).
    config.model.new_tokens = ()
    config.train.init_from = None
    # An import has no prepared data: a data.path (or mixture) in its config.json would send the
    # loader looking for one (the recipe's training config names the data, and the import's tokenizer).
    config.data.path = None
    if "mixture" in config.data:
      config.data.mixture = ()
  return config, family, shape


def _fresh_parts(model, mc, seed: int, keep) -> dict[str, np.ndarray]:
  """The usual random init of the parameters `keep(path)` selects, on the CPU. Under jit, XLA drops
  the initialisers of every other parameter, so the LLM is never initialised only to be overwritten."""
  def init():
    params = nn.unbox(model.init(jax.random.key(seed), batch_lib.zeros(1, 8, mc.fold_ratio, jnp)))["params"]
    return {p: x for p, x in state_dict.flatten(params).items() if keep(p)}
  with jax.default_device(jax.devices("cpu")[0]):
    return {k: np.asarray(v) for k, v in jax.jit(init)().items()}


def _is_llm_text(path: str) -> bool:
  return (path.startswith(("text_embed/", "lm_head/", "decoder/"))
          and "/ffn/vision_" not in path)


def build_params(ckpt: HFCheckpoint, family: str, shape, mc, seed: int = 0) -> dict:
  """The full {"params": ...} tree as host numpy arrays in mc.llm.param_dtype."""
  model = SynerGenVL(mc)
  dtype = np.dtype(jnp.dtype(mc.llm.param_dtype))
  abstract = jax.eval_shape(lambda: nn.unbox(model.init(jax.random.key(seed), batch_lib.zeros(1, 8, mc.fold_ratio, jnp))))
  wanted = state_dict.flatten(abstract["params"])
  copy_vision = mc.init_vision_from_text
  fresh = _fresh_parts(model, mc, seed, lambda p: not _is_llm_text(p)
                       and not (copy_vision and "/ffn/vision_" in p))
  leaves: dict[str, np.ndarray] = {k: v.astype(dtype) for k, v in fresh.items()}
  used: set[str] = set()

  def put(path: str, value: np.ndarray, layer: int | None = None):
    target = wanted[path]
    if layer is None:
      leaves[path] = value.astype(dtype)
    else:   # scanned layers: one preallocated [L, ...] array filled layer by layer (no np.stack copy)
      if path not in leaves:
        leaves[path] = np.empty(target.shape, dtype)
      leaves[path][layer] = value
    assert leaves[path].shape == target.shape, (path, leaves[path].shape, target.shape)

  names = global_names(family)
  v0 = shape.text_vocab
  embed = ckpt.get(names["embed"], (v0, shape.d_model))
  used.add(names["embed"])
  put("text_embed/embedding", _extend_rows(embed, mc.text_vocab))
  del embed
  if not mc.tie_embeddings:
    head = ckpt.get(names["head"], (v0, shape.d_model))
    used.add(names["head"])
    put("lm_head/kernel", _extend_rows(head, mc.text_vocab).T)
    del head
  put("decoder/final_norm/scale", ckpt.get(names["norm"], (shape.d_model,)))
  used.add(names["norm"])
  for i in range(shape.num_layers):
    layer = read_layer(ckpt, family, i, shape)
    used.update(_layer_sources(ckpt, i))
    for rel, value in layer.items():
      targets = [rel] + ([rel.replace("/text_", "/vision_")] if copy_vision and "/text_" in rel else [])
      for t in targets:
        if mc.llm.scan_layers:
          put(f"decoder/layers/{t}", value, layer=i)
        else:
          put(f"decoder/layer_{i}/{t}", value)
    del layer
  unused = [n for n in ckpt.names() if n not in used and not n.endswith(IGNORED_SUFFIXES)]
  if unused:
    raise CheckpointError(f"{ckpt.dir}: {len(unused)} tensors are not explained by its config.json "
                          f"(e.g. {unused[:3]}); the weights and the config do not match")
  missing = sorted(set(wanted) - set(leaves))
  if missing:
    raise CheckpointError(f"no source for parameters {missing[:5]}")
  return {"params": state_dict.nest(leaves)}


def _layer_sources(ckpt, i: int) -> set[str]:
  prefix = f"model.layers.{i}."
  return {n for n in ckpt.names() if n.startswith(prefix)}


def _extend_rows(table: np.ndarray, rows: int) -> np.ndarray:
  """Appends rows (new vocabulary entries) set to the mean pretrained row."""
  extra = rows - table.shape[0]
  if extra == 0:
    return table
  return np.concatenate([table, np.repeat(table.mean(0, keepdims=True), extra, 0)])


def save_params(workdir: str, params: dict) -> None:
  """An Orbax checkpoint at step 0 in the layout train/checkpoint.py reads (parameters only).

  The save is synchronous, so Orbax need not deep-copy the host arrays (its default, made for async
  saves while training goes on): that copy would double the peak memory of an import.
  """
  registry = ocp.type_handlers.create_type_handler_registry(
      (np.ndarray, ocp.type_handlers.NumpyHandler(deepcopy_host_arrays=False)),
      (jax.Array, ocp.type_handlers.ArrayHandler()))
  # save_concurrent_gb bounds the bytes being encoded at once; OCDBT is off because its writer held
  # another ~half of the model in memory (measured by bench/hf_import_memory.py). Restores read
  # either format.
  handlers = dict(state=ocp.PyTreeCheckpointHandler(type_handler_registry=registry, save_concurrent_gb=1,
                                                    use_ocdbt=False),
                  data=ocp.JsonCheckpointHandler())
  path = storage.absolute(workdir, "--workdir") / "checkpoints"   # Orbax wants absolute paths
  with ocp.CheckpointManager(path, item_names=("state", "data"), item_handlers=handlers) as mngr:
    mngr.save(0, args=ocp.args.Composite(state=ocp.args.PyTreeSave({"params": params}),
                                         data=ocp.args.JsonSave({})))
    mngr.wait_until_finished()


def import_checkpoint(hf_dir: str, workdir: str, config, *, extra_tokens: int = 0,
                      allow_pickle: bool = False, seed: int = 0) -> dict:
  """Converts hf_dir into workdir (a folder or a bucket path); returns the record written to
  hf_import.json, which is written last: its presence marks a complete import."""
  out = storage.path(workdir, "--workdir")
  storage.check_reachable(out, "--workdir")     # before any tensor is read
  if has_files(out / "checkpoints"):
    raise ConfigError(f"--workdir={workdir} already holds checkpoints; import into a new directory")
  ckpt = HFCheckpoint(hf_dir, allow_pickle=allow_pickle)
  tokenizer = release_tokenizer(hf_dir, config)
  config, family, shape = import_config(config, ckpt, extra_tokens, tokenizer)
  mc = validate_config(config)          # every config error before any tensor is read
  params = build_params(ckpt, family, shape, mc, seed)
  (out / HF_FILES).mkdir(parents=True, exist_ok=True)      # on a bucket: nothing to make
  save_params(workdir, params)
  storage.write_text(out / "config.json", config.to_json_best_effort(indent=1))
  copied = []
  for src in ckpt.tokenizer_files() + ckpt.code_files():
    storage.upload(src, out / HF_FILES / os.path.basename(src))
    copied.append(os.path.basename(src))
  record = dict(family=family, source=os.path.abspath(hf_dir), format=ckpt.format,
                hf_config=ckpt.config, text_vocab=mc.text_vocab,
                extra_tokens=mc.text_vocab - shape.text_vocab,   # rows appended, for whatever reason
                text_tokenizer=tokenizer.meta() if tokenizer else None, copied_files=copied,
                tensors=len(ckpt.names()),
                parameters=int(sum(x.size for x in jax.tree.leaves(params))))
  storage.write_text(out / IMPORT_RECORD, json.dumps(record, indent=1))
  return record


def has_files(folder) -> bool:
  """Whether an epath folder (local or on a bucket, where folders are only name prefixes) holds
  anything."""
  return folder.exists() and any(True for _ in folder.iterdir())
