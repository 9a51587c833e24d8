"""The image tokenizer the previews decode pixels with, restored by one process for itself.

`ImageTokenizer.load` (vq/tokenizer.py) is a single-process affair: its Orbax checkpoint manager
meets every process of a job at barriers, and it restores the arrays onto the device they were saved
from, which in a job of several processes belongs to process 0 alone. The trainer renders previews on
process 0 only, so here process 0 restores the same checkpoint with Orbax's barriers limited to
itself, onto its own first device; the other processes never touch it.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from synergen_jax.core import storage
from synergen_jax.core.errors import ConfigError
from synergen_jax.vq.tokenizer import FAMILIES, HALF, ImageTokenizer, abstract_params


def check_exists(vq_dir: str, what: str) -> None:
  """On every process, before any of them trains: a ConfigError naming `what` (the key to set)."""
  if not (storage.path(vq_dir) / "vq_config.json").exists():
    raise ConfigError(f"previews need the image tokenizer the data was prepared with, and {vq_dir} "
                      f"holds none (no vq_config.json); {what}")


def load_here(vq_dir: str, batch_size: int) -> ImageTokenizer:
  """vq_dir's tokenizer on this process's first device, restored without meeting other processes."""
  meta = json.loads((storage.path(vq_dir) / "vq_config.json").read_text())
  name = meta.get("family", "synergen")
  family = FAMILIES[name]
  config = family.config_from_json(meta)
  me = jax.process_index()
  only_me = ocp.options.MultiprocessingOptions(primary_host=me, active_processes={me},
                                               barrier_sync_key_prefix=f"preview_vq_{me}")
  manager = ocp.CheckpointManager(
      storage.absolute(vq_dir) / "checkpoints",
      options=ocp.CheckpointManagerOptions(read_only=True, multiprocessing_options=only_me))
  step = manager.latest_step()
  if step is None:
    raise ConfigError(f"the image tokenizer in {vq_dir} has no complete checkpoint")
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  place = lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device)
  target = dict(params=jax.tree.map(place, abstract_params(name, config)))
  if family.with_usage:
    target["usage"] = place(jax.ShapeDtypeStruct((config.codebook_size,), jnp.float32))
  restored = manager.restore(step, args=ocp.args.StandardRestore(target))
  manager.close()
  pixels = meta.get("pixels", {})
  return ImageTokenizer(name, config, restored["params"], image_size=meta.get("image_size", config.image_size),
                        mean=pixels.get("mean", HALF), std=pixels.get("std", HALF),
                        batch_size=batch_size, devices=jax.local_devices()[:1])


def decode(tok: ImageTokenizer, codes: np.ndarray) -> np.ndarray:
  """Code grids -> uint8 pixels, outside the training mesh the loop has set (jit refuses arguments
  placed off the mesh in context); the program is local, so no other process waits for it."""
  with jax.set_mesh(None):
    return tok.decode(codes)
