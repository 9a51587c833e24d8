"""The export's image tokenizer in PyTorch: uint8 pixels <-> code grids, as synergen_jax encodes them.

`load_image_tokenizer(folder)` reads the export's `image_tokenizer/` folder (its vq_config.json names
the family) and returns an `ImageTokenizer` with `encode(uint8 [N, S, S, C]) -> codes [N, h, w]` and
`decode(codes) -> uint8 [N, S, S, C]`:

  synergen  `SynerGenVQ` below, a port of synergen_jax/vq/autoencoder.py (conv encoder, cosine
            codebook, conv decoder); parameters keep the flax names and layouts (conv kernels
            [kh, kw, in, out]) in model.safetensors; pixels map to [-1, 1] as x / 127.5 - 1
  emu3      transformers' own `Emu3VQVAE` (config.json + model.safetensors in its format)
  vqgan     diffusers' `VQModel` (taming VQGAN / MoVQ: config.json +
            diffusion_pytorch_model.safetensors); needs `pip install diffusers`

For emu3 and vqgan, pixels are normalised as the release's image processor does,
`x = (uint8 / 255 - mean) / std` (preprocessor_config.json), and decoded back the same way.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def _same_pad(x, kernel: int, stride: int):
  """lax's "SAME" padding (flax's default): the extra pixel, if any, goes after."""
  pads = []
  for size in (x.shape[-1], x.shape[-2]):          # F.pad lists the last dimension first
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    pads += [total // 2, total - total // 2]
  return F.pad(x, pads)


class Conv(nn.Module):
  """flax nn.Conv: kernel [kh, kw, in, out], bias [out], SAME padding; NCHW tensors."""

  def __init__(self, n_in: int, n_out: int, size: int, stride: int = 1):
    super().__init__()
    self.kernel = nn.Parameter(torch.zeros(size, size, n_in, n_out))
    self.bias = nn.Parameter(torch.zeros(n_out))
    self.size, self.stride = size, stride

  def forward(self, x):
    return F.conv2d(_same_pad(x, self.size, self.stride), self.kernel.permute(3, 2, 0, 1),
                    self.bias, stride=self.stride)


class GroupNorm(nn.Module):
  """flax nn.GroupNorm (epsilon 1e-6): scale, bias."""

  def __init__(self, channels: int):
    super().__init__()
    self.groups = math.gcd(channels, 32)
    self.scale = nn.Parameter(torch.ones(channels))
    self.bias = nn.Parameter(torch.zeros(channels))

  def forward(self, x):
    return F.group_norm(x, self.groups, self.scale, self.bias, eps=1e-6)


class ResBlock(nn.Module):
  def __init__(self, n_in: int, features: int):
    super().__init__()
    self.GroupNorm_0, self.Conv_0 = GroupNorm(n_in), Conv(n_in, features, 3)
    self.GroupNorm_1, self.Conv_1 = GroupNorm(features), Conv(features, features, 3)
    self.shortcut = n_in != features
    if self.shortcut:
      self.Conv_2 = Conv(n_in, features, 1)

  def forward(self, x):
    h = self.Conv_0(F.silu(self.GroupNorm_0(x)))
    h = self.Conv_1(F.silu(self.GroupNorm_1(h)))
    return (self.Conv_2(x) if self.shortcut else x) + h


def stage_widths(c: dict) -> list[int]:
  n = int(math.log2(c["downsample"]))
  return [c["width"] * min(2 ** i, 4) for i in range(n + 1)]


class Encoder(nn.Module):
  def __init__(self, c: dict):
    super().__init__()
    w = stage_widths(c)
    self.n, self.blocks = len(w) - 1, c["num_res_blocks"]
    self.Conv_0 = Conv(c["channels"], w[0], 3)
    for i in range(self.n):
      setattr(self, f"Conv_{i + 1}", Conv(w[i], w[i + 1], 4, 2))
    for j in range(self.blocks):
      setattr(self, f"ResBlock_{j}", ResBlock(w[-1], w[-1]))
    self.GroupNorm_0 = GroupNorm(w[-1])
    setattr(self, f"Conv_{self.n + 1}", Conv(w[-1], c["code_dim"], 1))

  def forward(self, x):
    x = self.Conv_0(x)
    for i in range(self.n):
      x = getattr(self, f"Conv_{i + 1}")(F.silu(x))
    for j in range(self.blocks):
      x = getattr(self, f"ResBlock_{j}")(x)
    return getattr(self, f"Conv_{self.n + 1}")(F.silu(self.GroupNorm_0(x)))


class Decoder(nn.Module):
  def __init__(self, c: dict):
    super().__init__()
    w = stage_widths(c)[::-1]
    self.n, self.blocks = len(w) - 1, c["num_res_blocks"]
    self.Conv_0 = Conv(c["code_dim"], w[0], 3)
    for j in range(self.blocks):
      setattr(self, f"ResBlock_{j}", ResBlock(w[0], w[0]))
    for i in range(self.n):
      setattr(self, f"Conv_{i + 1}", Conv(w[i], w[i + 1], 3))
    self.GroupNorm_0 = GroupNorm(w[-1])
    setattr(self, f"Conv_{self.n + 1}", Conv(w[-1], c["channels"], 3))

  def forward(self, z):
    x = self.Conv_0(z)
    for j in range(self.blocks):
      x = getattr(self, f"ResBlock_{j}")(x)
    for i in range(self.n):
      x = getattr(self, f"Conv_{i + 1}")(F.interpolate(F.silu(x), scale_factor=2, mode="nearest"))
    return getattr(self, f"Conv_{self.n + 1}")(F.silu(self.GroupNorm_0(x)))


def _normalize(x, eps=1e-6):
  return x * torch.rsqrt((x * x).sum(-1, keepdim=True) + eps)


class SynerGenVQ(nn.Module):
  """synergen_jax/vq/autoencoder.py's VQModel; `config`: vq_config.json's "vq" (VQConfig fields)."""

  def __init__(self, config: dict):
    super().__init__()
    self.config = dict(config)
    self.encoder, self.decoder = Encoder(config), Decoder(config)
    self.codebook = nn.Parameter(torch.zeros(config["codebook_size"], config["code_dim"]))

  @torch.no_grad()
  def encode(self, pixels: torch.Tensor) -> torch.Tensor:
    """uint8 [N, S, S, C] -> codes [N, h, w] (long): the nearest code by cosine."""
    x = pixels.float().permute(0, 3, 1, 2) / 127.5 - 1.0
    z = _normalize(self.encoder(x).permute(0, 2, 3, 1))
    return torch.einsum("bhwd,kd->bhwk", z, _normalize(self.codebook)).argmax(-1)

  @torch.no_grad()
  def decode(self, codes: torch.Tensor) -> torch.Tensor:
    """codes [N, h, w] -> uint8 [N, S, S, C]."""
    e = _normalize(self.codebook)[codes.long()].permute(0, 3, 1, 2)
    x = self.decoder(e).permute(0, 2, 3, 1)
    return ((x + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)


class ImageTokenizer:
  """One interface over the three families: `encode`, `decode`, `image_size`, `channels`, `grid`."""

  def __init__(self, family: str, model, meta: dict):
    self.family, self.model, self.meta = family, model.eval(), meta
    self.image_size, self.channels = int(meta["image_size"]), int(meta["channels"])
    self.grid, self.codebook_size = int(meta["grid"]), int(meta["codebook_size"])
    pixels = meta.get("pixels") or {}
    c = self.channels
    self.mean = torch.tensor((pixels.get("mean") or [0.5] * c)[:c]).view(1, c, 1, 1)
    self.std = torch.tensor((pixels.get("std") or [0.5] * c)[:c]).view(1, c, 1, 1)

  def _device(self):
    return next(self.model.parameters()).device

  @torch.no_grad()
  def encode(self, pixels) -> torch.Tensor:
    """uint8 [N, S, S, C] (numpy or torch) -> codes [N, h, w] (long)."""
    pixels = torch.as_tensor(np.asarray(pixels))
    want = (self.image_size, self.image_size, self.channels)
    if pixels.dtype != torch.uint8 or tuple(pixels.shape[1:]) != want:
      raise ValueError(f"ImageTokenizer.encode: got {pixels.dtype} {tuple(pixels.shape[1:])}, "
                       f"expects uint8 {want}")
    pixels = pixels.to(self._device())
    if self.family == "synergen":
      return self.model.encode(pixels)
    x = ((pixels.float().permute(0, 3, 1, 2) / 255.0 - self.mean.to(pixels.device))
         / self.std.to(pixels.device))
    if self.family == "emu3":
      sizes = [[self.image_size, self.image_size]] * len(x)
      return torch.stack(self.model.encode(x, image_sizes=sizes).image_tokens).reshape(
          len(x), self.grid, self.grid)
    latents = self.model.encode(x).latents
    _, _, (_, _, idx) = self.model.quantize(latents)
    return idx.reshape(len(x), self.grid, self.grid)

  @torch.no_grad()
  def decode(self, codes) -> torch.Tensor:
    """codes [N, h, w] -> uint8 [N, S, S, C]."""
    codes = torch.as_tensor(np.asarray(codes)).long().to(self._device())
    if self.family == "synergen":
      return self.model.decode(codes)
    if self.family == "emu3":
      x = self.model.decode(codes)
    else:
      shape = (len(codes), self.grid, self.grid, self.model.config.latent_channels)
      z = self.model.quantize.get_codebook_entry(codes.reshape(-1), shape)
      x = self.model.decode(z, force_not_quantize=True).sample
    x = x.float() * self.std.to(x.device) + self.mean.to(x.device)
    return (x * 255.0).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


def load_image_tokenizer(folder: str, device=None) -> ImageTokenizer:
  """The tokenizer saved in `folder` (an export's image_tokenizer/)."""
  meta = json.load(open(os.path.join(folder, "vq_config.json")))
  family = meta["family"]
  if family == "synergen":
    from safetensors.torch import load_file
    model = SynerGenVQ(meta["vq"])
    model.load_state_dict(load_file(os.path.join(folder, "model.safetensors")), strict=True)
  elif family == "emu3":
    from transformers import Emu3VQVAE
    model = Emu3VQVAE.from_pretrained(folder)
  elif family == "vqgan":
    from diffusers import VQModel
    model = VQModel.from_pretrained(folder)
  else:
    raise ValueError(f"{folder}/vq_config.json: unknown image tokenizer family {family!r}")
  if device is not None:
    model = model.to(device)
  return ImageTokenizer(family, model, meta)
