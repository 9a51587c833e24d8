"""A workdir's text model -> HF tensors, config.json and safetensors shards.

The CLI and what it writes: synergen_jax/convert/hf_export.py.
"""

from __future__ import annotations

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np

from synergen_jax.core.config import validate_config
from synergen_jax.core.errors import ConfigError
from synergen_jax.convert.hf_families import FAMILIES, LLMShape, global_names, hf_config, write_layer
from synergen_jax.train.checkpoint import HF_FILES, IMPORT_RECORD, read_config, restore_on_device

LAYER_LEAVES = ("attention/query_kernel", "attention/key_kernel", "attention/value_kernel",
                "attention/output_kernel", "attention/query_bias", "attention/key_bias",
                "attention/value_bias", "attention_norm/scale", "ffn_norm/scale", "ffn/text_gate",
                "ffn/text_up", "ffn/text_down")


def _get(tree: dict, path: str):
  for key in path.split("/"):
    tree = tree[key]
  return tree


def hf_tensors(mc, params: dict, family: str):
  """Yields (HF name, float32 numpy array) for the text model, one layer at a time."""
  p = params["params"]
  shape = LLMShape.of(mc)
  names = global_names(family)
  embed = np.array(p["text_embed"]["embedding"], np.float32)
  head = None if mc.tie_embeddings else np.array(p["lm_head"]["kernel"], np.float32).T
  for i, token in enumerate(mc.new_tokens):   # the new-token rows live in their own parameters
    embed[token] = np.asarray(p["new_token_embed"][i], np.float32)
    if head is not None:
      head[token] = np.asarray(p["new_token_head"][:, i], np.float32)
  yield names["embed"], embed
  if head is not None:
    yield names["head"], head
  yield names["norm"], np.asarray(p["decoder"]["final_norm"]["scale"], np.float32)
  decoder = p["decoder"]
  for i in range(shape.num_layers):
    leaves = {}
    for rel in LAYER_LEAVES:
      if rel.endswith("_bias") and not shape.qkv_bias:
        continue
      if mc.llm.scan_layers:
        leaves[rel] = np.asarray(_get(decoder["layers"], rel)[i], np.float32)
      else:
        leaves[rel] = np.asarray(_get(decoder[f"layer_{i}"], rel), np.float32)
    yield from write_layer(leaves, family, i, shape).items()


def _write_shards(tensors, out: str, dtype, max_shard_bytes: int) -> list[str]:
  """Groups tensors into shards of at most max_shard_bytes and writes each as it fills."""
  from safetensors.flax import save_file   # the `hf` extra
  shards, current, size = [], {}, 0

  def flush():
    nonlocal current, size
    if current:
      path = os.path.join(out, f"shard-{len(shards):05d}.safetensors")
      with jax.default_device(jax.devices("cpu")[0]):
        save_file({k: jnp.asarray(v, dtype) for k, v in current.items()}, path,
                  metadata={"format": "pt"})
      shards.append((path, list(current)))
      current, size = {}, 0

  itemsize = jnp.dtype(dtype).itemsize
  for name, value in tensors:
    if size and size + value.size * itemsize > max_shard_bytes:
      flush()
    current[name] = value
    size += value.size * itemsize
  flush()
  # HF's file names: model.safetensors, or model-0000i-of-0000n.safetensors with an index.
  weight_map, total = {}, 0
  final = []
  for i, (path, names) in enumerate(shards):
    name = ("model.safetensors" if len(shards) == 1
            else f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors")
    os.replace(path, os.path.join(out, name))
    final.append(name)
    weight_map.update({n: name for n in names})
    total += os.path.getsize(os.path.join(out, name))
  if len(shards) > 1:
    with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
      json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=1)
  return final


def export_checkpoint(workdir: str, out: str, *, family: str | None = None, dtype: str = "float32",
                      max_shard_bytes: int = 5000 << 20) -> dict:
  config = read_config(workdir)
  mc = validate_config(config)
  record_path = os.path.join(workdir, IMPORT_RECORD)
  record = json.load(open(record_path)) if os.path.exists(record_path) else {}
  family = family or record.get("family") or ("qwen2" if mc.llm.qkv_bias else "llama")
  if family not in FAMILIES:
    raise ConfigError(f"--family={family!r}; choose one of {FAMILIES}")
  if mc.llm.qkv_bias and family != "qwen2":
    raise ConfigError("the model has q/k/v biases, which only the qwen2 family holds; use --family=qwen2")
  if dtype not in ("float32", "bfloat16", "float16"):
    raise ConfigError(f"--dtype={dtype!r}; choose float32, bfloat16 or float16")
  if os.path.exists(out) and os.listdir(out):
    raise ConfigError(f"--out={out} is not empty; export into a new directory")
  os.makedirs(out, exist_ok=True)
  # Host (CPU) parameters: an export never needs accelerator memory.
  params, step = restore_on_device(workdir, mc, device=jax.devices("cpu")[0])
  files = _write_shards(hf_tensors(mc, params, family), out, jnp.dtype(dtype), max_shard_bytes)
  base = record.get("hf_config") if record.get("family") == family else None
  c = hf_config(LLMShape.of(mc), family, base)
  c["torch_dtype"] = dtype
  with open(os.path.join(out, "config.json"), "w") as f:
    json.dump(c, f, indent=1)
  copied = []
  hf_files = os.path.join(workdir, HF_FILES)
  for name in sorted(os.listdir(hf_files)) if os.path.isdir(hf_files) else []:
    if name != "config.json":
      shutil.copy2(os.path.join(hf_files, name), os.path.join(out, name))
      copied.append(name)
  return dict(family=family, step=step, files=files, copied=copied)
