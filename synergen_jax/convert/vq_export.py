"""A run's image tokenizer -> the `image_tokenizer/` folder of a full export, in the format PyTorch
reads it (convert/hf_remote/image_tokenizer_synergen_vl.py loads it):

  synergen  vq_config.json (family, the VQConfig as "vq", sizes, fingerprint) + model.safetensors:
            the flax parameters under their paths joined by "." (conv kernels [kh, kw, in, out]),
            read by the PyTorch port `SynerGenVQ`
  emu3      transformers' Emu3VQVAE format: config.json (the release's, with the image size the run
            used) + model.safetensors under transformers' names and layouts (vq/emu3.py's
            torch_name), so `Emu3VQVAE.from_pretrained(folder)` loads it
  vqgan     diffusers' VQModel format (taming VQGAN, MoVQ): config.json +
            diffusion_pytorch_model.safetensors under
            diffusers' names (vq/vqgan.py's torch_name), for `VQModel.from_pretrained(folder)`

emu3 and vqgan also get preprocessor_config.json (the pixel normalisation the run used) and the same
vq_config.json, which names the family for the loader.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile

import jax
import numpy as np

from synergen_jax.core import state_dict, storage
from synergen_jax.vq import emu3, vqgan

FOLDER = "image_tokenizer"
# The weights file each loader looks for (diffusers names its own).
WEIGHTS = dict(synergen="model.safetensors", emu3="model.safetensors",
               vqgan="diffusion_pytorch_model.safetensors")


def _conv_to_torch(x: np.ndarray) -> np.ndarray:
  """flax kernels -> torch weights: conv HWIO / DHWIO -> OIHW / OIDHW, dense [in, out] -> [out, in]."""
  if x.ndim >= 4:
    return np.transpose(x, (x.ndim - 1, x.ndim - 2) + tuple(range(x.ndim - 2)))
  return x.T


def tensors(tok) -> dict[str, np.ndarray]:
  """The tokenizer's weights under the names its PyTorch loader expects (float32, contiguous)."""
  host = jax.tree.map(lambda a: np.asarray(a, np.float32), dict(tok.params))
  if tok.family == "synergen":
    flat = state_dict.flatten(host.get("params", host))
    return {k.replace("/", "."): np.ascontiguousarray(v) for k, v in flat.items()}
  flat = state_dict.flatten(host)
  out = {}
  for path, x in flat.items():
    kind, rel = path.split("/", 1)            # "params" | "batch_stats"
    name = emu3.torch_name(rel) if tok.family == "emu3" else vqgan.torch_name(rel)
    if kind == "params" and rel.endswith("kernel"):
      x = _conv_to_torch(x)
    out[name] = np.ascontiguousarray(x)
  if tok.family == "emu3":                     # BatchNorm's counters, which from_pretrained expects
    for name in [n for n in out if n.endswith(".running_mean")]:
      out[name.rsplit(".", 1)[0] + ".num_batches_tracked"] = np.zeros((), np.int64)
  return out


def hf_model_config(meta: dict) -> dict:
  """The release's config.json with the run's overrides (the image size it tokenized at)."""
  return dict(meta["hf_config"], **meta.get("overrides", {}))


def write(tok, meta: dict, target) -> None:
  """Writes `target`/image_tokenizer/ for `tok` (an ImageTokenizer) whose workdir's vq_config.json
  is `meta`."""
  from safetensors.numpy import save_file
  folder = target / FOLDER
  folder.mkdir(parents=True, exist_ok=True)
  channels = tok.channels
  pixels = meta.get("pixels") or dict(mean=[0.5] * channels, std=[0.5] * channels)
  record = dict(family=tok.family, image_size=tok.image_size, channels=channels, grid=tok.grid,
                codebook_size=tok.codebook_size, fingerprint=tok.fingerprint,
                pixels=dict(mean=list(pixels["mean"]), std=list(pixels["std"])))
  if tok.family == "synergen":
    record["vq"] = dataclasses.asdict(tok.config)
  else:
    storage.write_text(folder / "config.json", json.dumps(hf_model_config(meta), indent=1))
    storage.write_text(folder / "preprocessor_config.json", json.dumps(dict(
        do_rescale=True, rescale_factor=1 / 255, do_normalize=True, image_mean=record["pixels"]["mean"],
        image_std=record["pixels"]["std"]), indent=1))
  storage.write_text(folder / "vq_config.json", json.dumps(record, indent=1))
  with tempfile.TemporaryDirectory() as tmp:
    name = WEIGHTS[tok.family]
    local = os.path.join(tmp, name)
    save_file(tensors(tok), local, metadata=dict(format="pt"))
    storage.write_bytes(folder / name, open(local, "rb").read())
