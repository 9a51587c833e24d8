"""An image tokenizer loaded from its workdir: uint8 pixels <-> code grids, batched, jitted, sharded.

One interface for every family (`FAMILIES`):

  synergen  our small VQ (vq/autoencoder.py), trained by `python -m synergen_jax.train_vq`
  vqgan     diffusers' VQModel: taming VQGAN (norm_type "group") or MoVQ ("spatial"), vq/vqgan.py
  emu3      transformers' Emu3VQVAE, the tokenizer of Emu3 and SynerGen-VL, vq/emu3.py

The workdir holds `vq_config.json` (the family, its config and pixel normalisation) and an Orbax
checkpoint of the parameters; `convert/vq_import.py` writes one from a released folder. Pixels are
normalised as the release's image processor does: `x = (uint8 / 255 - mean) / std` (mean = std = 0.5
gives [-1, 1]), and decoded pixels go back the same way, clipped and rounded.

Encoding and decoding run on every local device: a batch of `batch_size` images (rounded up to a
multiple of the device count) is split over a one-axis mesh, the parameters are replicated, and the
last batch is padded so one compiled program serves any number of images in bounded memory. The
fingerprint hashes the parameters, so a prepared shard records exactly which tokenizer made its codes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from synergen_jax.core import storage
from synergen_jax.core.errors import DataError
from synergen_jax.vq import autoencoder, emu3, vqgan


@dataclasses.dataclass(frozen=True)
class Family:
  config_from_json: object     # vq_config.json dict -> the family's config dataclass
  module: type                 # flax module of that config with encode / decode methods
  with_usage: bool = False     # our family's checkpoints also hold codebook usage counts


def _hf_config(cls):
  return lambda meta: dataclasses.replace(cls.from_hf(meta["hf_config"], "vq_config.json"),
                                          **meta.get("overrides", {}))


FAMILIES = {
    "synergen": Family(lambda meta: autoencoder.VQConfig(**meta["vq"]), autoencoder.VQModel, True),
    "vqgan": Family(_hf_config(vqgan.VQGANConfig), vqgan.VQGAN),
    "emu3": Family(_hf_config(emu3.Emu3Config), emu3.Emu3VQ),
}
HALF = (0.5, 0.5, 0.5)


class ImageTokenizer:

  def __init__(self, family: str, config, params, *, image_size: int, mean=HALF, std=HALF,
               batch_size: int = 256, devices=None):
    self.family, self.config, self.params = family, config, params
    self.image_size, self.channels = image_size, config.channels
    self.grid, self.codebook_size = image_size // config.downsample, config.codebook_size
    devices = list(devices or jax.local_devices())
    self.batch_size = -(-batch_size // len(devices)) * len(devices)
    mesh = jax.sharding.Mesh(np.asarray(devices), ("batch",))
    rows = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("batch"))
    self.params = jax.device_put(params, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))
    model = FAMILIES[family].module(config)
    c = self.channels
    mean, std = np.asarray(mean[:c], np.float32), np.asarray(std[:c], np.float32)

    def encode(p, pixels):
      x = (pixels.astype(jnp.float32) / 255.0 - mean) / std
      return model.apply(p, x, method=model.encode).astype(jnp.int32)

    def decode(p, codes):
      x = model.apply(p, codes, method=model.decode) * std + mean
      return jnp.clip(jnp.round(x * 255.0), 0, 255).astype(jnp.uint8)

    if family == "synergen":   # its own, bit-for-bit unchanged, range mapping
      encode = lambda p, x: model.apply(p, autoencoder.to_model_range(x), method=model.encode)
      decode = lambda p, c: autoencoder.to_uint8(model.apply(p, c, method=model.decode))
    self._rows = rows
    self._encode = jax.jit(encode, in_shardings=(None, rows), out_shardings=rows)
    self._decode = jax.jit(decode, in_shardings=(None, rows), out_shardings=rows)
    digest = hashlib.sha256()
    for leaf in jax.tree.leaves(params):
      digest.update(np.asarray(leaf).tobytes())
    self.fingerprint = "sha256:" + digest.hexdigest()[:16]

  @classmethod
  def load(cls, workdir: str, batch_size: int = 256, devices=None) -> "ImageTokenizer":
    """Rebuilds the model from `vq_config.json` and restores the latest Orbax checkpoint."""
    name, config, image_size, meta = _read_config(workdir)
    family = FAMILIES[name]
    manager = ocp.CheckpointManager(storage.absolute(workdir) / "checkpoints")
    step = manager.latest_step()
    if step is None:
      raise DataError(f"image tokenizer in {workdir} has no complete checkpoint")
    shapes = abstract_params(name, config)
    target = dict(params=shapes)
    if family.with_usage:
      target["usage"] = jax.ShapeDtypeStruct((config.codebook_size,), jnp.float32)
    restored = manager.restore(step, args=ocp.args.StandardRestore(target))
    manager.close()
    pixels = meta.get("pixels", {})
    return cls(name, config, restored["params"], image_size=image_size,
               mean=pixels.get("mean", HALF), std=pixels.get("std", HALF), batch_size=batch_size,
               devices=devices)

  def _batched(self, fn, inputs: np.ndarray) -> np.ndarray:
    # A fixed batch shape (the last batch padded) compiles once for any number of images.
    out, n = [], len(inputs)
    for start in range(0, n, self.batch_size):
      chunk = inputs[start:start + self.batch_size]
      pad = self.batch_size - len(chunk)
      if pad:
        chunk = np.concatenate([chunk, np.zeros((pad,) + chunk.shape[1:], chunk.dtype)])
      out.append(np.asarray(fn(self.params, jax.device_put(chunk, self._rows)))[:len(chunk) - pad])
    return np.concatenate(out) if out else np.zeros((0,), np.int32)

  def encode(self, pixels: np.ndarray) -> np.ndarray:
    """uint8 [N, S, S, C] -> int32 codes [N, h, w]."""
    expected = (self.image_size, self.image_size, self.channels)
    if pixels.dtype != np.uint8 or pixels.shape[1:] != expected:
      raise DataError(f"ImageTokenizer.encode: got {pixels.dtype} {pixels.shape[1:]}, expects uint8 "
                      f"{expected}")
    return self._batched(self._encode, pixels).astype(np.int32)

  def decode(self, codes: np.ndarray) -> np.ndarray:
    """int codes [N, h, w] -> uint8 [N, S, S, C]."""
    codes = np.asarray(codes, np.int32)
    if codes.size and (codes.min() < 0 or codes.max() >= self.codebook_size):
      raise DataError(f"ImageTokenizer.decode: codes outside [0, {self.codebook_size})")
    if codes.shape[1:] != (self.grid, self.grid):
      raise DataError(f"ImageTokenizer.decode: got code grids {codes.shape[1:]}, expects "
                      f"{(self.grid, self.grid)}")
    return self._batched(self._decode, codes)


def _read_config(workdir: str):
  """(family name, family config, image size, vq_config.json dict) of an image tokenizer workdir."""
  config_file = storage.path(workdir, "image tokenizer workdir") / "vq_config.json"
  if not config_file.exists():
    raise DataError(f"no image tokenizer in {workdir} (missing vq_config.json); train one with "
                    "python -m synergen_jax.train_vq --config ... --workdir " + workdir + " or "
                    "import a release with python -m synergen_jax.convert.vq_import --hf_dir ...")
  meta = json.loads(config_file.read_text())
  name = meta.get("family", "synergen")
  if name not in FAMILIES:
    raise DataError(f"{config_file}: family {name!r} is unknown; known: {sorted(FAMILIES)}")
  config = FAMILIES[name].config_from_json(meta)
  return name, config, meta.get("image_size", config.image_size), meta


def describe(workdir: str) -> dict:
  """What a model needs to know of an image tokenizer, read from its vq_config.json alone (no
  weights): {"image_size", "grid", "codebook_size", "channels", "family"}."""
  name, config, image_size, _ = _read_config(workdir)
  return dict(family=name, image_size=int(image_size), grid=int(image_size // config.downsample),
              codebook_size=int(config.codebook_size), channels=int(config.channels))


def abstract_params(family: str, config):
  """Parameter shapes of a family's model (the smallest input that runs it: shapes do not depend
  on the image size)."""
  model = FAMILIES[family].module(config)
  s = config.downsample if family != "synergen" else config.image_size
  return jax.eval_shape(model.init, jax.random.key(0),
                        jax.ShapeDtypeStruct((1, s, s, config.channels), jnp.float32))
