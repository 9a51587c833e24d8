"""A released image tokenizer folder -> an image-tokenizer workdir that `ImageTokenizer.load` reads.

Reads a folder as `VQModel.save_pretrained` (diffusers: taming VQGAN, MoVQ) or
`Emu3VQVAE.save_pretrained` (transformers) write it, or as the original Emu3-VisionTokenizer release
lays it out: `config.json` plus safetensors weights, sharded (with a `*.safetensors.index.json`) or
not, and the image processor's `preprocessor_config.json` when there is one. The family comes from
config.json (`_class_name` "VQModel" -> vqgan; `model_type` / `architectures` naming Emu3's VQ ->
emu3). Everything is checked before anything is written: unsupported config values, unknown,
missing and misshaped tensors are refused with the file and the names.

The workdir may be a bucket path (gs://...): Orbax writes the parameters there itself, the small files
go whole through core/storage.py. The release folder is read locally (its safetensors are
memory-mapped).

Pixel normalisation is the image processor's: `image_mean` / `image_std` of preprocessor_config.json
(after its 1/255 rescale); without that file, 0.5 / 0.5 (the [-1, 1] range VQModel and Emu3 train in).
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import numpy as np
import orbax.checkpoint as ocp

from synergen_jax.core import storage
from synergen_jax.core.errors import CheckpointError, ConfigError
from synergen_jax.convert.hf_checkpoint import HFCheckpoint, read_json
from synergen_jax.vq import emu3, vqgan

EMU3_NAMES = ("Emu3VQVAE", "Emu3VisionVQ", "Emu3VisionVQModel")
PREPROCESSOR = "preprocessor_config.json"


def detect_family(hf_config: dict, where: str) -> str:
  if hf_config.get("_class_name") == "VQModel":
    return "vqgan"
  names = {hf_config.get("model_type"), *hf_config.get("architectures", [])}
  if names & set(EMU3_NAMES) or hf_config.get("model_type") == "emu3_vqgan":
    return "emu3"
  raise CheckpointError(f"{where}: not an image tokenizer this framework reads (_class_name="
                        f"{hf_config.get('_class_name')!r}, model_type={hf_config.get('model_type')!r}, "
                        f"architectures={hf_config.get('architectures')}); supported: diffusers "
                        f"VQModel, {', '.join(EMU3_NAMES)}")


def _size_override(family: str, config, image_size: int | None) -> dict:
  """The config field that holds the image size, set to --image_size (checked against the grid)."""
  if image_size is None:
    return {}
  if image_size <= 0 or image_size % config.downsample:
    raise ConfigError(f"--image_size={image_size} must be a positive multiple of the tokenizer's "
                      f"downsampling {config.downsample}")
  field = {"vqgan": "sample_size", "emu3": "image_size"}[family]
  return {field: image_size}


def pixel_normalisation(hf_dir: str, channels: int) -> dict:
  path = os.path.join(hf_dir, PREPROCESSOR)
  if not os.path.exists(path):
    return dict(mean=[0.5] * channels, std=[0.5] * channels, source="default [-1, 1]")
  p = read_json(path)
  rescale = p.get("rescale_factor", 1 / 255)
  if not np.isclose(rescale, 1 / 255) or not p.get("do_rescale", True):
    raise ConfigError(f"{path}: rescale_factor={rescale}, do_rescale={p.get('do_rescale')}; only the "
                      "1/255 rescale of uint8 pixels is supported")
  if not p.get("do_normalize", True):
    return dict(mean=[0.0] * channels, std=[1.0] * channels, source=path)
  mean, std = p.get("image_mean", 0.5), p.get("image_std", 0.5)
  as_list = lambda v: [float(v)] * channels if np.isscalar(v) else [float(x) for x in v]
  return dict(mean=as_list(mean), std=as_list(std), source=path)


def import_release(hf_dir: str, workdir: str, image_size: int | None = None) -> dict:
  """Converts the folder into `workdir` (a folder or a bucket path); returns what vq_config.json
  records."""
  out = storage.path(workdir, "--workdir")
  storage.check_reachable(out, "--workdir")     # before any tensor is read
  if (out / "checkpoints").exists():   # on a bucket: any object under that name
    raise CheckpointError(f"--workdir={workdir} already holds a tokenizer checkpoint; use a new one")
  ckpt = HFCheckpoint(hf_dir)
  where = os.path.join(hf_dir, "config.json")
  family = detect_family(ckpt.config, where)
  module = {"vqgan": vqgan, "emu3": emu3}[family]
  config_cls = {"vqgan": vqgan.VQGANConfig, "emu3": emu3.Emu3Config}[family]
  config = config_cls.from_hf(ckpt.config, where)
  overrides = _size_override(family, config, image_size)
  config = dataclasses.replace(config, **overrides)
  state = {name: ckpt.get(name) for name in ckpt.names()}
  params = module.params_from_state_dict(state, config, hf_dir)
  pixels = pixel_normalisation(hf_dir, config.channels)
  meta = dict(family=family, hf_config=ckpt.config, overrides=overrides, image_size=config.image_size,
              pixels=pixels, source=os.path.abspath(hf_dir), data_name=f"imported:{hf_dir}",
              image_fit="resize", background=0)
  out.mkdir(parents=True, exist_ok=True)        # on a bucket: nothing to make
  if os.path.exists(os.path.join(hf_dir, PREPROCESSOR)):
    storage.upload(os.path.join(hf_dir, PREPROCESSOR), out / PREPROCESSOR)
  with ocp.CheckpointManager(storage.absolute(out) / "checkpoints") as manager:
    manager.save(0, args=ocp.args.StandardSave(dict(params=params)))
    manager.wait_until_finished()
  # Last: its presence marks a complete import.
  storage.write_text(out / "vq_config.json", json.dumps(meta, indent=1))
  return dict(meta, tensors=len(state), parameters=int(sum(np.size(x) for x in jax.tree.leaves(params))))
