"""Reading an HF checkpoint folder one tensor at a time: config.json + safetensors (sharded or not).

`HFCheckpoint(dir)` indexes which file holds each tensor (model.safetensors.index.json, or every
*.safetensors header) without reading any data; `get(name)` reads one tensor and returns it as a host
float32 numpy array; only the tensor asked for is ever in memory. Pickle `.bin` checkpoints run arbitrary code when unpickled: they are refused unless
`allow_pickle=True`, and then read with `torch.load(weights_only=True, mmap=True)`. The folder is
local (memory-mapped); a bucket path is refused with the copy command to run.
"""

from __future__ import annotations

import glob
import json
import os

import jax
import numpy as np

from synergen_jax.core import storage
from synergen_jax.core.errors import CheckpointError

TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json",
                   "special_tokens_map.json", "added_tokens.json", "vocab.json", "merges.txt",
                   "generation_config.json")


def read_json(path: str) -> dict:
  try:
    with open(path) as f:
      return json.load(f)
  except FileNotFoundError:
    raise CheckpointError(f"{path} does not exist: an HF checkpoint folder needs its config.json") from None
  except json.JSONDecodeError as e:
    raise CheckpointError(f"{path} is not valid JSON ({e})") from None


class HFCheckpoint:
  """Tensor name -> file index of an HF folder, and lazy float32 reads."""

  def __init__(self, hf_dir: str, allow_pickle: bool = False):
    if storage.is_remote(hf_dir):   # safetensors memory-maps local files; transformers reads them too
      raise CheckpointError(f"--hf_dir={hf_dir} is a bucket path; the checkpoint is read from a local "
                            f"folder: copy it first (gcloud storage cp -r {hf_dir} .) and pass the copy")
    if not os.path.isdir(hf_dir):
      raise CheckpointError(f"--hf_dir={hf_dir} is not a directory")
    self.dir = hf_dir
    self.config = read_json(os.path.join(hf_dir, "config.json"))
    safetensors_files = sorted(glob.glob(os.path.join(hf_dir, "*.safetensors")))
    pickle_files = sorted(glob.glob(os.path.join(hf_dir, "*.bin")))
    if safetensors_files:
      self.format = "safetensors"
      self.index = self._index_safetensors(safetensors_files)
    elif pickle_files:
      if not allow_pickle:
        raise CheckpointError(
            f"{hf_dir} holds only pickle weights ({os.path.basename(pickle_files[0])}, ...). Unpickling "
            "can run arbitrary code, so they are not read by default: convert them to safetensors, or "
            "pass --allow_pickle if you trust where they came from")
      self.format = "pickle"
      self.index = self._index_pickle(pickle_files)
    else:
      raise CheckpointError(f"{hf_dir} has no *.safetensors (or *.bin) weight files")
    self._open = {}

  # -- index ----------------------------------------------------------------------------------------

  def _index_safetensors(self, files: list[str]) -> dict[str, str]:
    from safetensors import safe_open   # the `hf` extra
    # model.safetensors.index.json (transformers), diffusion_pytorch_model.safetensors.index.json
    # (diffusers): the weight map of a sharded save.
    indexes = sorted(glob.glob(os.path.join(self.dir, "*.safetensors.index.json")))
    if len(indexes) > 1:
      raise CheckpointError(f"{self.dir} has several safetensors indexes {indexes}; keep one")
    index_file = indexes[0] if indexes else ""
    if index_file:
      weight_map = read_json(index_file).get("weight_map")
      if not isinstance(weight_map, dict):
        raise CheckpointError(f"{index_file} has no weight_map")
      index = {name: os.path.join(self.dir, f) for name, f in weight_map.items()}
      for f in sorted(set(index.values())):
        if not os.path.exists(f):
          raise CheckpointError(f"{index_file} lists {os.path.basename(f)}, which is missing from {self.dir}")
      return index
    index = {}
    for f in files:
      try:
        with safe_open(f, framework="flax") as handle:
          for name in handle.keys():
            index[name] = f
      except Exception as e:   # safetensors raises its own error types for a bad header
        raise CheckpointError(f"{f} is not a readable safetensors file: {e}") from None
    return index

  def _index_pickle(self, files: list[str]) -> dict[str, str]:
    import torch
    index, self._pickled = {}, {}
    for f in files:
      try:
        state = torch.load(f, map_location="cpu", weights_only=True, mmap=True)
      except Exception as e:
        raise CheckpointError(f"{f} is not a readable torch checkpoint: {e}") from None
      self._pickled[f] = state
      index.update({name: f for name in state})
    return index

  # -- reads ----------------------------------------------------------------------------------------

  def names(self) -> list[str]:
    return sorted(self.index)

  def has(self, name: str) -> bool:
    return name in self.index

  def shape(self, name: str) -> tuple[int, ...]:
    if self.format == "pickle":
      return tuple(self._pickled[self._file(name)][name].shape)
    return tuple(self._handle(self._file(name)).get_slice(name).get_shape())

  def get(self, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """One tensor as float32 on the host; `shape` (if given) must match exactly."""
    f = self._file(name)
    try:
      if self.format == "pickle":
        value = self._pickled[f][name].float().numpy()
      else:
        # framework="flax" reads bfloat16 (numpy cannot); pinned to the CPU so no accelerator memory
        # is touched and the array is a host buffer.
        # Opened per tensor: the file's mapped pages are released after each read, so they do not
        # pile up in resident memory across a multi-GB shard.
        from safetensors import safe_open
        with jax.default_device(jax.devices("cpu")[0]), safe_open(f, framework="flax") as handle:
          value = np.asarray(handle.get_tensor(name), np.float32)
    except Exception as e:
      raise CheckpointError(f"{f}: cannot read tensor {name!r} ({type(e).__name__}: {e}); the file "
                            "is corrupt or truncated") from None
    if shape is not None and tuple(value.shape) != tuple(shape):
      raise CheckpointError(f"{f}: tensor {name!r} has shape {tuple(value.shape)}, but config.json "
                            f"implies {tuple(shape)}; the weights do not match their config")
    return value

  def _file(self, name: str) -> str:
    if name not in self.index:
      raise CheckpointError(f"{self.dir}: tensor {name!r} is missing (config.json implies it; the "
                            "checkpoint is incomplete or of another architecture)")
    return self.index[name]

  def _handle(self, f: str):
    from safetensors import safe_open
    if f not in self._open:
      try:
        self._open[f] = safe_open(f, framework="flax")
      except Exception as e:
        raise CheckpointError(f"{f} is not a readable safetensors file: {e}") from None
    return self._open[f]

  def tokenizer_files(self) -> list[str]:
    return [os.path.join(self.dir, n) for n in TOKENIZER_FILES if os.path.exists(os.path.join(self.dir, n))]

  def code_files(self) -> list[str]:
    """Remote-code modelling files (InternLM2 ships its own): copied along so export can return them."""
    return sorted(glob.glob(os.path.join(self.dir, "*.py")))

