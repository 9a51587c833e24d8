"""A trained image tokenizer, loaded from its workdir: uint8 pixels <-> code grids, batched and jitted.

`prepare` encodes with it, `sample` decodes with it. The fingerprint hashes the parameters, so a
prepared shard records exactly which tokenizer made its codes.
"""

from __future__ import annotations

import hashlib
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from synergen_jax.data.errors import DataError
from synergen_jax.model import vq


class ImageTokenizer:

  def __init__(self, config: vq.VQConfig, params, batch_size: int = 256):
    self.config = config
    self.params = params
    self.batch_size = batch_size
    model = vq.VQModel(config)
    self._encode = jax.jit(lambda p, x: model.apply(p, vq.to_model_range(x), method=model.encode))
    self._decode = jax.jit(lambda p, c: vq.to_uint8(model.apply(p, c, method=model.decode)))
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(params):
      digest.update(np.asarray(leaf).tobytes())
    self.fingerprint = "sha256:" + digest.hexdigest()[:16]

  @classmethod
  def load(cls, workdir: str, batch_size: int = 256) -> "ImageTokenizer":
    """Rebuilds the model from `vq_config.json` and restores the latest Orbax checkpoint."""
    config_file = os.path.join(workdir, "vq_config.json")
    if not os.path.exists(config_file):
      raise DataError(f"no image tokenizer in {workdir} (missing vq_config.json); train one with "
                      "python -m synergen_jax.train_vq --config ... --workdir " + workdir)
    with open(config_file) as f:
      config = vq.VQConfig(**json.load(f)["vq"])
    manager = ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), "checkpoints"))
    step = manager.latest_step()
    if step is None:
      raise DataError(f"image tokenizer in {workdir} has no complete checkpoint")
    model = vq.VQModel(config)
    shapes = jax.eval_shape(model.init, jax.random.key(0),
                            jnp.zeros((1, config.image_size, config.image_size, config.channels)))
    target = dict(params=shapes, usage=jax.ShapeDtypeStruct((config.codebook_size,), jnp.float32))
    restored = manager.restore(step, args=ocp.args.StandardRestore(target))
    manager.close()
    return cls(config, restored["params"], batch_size)

  def _batched(self, fn, inputs: np.ndarray) -> np.ndarray:
    # A fixed batch shape (the last batch padded) compiles once for any number of images.
    out, n = [], len(inputs)
    for start in range(0, n, self.batch_size):
      chunk = inputs[start:start + self.batch_size]
      pad = self.batch_size - len(chunk)
      if pad:
        chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)])
      out.append(np.asarray(fn(self.params, jnp.asarray(chunk)))[:len(chunk) - pad])
    return np.concatenate(out) if out else np.zeros((0,), np.int32)

  def encode(self, pixels: np.ndarray) -> np.ndarray:
    """uint8 [N, S, S, C] -> int32 codes [N, h, w]."""
    c = self.config
    expected = (c.image_size, c.image_size, c.channels)
    if pixels.dtype != np.uint8 or pixels.shape[1:] != expected:
      raise DataError(f"ImageTokenizer.encode: got {pixels.dtype} {pixels.shape[1:]}, expects uint8 "
                      f"{expected}")
    return self._batched(self._encode, pixels).astype(np.int32)

  def decode(self, codes: np.ndarray) -> np.ndarray:
    """int codes [N, h, w] -> uint8 [N, S, S, C]."""
    codes = np.asarray(codes, np.int32)
    if codes.size and (codes.min() < 0 or codes.max() >= self.config.codebook_size):
      raise DataError(f"ImageTokenizer.decode: codes outside [0, {self.config.codebook_size})")
    return self._batched(self._decode, codes)
