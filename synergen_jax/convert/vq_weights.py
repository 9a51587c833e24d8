"""VQGAN-style PyTorch / safetensors state dicts <-> the parameters of `vq/autoencoder.py`.

Naming map (VQGAN / taming-transformers spelling; torch conv weights are [out, in, kh, kw], ours
[kh, kw, in, out]; GroupNorm weight = our scale; n stages = log2(downsample), blocks j < num_res_blocks):

  ours                                        state dict
  encoder/Conv_0                              encoder.conv_in
  encoder/Conv_{1..n}        (4x4, stride 2)  encoder.down.{0..n-1}.downsample.conv
  encoder/ResBlock_j/GroupNorm_0|Conv_0       encoder.mid.block_j.norm1|conv1
  encoder/ResBlock_j/GroupNorm_1|Conv_1       encoder.mid.block_j.norm2|conv2
  encoder/ResBlock_j/Conv_2  (if widths differ) encoder.mid.block_j.nin_shortcut
  encoder/GroupNorm_0, encoder/Conv_{n+1}     encoder.norm_out, encoder.conv_out
  codebook [K, D]                             quantize.embedding.weight
  decoder/Conv_0, decoder/ResBlock_j/...      decoder.conv_in, decoder.mid.block_j....
  decoder/Conv_{1..n}  (after 2x nearest up)  decoder.up.{0..n-1}.upsample.conv
  decoder/GroupNorm_0, decoder/Conv_{n+1}     decoder.norm_out, decoder.conv_out

GroupNorm uses eps 1e-6 and min(32, gcd) groups; lookups are cosine (both normalised), so a codebook
trained with Euclidean lookups gives the same codes only if its rows have equal norms. A state dict
with parts this architecture lacks (quant_conv, attention blocks, MoVQ's spatially conditioned
norms) is refused with the unmatched keys listed, never partly loaded.

`write_tokenizer`'s workdir may be a bucket path (gs://...); the state dict file is read locally.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os

import jax
import numpy as np
import orbax.checkpoint as ocp

from synergen_jax.core import state_dict
from synergen_jax.core import storage
from synergen_jax.core.errors import CheckpointError
from synergen_jax.vq import autoencoder as vq


def _res_block(ours: str, theirs: str) -> dict[str, str]:
  return {f"{ours}/GroupNorm_0": f"{theirs}.norm1", f"{ours}/Conv_0": f"{theirs}.conv1",
          f"{ours}/GroupNorm_1": f"{theirs}.norm2", f"{ours}/Conv_1": f"{theirs}.conv2",
          f"{ours}/Conv_2": f"{theirs}.nin_shortcut"}


def module_map(config: vq.VQConfig) -> dict[str, str]:
  """Our module path -> the state dict's module name."""
  n = int(math.log2(config.downsample))
  m = {"encoder/Conv_0": "encoder.conv_in", "decoder/Conv_0": "decoder.conv_in",
       "encoder/GroupNorm_0": "encoder.norm_out", f"encoder/Conv_{n + 1}": "encoder.conv_out",
       "decoder/GroupNorm_0": "decoder.norm_out", f"decoder/Conv_{n + 1}": "decoder.conv_out"}
  for i in range(n):
    m[f"encoder/Conv_{i + 1}"] = f"encoder.down.{i}.downsample.conv"
    m[f"decoder/Conv_{i + 1}"] = f"decoder.up.{i}.upsample.conv"
  for j in range(config.num_res_blocks):
    m.update(_res_block(f"encoder/ResBlock_{j}", f"encoder.mid.block_{j}"))
    m.update(_res_block(f"decoder/ResBlock_{j}", f"decoder.mid.block_{j}"))
  return m


def _torch_name(path: str, modules: dict[str, str]) -> str:
  if path == "codebook":
    return "quantize.embedding.weight"
  module, leaf = path.rsplit("/", 1)
  return f"{modules[module]}.{dict(kernel='weight', scale='weight', bias='bias')[leaf]}"


def _to_torch(path: str, x: np.ndarray) -> np.ndarray:
  return np.transpose(x, (3, 2, 0, 1)) if path.endswith("kernel") else x   # HWIO -> OIHW


def _from_torch(path: str, x: np.ndarray) -> np.ndarray:
  return np.transpose(x, (2, 3, 1, 0)) if path.endswith("kernel") else x   # OIHW -> HWIO


def _torch_shape(path: str, shape: tuple[int, ...]) -> tuple[int, ...]:
  return tuple(shape[i] for i in (3, 2, 0, 1)) if path.endswith("kernel") else tuple(shape)


def abstract_params(config: vq.VQConfig):
  import jax.numpy as jnp
  shapes = jax.eval_shape(vq.VQModel(config).init, jax.random.key(0),
                          jnp.zeros((1, config.image_size, config.image_size, config.channels)))
  return shapes["params"]


def to_state_dict(params, config: vq.VQConfig) -> dict[str, np.ndarray]:
  """Our VQ parameters ({"params": ...} or the inner dict) -> a torch-layout state dict."""
  params = params.get("params", params)
  modules = module_map(config)
  return {_torch_name(p, modules): np.ascontiguousarray(_to_torch(p, np.asarray(x)))
          for p, x in state_dict.flatten(params).items()}


def from_state_dict(state: dict[str, np.ndarray], config: vq.VQConfig, where: str) -> dict:
  """A torch-layout state dict -> {"params": ...}; every key must be used and every shape match."""
  modules = module_map(config)
  wanted = state_dict.flatten(abstract_params(config))
  names = {p: _torch_name(p, modules) for p in wanted}
  state_dict.check(state, {names[p]: _torch_shape(p, s.shape) for p, s in wanted.items()},
                   f"{where}: the state dict does not match config.vq's architecture (width, "
                   "num_res_blocks, downsample, code_dim, channels, codebook_size)",
                   implied_by="config.vq", shown=6)
  return {"params": state_dict.nest({p: _from_torch(p, np.asarray(state[names[p]], np.float32))
                                     for p in wanted})}


def read_state_dict(path: str, allow_pickle: bool = False, prefix: str = "") -> dict[str, np.ndarray]:
  """A .safetensors file, or (with allow_pickle) a torch .pt/.pth/.bin/.ckpt; Lightning checkpoints'
  "state_dict" is unwrapped and `prefix` (e.g. "vqmodel.") stripped."""
  if storage.is_remote(path):     # safetensors and torch open a local file
    raise CheckpointError(f"--weights={path} is a bucket path; the weights are read from a local "
                          f"file: copy it first (gcloud storage cp {path} .) and pass the copy")
  if not os.path.exists(path):
    raise CheckpointError(f"--weights={path} does not exist")
  if path.endswith(".safetensors"):
    from safetensors import safe_open
    try:
      with jax.default_device(jax.devices("cpu")[0]), safe_open(path, framework="flax") as f:
        state = {k: np.asarray(f.get_tensor(k), np.float32) for k in f.keys()}
    except Exception as e:
      raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from None
  else:
    if not allow_pickle:
      raise CheckpointError(f"{path} is a pickle file; unpickling can run arbitrary code, so it is not "
                            "read by default: convert it to safetensors, or pass --allow_pickle")
    import torch
    try:
      state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
      raise CheckpointError(f"{path} is not a readable torch checkpoint: {e}") from None
    state = state.get("state_dict", state)
    state = {k: v.float().numpy() for k, v in state.items() if hasattr(v, "numpy")}
  if prefix:
    state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
  return state


def write_tokenizer(workdir: str, config: vq.VQConfig, params: dict, *, image_fit: str,
                    background: int, source: str) -> None:
  """An image-tokenizer workdir (a folder or a bucket path) that `ImageTokenizer.load` (and so
  prepare / sample) reads."""
  out = storage.path(workdir, "--workdir")
  storage.check_reachable(out, "--workdir")
  if (out / "checkpoints").exists():   # on a bucket: any object under that name
    raise CheckpointError(f"--workdir={workdir} already holds a tokenizer checkpoint; use a new one")
  out.mkdir(parents=True, exist_ok=True)        # on a bucket: nothing to make
  with ocp.CheckpointManager(storage.absolute(out) / "checkpoints") as manager:
    manager.save(0, args=ocp.args.StandardSave(dict(
        params=params, usage=np.ones(config.codebook_size, np.float32))))
    manager.wait_until_finished()
  # Last, as vq_release does: its presence marks a complete tokenizer workdir.
  storage.write_text(out / "vq_config.json", json.dumps(dict(
      vq=dataclasses.asdict(config), data_name=f"imported:{source}", image_fit=image_fit,
      background=background), indent=1))
