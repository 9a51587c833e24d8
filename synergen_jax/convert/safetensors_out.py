"""Safetensors shards written one tensor at a time: the export's memory is the model plus one tensor.

safetensors' own `save_file` takes a whole dict of tensors and builds the file in memory, so a
5 GB shard costs 5 GB more (and its dtype conversion as much again). The format is simple enough to
stream (https://github.com/huggingface/safetensors#format): an 8-byte little-endian header length,
a JSON header naming each tensor's dtype, shape and byte range, then the bytes. A shard's tensors are
appended to a data file as they come (each converted to the output dtype alone), and the shard is
finished by writing its header followed by a streamed copy of that data. A local `out` holds these
files itself (temporary names until `finish` renames them); for a bucket they are written to a local
temporary folder and each finished shard is uploaded whole, so the local disk holds at most one
shard and its data. safetensors reads the result (tests/convert).
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile

import ml_dtypes
import numpy as np

from synergen_jax.core import storage

DTYPES = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16",
          np.dtype(ml_dtypes.bfloat16): "BF16", np.dtype(np.int32): "I32", np.dtype(np.int64): "I64"}


class ShardWriter:
  """Tensors -> shards of at most `max_shard_bytes`, HF's names and index (`finish`)."""

  def __init__(self, out, dtype, max_shard_bytes: int):
    self.out, self.dtype, self.max_bytes = out, np.dtype(dtype), max_shard_bytes
    if self.dtype not in DTYPES:
      raise ValueError(f"dtype {self.dtype} cannot be written; choose one of {list(DTYPES)}")
    self._remote = storage.is_remote(out)
    self._tmp = tempfile.mkdtemp(prefix="synergen_export_") if self._remote else None
    self._work = self._tmp or os.fspath(out)
    self._shards: list[tuple[object, list[str], int]] = []   # (written shard, names, bytes)
    self._open()

  def _open(self) -> None:
    self._data_path = os.path.join(self._work, f"data-{len(self._shards)}.tmp")
    self._data = open(self._data_path, "wb")
    self._header: dict[str, dict] = {}
    self._offset = 0

  def add(self, name: str, value: np.ndarray) -> None:
    value = np.ascontiguousarray(np.asarray(value).astype(self.dtype, copy=False))
    if self._offset and self._offset + value.nbytes > self.max_bytes:
      self._close_shard()
      self._open()
    self._data.write(value.reshape(-1).view(np.uint8).data)   # bfloat16 has no buffer format
    self._header[name] = dict(dtype=DTYPES[self.dtype], shape=list(value.shape),
                              data_offsets=[self._offset, self._offset + value.nbytes])
    self._offset += value.nbytes

  def _close_shard(self) -> None:
    self._data.close()
    header = json.dumps({"__metadata__": {"format": "pt"}, **self._header},
                        separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)               # the data starts 8-byte aligned
    name = f"shard-{len(self._shards):05d}.safetensors.tmp"
    local = os.path.join(self._work, name)
    with open(local, "wb") as f, open(self._data_path, "rb") as data:
      f.write(struct.pack("<Q", len(header)))
      f.write(header)
      shutil.copyfileobj(data, f, 16 << 20)
    os.remove(self._data_path)
    written = self.out / name
    if self._remote:
      storage.upload(local, written)
      os.remove(local)
    self._shards.append((written, list(self._header), self._offset))

  def finish(self) -> list[str]:
    """Writes the shards under HF's names (model.safetensors, or model-0000i-of-0000n.safetensors
    with model.safetensors.index.json) into `out`; returns the file names."""
    if self._header or not self._shards:
      self._close_shard()
    count = len(self._shards)
    names, weight_map, total = [], {}, 0
    for i, (written, tensors, size) in enumerate(self._shards):
      name = "model.safetensors" if count == 1 else f"model-{i + 1:05d}-of-{count:05d}.safetensors"
      written.rename(self.out / name)        # on a bucket: a copy inside the bucket
      names.append(name)
      weight_map.update({t: name for t in tensors})
      total += size
    if self._tmp:
      shutil.rmtree(self._tmp, ignore_errors=True)
    if count > 1:
      storage.write_text(self.out / "model.safetensors.index.json", json.dumps(
          {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1))
    return names


def write_shards(tensors, out, dtype, max_shard_bytes: int) -> list[str]:
  """(name, array) pairs -> safetensors shards in `out` (a local folder or a bucket path)."""
  writer = ShardWriter(out, dtype, max_shard_bytes)
  for name, value in tensors:
    writer.add(name, value)
  return writer.finish()
