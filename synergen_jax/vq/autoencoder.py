"""Image tokenizer: a VQGAN-style conv encoder, a cosine-similarity codebook, a conv decoder.

  image [B, S, S, C] in [-1, 1] --encoder--> z [B, S/ds, S/ds, D] --nearest code--> codes [B, h, w]
  codes --codebook--> e [B, h, w, D] --decoder--> image

The codebook is looked up on l2-normalised vectors (ViT-VQGAN's choice): distances are cosines, so
every code stays on the sphere where the encoder puts its outputs and small codebooks keep most codes
in use. Dead codes are restarted by the trainer from encoder outputs (`restart_dead_codes`), driven by
usage counts this module returns. Downsampling is 4, 8 or 16 (2, 3 or 4 stride-2 stages).
"""

from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class VQConfig:
  image_size: int            # square input size S; the code grid is S / downsample
  channels: int              # 1 (grayscale) or 3 (RGB)
  downsample: int            # 4, 8 or 16
  codebook_size: int         # K
  code_dim: int              # lookup dimension D
  width: int                 # channels of the first stage; doubled per stage, capped at 4x
  num_res_blocks: int
  beta: float = 0.25         # commitment weight

  @property
  def grid(self) -> int:
    return self.image_size // self.downsample

  @property
  def stage_widths(self) -> tuple[int, ...]:
    n = int(math.log2(self.downsample))
    return tuple(self.width * min(2 ** i, 4) for i in range(n + 1))

  @classmethod
  def from_config(cls, config) -> "VQConfig":
    """From a full experiment config: the grid and K come from `config.model`."""
    gh, gw = config.model.code_grid
    v = config.vq
    return cls(image_size=gh * v.downsample, channels=v.channels, downsample=v.downsample,
               codebook_size=config.model.codebook_size, code_dim=v.code_dim, width=v.width,
               num_res_blocks=v.num_res_blocks, beta=v.beta)


def _groups(channels: int) -> int:
  return math.gcd(channels, 32)


class ResBlock(nn.Module):
  features: int

  @nn.compact
  def __call__(self, x):
    h = nn.swish(nn.GroupNorm(_groups(x.shape[-1]))(x))
    h = nn.Conv(self.features, (3, 3))(h)
    h = nn.swish(nn.GroupNorm(_groups(self.features))(h))
    h = nn.Conv(self.features, (3, 3))(h)
    if x.shape[-1] != self.features:
      x = nn.Conv(self.features, (1, 1))(x)
    return x + h


class Encoder(nn.Module):
  """Stem conv, one stride-2 conv per stage, then the residual blocks at the code resolution.

  Residual blocks sit only at the bottom, where they are cheap: on CPU, full-resolution blocks made the
  demo tokenizer 3x slower for no visible gain on 32x32 images.
  """
  config: VQConfig

  @nn.compact
  def __call__(self, x):
    c = self.config
    widths = c.stage_widths
    x = nn.Conv(widths[0], (3, 3))(x)
    for w in widths[1:]:
      x = nn.Conv(w, (4, 4), strides=(2, 2))(nn.swish(x))
    for _ in range(c.num_res_blocks):
      x = ResBlock(widths[-1])(x)
    x = nn.swish(nn.GroupNorm(_groups(widths[-1]))(x))
    return nn.Conv(c.code_dim, (1, 1))(x)


class Decoder(nn.Module):
  """The encoder's mirror: residual blocks at the code resolution, then nearest-upsample + conv."""
  config: VQConfig

  @nn.compact
  def __call__(self, z):
    c = self.config
    widths = c.stage_widths[::-1]
    x = nn.Conv(widths[0], (3, 3))(z)
    for _ in range(c.num_res_blocks):
      x = ResBlock(widths[0])(x)
    for w in widths[1:]:
      b, h, wd, ch = x.shape
      x = jax.image.resize(nn.swish(x), (b, 2 * h, 2 * wd, ch), "nearest")
      x = nn.Conv(w, (3, 3))(x)
    x = nn.swish(nn.GroupNorm(_groups(widths[-1]))(x))
    return nn.Conv(c.channels, (3, 3))(x)


def _normalize(x, eps=1e-6):
  return x * jax.lax.rsqrt(jnp.sum(x * x, axis=-1, keepdims=True) + eps)


class VQModel(nn.Module):
  config: VQConfig

  def setup(self):
    c = self.config
    self.encoder = Encoder(c)
    self.decoder = Decoder(c)
    self.codebook = self.param("codebook", nn.initializers.normal(1.0), (c.codebook_size, c.code_dim))

  def encode_continuous(self, images):
    """[B, S, S, C] in [-1, 1] -> unit vectors [B, h, w, D]."""
    return _normalize(self.encoder(images))

  def quantize(self, z):
    """Unit vectors -> (codes [B, h, w], unit code vectors [B, h, w, D])."""
    book = _normalize(self.codebook)
    codes = jnp.argmax(jnp.einsum("bhwd,kd->bhwk", z, book), axis=-1)
    return codes, book[codes]

  def encode(self, images):
    return self.quantize(self.encode_continuous(images))[0]

  def decode(self, codes):
    return self.decoder(_normalize(self.codebook)[codes])

  def __call__(self, images):
    """Returns recon, codes, z (unit encoder outputs) and the codebook + commitment loss."""
    z = self.encode_continuous(images)
    codes, e = self.quantize(z)
    vq_loss = (jnp.mean(jnp.square(jax.lax.stop_gradient(z) - e))
               + self.config.beta * jnp.mean(jnp.square(z - jax.lax.stop_gradient(e))))
    z_q = z + jax.lax.stop_gradient(e - z)   # straight-through estimator
    return dict(recon=self.decoder(z_q), codes=codes, z=z, vq_loss=vq_loss)


def to_model_range(images_uint8):
  return images_uint8.astype(jnp.float32) / 127.5 - 1.0


def to_uint8(images):
  return jnp.clip(jnp.round((images + 1.0) * 127.5), 0, 255).astype(jnp.uint8)


def restart_dead_codes(codebook, usage, z, rng, threshold):
  """Moves codes whose usage (EMA, 1.0 = uniform share) is below `threshold` onto random encoder
  outputs of the current batch, and resets their usage to 1. Returns (codebook, usage, n_restarted)."""
  flat = z.reshape(-1, z.shape[-1])
  dead = usage < threshold
  picks = jax.random.randint(rng, (codebook.shape[0],), 0, flat.shape[0])
  codebook = jnp.where(dead[:, None], flat[picks], codebook)
  usage = jnp.where(dead, 1.0, usage)
  return codebook, usage, jnp.sum(dead)


def update_usage(usage, codes, decay):
  """EMA of each code's share of the batch, scaled so a uniformly used codebook reads 1.0."""
  k = usage.shape[0]
  counts = jnp.zeros(k, jnp.float32).at[codes.reshape(-1)].add(1.0)
  share = counts * k / codes.size
  return decay * usage + (1.0 - decay) * share


def perplexity(counts):
  """exp(entropy) of the code histogram: K when all codes are equally used, 1 when one code is."""
  p = counts / jnp.maximum(jnp.sum(counts), 1.0)
  return jnp.exp(-jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0)))
