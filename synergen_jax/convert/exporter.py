"""A workdir's text model -> HF tensors, config.json and safetensors shards.

The CLI and what it writes: synergen_jax/convert/hf_export.py. The workdir and the output folder
may be bucket paths (gs://...): shards are written one tensor at a time (convert/safetensors_out.py),
to a local temporary file and uploaded whole for a bucket, so the local disk holds at most one shard.
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from synergen_jax.core import storage
from synergen_jax.core.config import validate_config
from synergen_jax.core.errors import ConfigError
from synergen_jax.convert import safetensors_out
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


def _write_shards(tensors, out, dtype, max_shard_bytes: int) -> list[str]:
  """Safetensors shards of at most max_shard_bytes, one tensor in memory at a time
  (convert/safetensors_out.py); HF's file names and index."""
  return safetensors_out.write_shards(tensors, out, np.dtype(dtype), max_shard_bytes)


def export_checkpoint(workdir: str, out: str, *, family: str | None = None, dtype: str = "float32",
                      max_shard_bytes: int = 5000 << 20) -> dict:
  target = storage.path(out, "--out")
  storage.check_reachable(target, "--out")     # before the parameters are read
  config = read_config(workdir)
  mc = validate_config(config)
  record_path = storage.path(workdir, "--workdir") / IMPORT_RECORD
  record = json.loads(record_path.read_text()) if record_path.exists() else {}
  family = family or record.get("family") or ("qwen2" if mc.llm.qkv_bias else "llama")
  if family not in FAMILIES:
    raise ConfigError(f"--family={family!r}; choose one of {FAMILIES}")
  if mc.llm.qkv_bias and family != "qwen2":
    raise ConfigError("the model has q/k/v biases, which only the qwen2 family holds; use --family=qwen2")
  if dtype not in ("float32", "bfloat16", "float16"):
    raise ConfigError(f"--dtype={dtype!r}; choose float32, bfloat16 or float16")
  if target.exists() and any(True for _ in target.iterdir()):
    raise ConfigError(f"--out={out} is not empty; export into a new directory")
  target.mkdir(parents=True, exist_ok=True)     # on a bucket: nothing to make
  # Host (CPU) parameters: an export never needs accelerator memory.
  params, step = restore_on_device(workdir, mc, device=jax.devices("cpu")[0])
  files = _write_shards(hf_tensors(mc, params, family), target, jnp.dtype(dtype), max_shard_bytes)
  base = record.get("hf_config") if record.get("family") == family else None
  c = hf_config(LLMShape.of(mc), family, base)
  c["torch_dtype"] = dtype
  storage.write_text(target / "config.json", json.dumps(c, indent=1))
  copied = []
  hf_files = storage.path(workdir) / HF_FILES
  for src in sorted(hf_files.iterdir(), key=os.fspath) if hf_files.is_dir() else []:
    if src.name != "config.json":      # tokenizer and remote-code files: small, read whole
      storage.write_bytes(target / src.name, src.read_bytes())
      copied.append(src.name)
  return dict(family=family, step=step, files=files, copied=copied)
