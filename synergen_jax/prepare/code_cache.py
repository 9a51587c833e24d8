"""Image codes cached across prepares: each tile is encoded once per image tokenizer.

Encoding images is the most expensive pass of prepare, and a training recipe prepares the same
images again at each stage (S2 and SFT with more dynamic-resolution tiles than S1). With
`config.data.code_cache=DIR`, prepare looks every tile up before encoding it and stores what it
encoded: a later stage encodes only the tiles it has not seen (new tiles of a finer layout), and a
rerun of the same stage encodes nothing.

A tile is keyed by the SHA-256 of its pixels (the image and the tile layout, resize and padding
included, decide them) under the image tokenizer's fingerprint, which hashes its parameters:

  DIR/<tokenizer fingerprint>/<split>-<input shard>/<writer>.npz   digests [N, 32] uint8,
                                                                   codes [N, h, w] int32

An input shard's entries are read when prepare starts that shard (memory: one shard's codes), and the
codes a part encoded are written as one new file when the part is finished: files are written whole
and never changed, so the cache may live in a bucket (gs://) and several processes may fill it at
once (each writes its own shards' files). A part killed before it finishes adds nothing.
"""

from __future__ import annotations

import hashlib
import os
import uuid

import numpy as np

from synergen_jax.core import storage
from synergen_jax.data.inputs import InputShard
from synergen_jax.prepare import parts as parts_lib


def digest(pixels: np.ndarray) -> bytes:
  """The cache key of one tile: its shape and pixel bytes."""
  h = hashlib.sha256(repr((pixels.shape, str(pixels.dtype))).encode())
  h.update(np.ascontiguousarray(pixels).tobytes())
  return h.digest()


class ShardCodes:
  """The cached codes of one input shard: `encode(vq, tiles)` looks each tile up, encodes the rest
  in one call, and remembers them until `save`."""

  def __init__(self, root: str | None, fingerprint: str, shard: InputShard):
    self.folder = (os.path.join(root, fingerprint.replace(":", "_"), f"{shard.split}-{shard.name}")
                   if root else None)
    self.known: dict[bytes, np.ndarray] = {}
    self.new: dict[bytes, np.ndarray] = {}
    self.reused = self.encoded = 0
    if self.folder is None:
      return
    folder = storage.path(self.folder, "config.data.code_cache")
    if folder.exists():
      for f in sorted(folder.glob("*.npz")):
        with f.open("rb") as fh, np.load(fh) as z:
          self.known.update(zip(map(bytes, z["digests"]), z["codes"]))

  def encode(self, vq, tiles: list[np.ndarray]) -> np.ndarray:
    """Codes [N, h, w] of `tiles` (uint8 [S, S, C] each), encoding only the unseen ones."""
    if self.folder is None:
      self.encoded += len(tiles)
      return vq.encode(np.stack(tiles))
    keys = [digest(t) for t in tiles]
    missing = {}                          # a tile repeated within the chunk is encoded once
    for k, t in zip(keys, tiles):
      if k not in self.known and k not in self.new and k not in missing:
        missing[k] = t
    if missing:
      fresh = vq.encode(np.stack(list(missing.values())))
      self.new.update(zip(missing, fresh))
    self.encoded += len(missing)
    self.reused += len(tiles) - len(missing)
    return np.stack([self.known[k] if k in self.known else self.new[k] for k in keys])

  def save(self) -> None:
    """Writes the codes encoded since the shard was opened, as one new file."""
    if self.folder is None or not self.new:
      return
    arrays = dict(digests=np.frombuffer(b"".join(self.new), np.uint8).reshape(len(self.new), 32),
                  codes=np.stack(list(self.new.values())).astype(np.int32))
    storage.path(self.folder).mkdir(parents=True, exist_ok=True)
    parts_lib.write_npz(os.path.join(self.folder, f"{uuid.uuid4().hex}.npz"), arrays)
    self.known.update(self.new)
    self.new = {}
