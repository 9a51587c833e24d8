"""diffusers' `VQModel` in Flax: taming VQGAN (norm_type "group") and MoVQ (norm_type "spatial").

  images [N, H, W, C] in [-1, 1] --encoder, quant_conv--> z [N, h, w, D] --nearest code--> codes
  codes --codebook--> q [N, h, w, D] --post_quant_conv, decoder (norms conditioned on q)--> images

A port, not a redesign: module names follow diffusers' state-dict names ("down_blocks.0.resnets.1"
is `down_blocks_0/resnets_1`), so `params_from_state_dict` is a rename plus a layout change (conv
OIHW -> HWIO, linear [out, in] -> [in, out]), and every op is diffusers' in float32: GroupNorm with
eps 1e-6 and two-pass variance, one attention head over all channels, stride-2 downsampling convs
without padding after a (0, 1, 0, 1) zero pad, nearest 2x upsampling, and codes from the Euclidean
argmin of `VectorQuantizer` (the first of equal distances, as torch.argmin). For MoVQ, diffusers
passes the codebook vectors themselves (before post_quant_conv) to every decoder norm as
SpatialNorm's condition; so does `decode`. Matmuls and convs use XLA's default precision, full
float32 on CPU; on GPUs with TF32, wrap calls in `jax.default_matmul_precision("highest")` to stay
within float32 rounding of torch.

Only what `VQModel.save_pretrained` writes for these four block types is read: `remap` (index
remapping) and the deprecated attention names (query/key/value/proj_attn) are not supported.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from synergen_jax.core import state_dict
from synergen_jax.core.errors import ConfigError

DOWN_BLOCKS = ("DownEncoderBlock2D", "AttnDownEncoderBlock2D")
UP_BLOCKS = ("UpDecoderBlock2D", "AttnUpDecoderBlock2D")
NORM_TYPES = ("group", "spatial")
SPATIAL_NORM_GROUPS = 32    # diffusers' SpatialNorm hard-codes 32 groups, whatever norm_num_groups
EPS = 1e-6


def checked_int(where: str, key: str, v):
  """A release config's positive integer, or a ConfigError naming the file, key and value."""
  if isinstance(v, bool) or not isinstance(v, int) or v < 1:
    raise ConfigError(f"{where}: {key}={v!r} must be a positive integer")
  return v


def checked_int_list(where: str, key: str, v) -> tuple[int, ...]:
  if (not isinstance(v, (list, tuple)) or not v
      or any(isinstance(x, bool) or not isinstance(x, int) or x < 1 for x in v)):
    raise ConfigError(f"{where}: {key}={v!r} must be a non-empty list of positive integers")
  return tuple(v)


# diffusers' VQModel defaults, for keys a hand-written config.json leaves out.
_DEFAULTS = dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",),
                 up_block_types=("UpDecoderBlock2D",), block_out_channels=(64,), layers_per_block=1,
                 act_fn="silu", latent_channels=3, sample_size=32, num_vq_embeddings=256,
                 norm_num_groups=32, vq_embed_dim=None, norm_type="group",
                 mid_block_add_attention=True)
# Keys that do not change the network: latent scaling for diffusion, decode()'s input convention,
# autocast. Any other key is refused, so a newer diffusers option is never silently ignored.
_IGNORED = ("scaling_factor", "lookup_from_codebook", "force_upcast")


@dataclasses.dataclass(frozen=True)
class VQGANConfig:
  in_channels: int
  out_channels: int
  down_block_types: tuple[str, ...]
  up_block_types: tuple[str, ...]
  block_out_channels: tuple[int, ...]
  layers_per_block: int
  latent_channels: int
  num_vq_embeddings: int
  norm_num_groups: int
  vq_embed_dim: int | None = None
  norm_type: str = "group"
  mid_block_add_attention: bool = True
  sample_size: int = 32

  @property
  def downsample(self) -> int:
    return 2 ** (len(self.block_out_channels) - 1)

  @property
  def codebook_size(self) -> int:
    return self.num_vq_embeddings

  @property
  def code_dim(self) -> int:
    return self.vq_embed_dim if self.vq_embed_dim is not None else self.latent_channels

  @property
  def channels(self) -> int:
    return self.in_channels

  @property
  def image_size(self) -> int:
    return self.sample_size

  @property
  def spatial(self) -> bool:
    return self.norm_type == "spatial"

  @classmethod
  def from_hf(cls, hf_config: dict, where: str) -> "VQGANConfig":
    """From a diffusers VQModel config.json dict; `where` (the file) is named in every error."""
    def fail(key, value, why):
      raise ConfigError(f"{where}: {key}={value!r} {why}")

    name = hf_config.get("_class_name", "VQModel")
    if name != "VQModel":
      fail("_class_name", name, "is not a diffusers VQModel config")
    unknown = sorted(k for k in hf_config
                     if not k.startswith("_") and k not in _DEFAULTS and k not in _IGNORED)
    if unknown:
      fail(unknown[0], hf_config[unknown[0]], f"is not a VQModel option this port reads "
           f"(unknown keys: {unknown}; known: {sorted(_DEFAULTS) + sorted(_IGNORED)})")
    c = {**_DEFAULTS, **{k: hf_config[k] for k in _DEFAULTS if k in hf_config}}

    positive_int = lambda key: checked_int(where, key, c[key])
    int_list = lambda key: checked_int_list(where, key, c[key])

    def str_list(key, allowed):
      v = c[key]
      if not isinstance(v, (list, tuple)) or not v:
        fail(key, v, "must be a non-empty list of block type names")
      for x in v:
        if x not in allowed:
          fail(key, v, f"has block type {x!r}; supported: {list(allowed)}")
      return tuple(v)

    if c["act_fn"] not in ("silu", "swish"):    # diffusers maps both names to nn.SiLU
      fail("act_fn", c["act_fn"], "is not supported; only silu (swish) is")
    if c["norm_type"] not in NORM_TYPES:
      fail("norm_type", c["norm_type"], f"is not supported; one of {list(NORM_TYPES)}")
    if not isinstance(c["mid_block_add_attention"], bool):
      fail("mid_block_add_attention", c["mid_block_add_attention"], "must be true or false")
    widths = int_list("block_out_channels")
    down = str_list("down_block_types", DOWN_BLOCKS)
    up = str_list("up_block_types", UP_BLOCKS)
    for key, types in (("down_block_types", down), ("up_block_types", up)):
      if len(types) != len(widths):
        fail(key, list(types), f"must have one entry per block_out_channels {list(widths)}")
    groups = positive_int("norm_num_groups")
    if any(w % groups for w in widths):
      fail("norm_num_groups", groups, f"must divide every block_out_channels {list(widths)}")
    if c["norm_type"] == "spatial" and any(w % SPATIAL_NORM_GROUPS for w in widths):
      fail("block_out_channels", list(widths), f"must be multiples of {SPATIAL_NORM_GROUPS} with "
           f"norm_type='spatial' (diffusers' SpatialNorm uses {SPATIAL_NORM_GROUPS} groups)")
    latent = positive_int("latent_channels")
    embed = c["vq_embed_dim"]
    if embed is not None:
      embed = positive_int("vq_embed_dim")
      if c["norm_type"] == "spatial" and embed != latent:
        fail("vq_embed_dim", embed, f"must equal latent_channels={latent} with norm_type="
             "'spatial': the decoder's SpatialNorms take the codebook vectors with "
             "latent_channels inputs")
    size = c["sample_size"]
    if isinstance(size, (list, tuple)) and len(size) == 2 and size[0] == size[1]:
      size = size[0]
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
      fail("sample_size", c["sample_size"], "must be a positive integer (a square image size)")
    return cls(in_channels=positive_int("in_channels"), out_channels=positive_int("out_channels"),
               down_block_types=down, up_block_types=up, block_out_channels=widths,
               layers_per_block=positive_int("layers_per_block"), latent_channels=latent,
               num_vq_embeddings=positive_int("num_vq_embeddings"), norm_num_groups=groups,
               vq_embed_dim=embed, norm_type=c["norm_type"],
               mid_block_add_attention=c["mid_block_add_attention"], sample_size=size)


# --------------------------------------------------------------------------------------------------
# Layers. `zq` is MoVQ's condition (the codebook vectors, [N, h, w, D]); None for taming VQGAN.
# --------------------------------------------------------------------------------------------------

# The building blocks vq/emu3.py shares (transformers' Emu3 uses the same convs, GroupNorm and
# SpatialNorm as diffusers' MoVQ).

def conv(features: int, size: int, name: str) -> nn.Conv:
  return nn.Conv(features, (size, size), padding=size // 2, name=name)


# Positions per partial sum of GroupNorm's statistics (see GroupNorm).
NORM_CHUNKS = (64, 32, 16, 8, 4, 2, 1)


class GroupNorm(nn.Module):
  """torch's GroupNorm over channels-last x [N, ..., C] (parameters `scale` and `bias`, as flax's
  nn.GroupNorm names them, so imports are unchanged), with a two-pass variance as torch computes it
  (E[x^2] - E[x]^2 loses digits when |mean| >> std).

  Written out rather than nn.GroupNorm: flax reduces [N, L, G, C/G] over L and C/G in one fused
  reduction, which XLA:CPU runs about 1.35x slower than this form, where the positions are first
  summed in up to 64 chunks (a reduction over a major axis, vectorised along channels) and the
  groups only then. At MoVQ's 256^2 x 128 activations the norms were a third of the encoder's time."""
  groups: int
  epsilon: float = 1e-6

  @nn.compact
  def __call__(self, x):
    channels = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (channels,))
    bias = self.param("bias", nn.initializers.zeros, (channels,))
    n, positions = x.shape[0], int(np.prod(x.shape[1:-1]))
    chunks = next(k for k in NORM_CHUNKS if positions % k == 0)
    rows = x.astype(jnp.float32).reshape(n, chunks, positions // chunks, channels)
    count = positions * (channels // self.groups)

    def per_channel(group_values):          # [n, groups] -> [n, 1, 1, channels]
      return jnp.repeat(group_values, channels // self.groups, axis=1)[:, None, None, :]

    def group_sums(values):                 # [n, chunks, rows, channels] -> [n, groups]
      return values.sum(2).sum(1).reshape(n, self.groups, channels // self.groups).sum(-1)

    centred = rows - per_channel(group_sums(rows) / count)
    variance = group_sums(centred * centred) / count
    y = centred * (per_channel(jax.lax.rsqrt(variance + self.epsilon)) * scale) + bias
    return y.reshape(x.shape).astype(x.dtype)


def group_norm(groups: int, name: str) -> GroupNorm:
  return GroupNorm(groups, EPS, name=name)


def resize_nearest(x, height: int, width: int):
  """torch's F.interpolate(mode="nearest"): source index floor(i * in / out)."""
  _, h, w, _ = x.shape
  if (h, w) == (height, width):
    return x
  rows = (np.arange(height) * h) // height
  cols = (np.arange(width) * w) // width
  return x[:, rows][:, :, cols]


class SpatialNorm(nn.Module):
  """MoVQ's norm: GroupNorm(32)(f) * conv_y(zq) + conv_b(zq), zq nearest-resized to f's grid."""
  features: int

  @nn.compact
  def __call__(self, f, zq):
    zq = resize_nearest(zq, f.shape[1], f.shape[2])
    norm = group_norm(SPATIAL_NORM_GROUPS, "norm_layer")(f)
    return norm * conv(self.features, 1, "conv_y")(zq) + conv(self.features, 1, "conv_b")(zq)


def _norm(features: int, groups: int, spatial: bool, name: str, x, zq):
  if spatial:
    return SpatialNorm(features, name=name)(x, zq)
  return group_norm(groups, name)(x)


class ResnetBlock(nn.Module):
  """ResnetBlock2D (GroupNorm) or ResnetBlockCondNorm2D (SpatialNorm); 1x1 conv shortcut."""
  features: int
  groups: int
  spatial: bool = False

  @nn.compact
  def __call__(self, x, zq=None):
    h = nn.silu(_norm(x.shape[-1], self.groups, self.spatial, "norm1", x, zq))
    h = conv(self.features, 3, "conv1")(h)
    h = nn.silu(_norm(self.features, self.groups, self.spatial, "norm2", h, zq))
    h = conv(self.features, 3, "conv2")(h)
    if x.shape[-1] != self.features:
      x = conv(self.features, 1, "conv_shortcut")(x)
    return x + h


class AttentionBlock(nn.Module):
  """diffusers' Attention as VAEs build it: norm, one head over all channels, residual."""
  groups: int
  spatial: bool = False

  @nn.compact
  def __call__(self, x, zq=None):
    n, h, w, c = x.shape
    if self.spatial:
      y = SpatialNorm(c, name="spatial_norm")(x, zq)
    else:
      y = group_norm(self.groups, "group_norm")(x)
    y = y.reshape(n, h * w, c)
    q, k, v = (nn.Dense(c, name=name)(y) for name in ("to_q", "to_k", "to_v"))
    scores = jnp.einsum("nqc,nkc->nqk", q, k) / math.sqrt(c)
    weights = jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(v.dtype)
    out = nn.Dense(c, name="to_out_0")(jnp.einsum("nqk,nkc->nqc", weights, v))
    return x + out.reshape(n, h, w, c)


class Downsample(nn.Module):
  """Downsample2D(padding=0): zero-pad right and bottom by one, then a 3x3 stride-2 valid conv."""
  features: int

  @nn.compact
  def __call__(self, x):
    return nn.Conv(self.features, (3, 3), strides=(2, 2), padding=((0, 1), (0, 1)), name="conv")(x)


class Upsample(nn.Module):
  """Upsample2D: nearest 2x, then a 3x3 conv."""
  features: int

  @nn.compact
  def __call__(self, x):
    x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    return conv(self.features, 3, "conv")(x)


class MidBlock(nn.Module):
  """UNetMidBlock2D: resnet, attention (unless mid_block_add_attention is false), resnet."""
  features: int
  groups: int
  attention: bool
  spatial: bool = False

  @nn.compact
  def __call__(self, x, zq=None):
    x = ResnetBlock(self.features, self.groups, self.spatial, name="resnets_0")(x, zq)
    if self.attention:
      x = AttentionBlock(self.groups, self.spatial, name="attentions_0")(x, zq)
    return ResnetBlock(self.features, self.groups, self.spatial, name="resnets_1")(x, zq)


class DownBlock(nn.Module):
  """DownEncoderBlock2D / AttnDownEncoderBlock2D: resnets (each then attention), downsample."""
  features: int
  layers: int
  groups: int
  attention: bool
  downsample: bool

  @nn.compact
  def __call__(self, x):
    for j in range(self.layers):
      x = ResnetBlock(self.features, self.groups, name=f"resnets_{j}")(x)
      if self.attention:
        x = AttentionBlock(self.groups, name=f"attentions_{j}")(x)
    return Downsample(self.features, name="downsamplers_0")(x) if self.downsample else x


class UpBlock(nn.Module):
  """UpDecoderBlock2D / AttnUpDecoderBlock2D: resnets (each then attention), upsample."""
  features: int
  layers: int
  groups: int
  attention: bool
  upsample: bool
  spatial: bool = False

  @nn.compact
  def __call__(self, x, zq=None):
    for j in range(self.layers):
      x = ResnetBlock(self.features, self.groups, self.spatial, name=f"resnets_{j}")(x, zq)
      if self.attention:
        x = AttentionBlock(self.groups, self.spatial, name=f"attentions_{j}")(x, zq)
    return Upsample(self.features, name="upsamplers_0")(x) if self.upsample else x


class Encoder(nn.Module):
  """diffusers' vae.Encoder with double_z=False: down blocks, mid block, norm, silu, conv_out."""
  config: VQGANConfig

  @nn.compact
  def __call__(self, x):
    c = self.config
    g, n = c.norm_num_groups, len(c.block_out_channels)
    x = conv(c.block_out_channels[0], 3, "conv_in")(x)
    for i, (kind, width) in enumerate(zip(c.down_block_types, c.block_out_channels)):
      x = DownBlock(width, c.layers_per_block, g, kind == "AttnDownEncoderBlock2D", i < n - 1,
                    name=f"down_blocks_{i}")(x)
    x = MidBlock(c.block_out_channels[-1], g, c.mid_block_add_attention, name="mid_block")(x)
    x = nn.silu(group_norm(g, "conv_norm_out")(x))
    return conv(c.latent_channels, 3, "conv_out")(x)


class Decoder(nn.Module):
  """diffusers' vae.Decoder: mid block, up blocks of layers_per_block + 1 resnets, norm, conv."""
  config: VQGANConfig

  @nn.compact
  def __call__(self, x, zq=None):
    c = self.config
    g, s = c.norm_num_groups, c.spatial
    widths = c.block_out_channels[::-1]
    x = conv(widths[0], 3, "conv_in")(x)
    x = MidBlock(widths[0], g, c.mid_block_add_attention, s, name="mid_block")(x, zq)
    for i, (kind, width) in enumerate(zip(c.up_block_types, widths)):
      x = UpBlock(width, c.layers_per_block + 1, g, kind == "AttnUpDecoderBlock2D",
                  i < len(widths) - 1, s, name=f"up_blocks_{i}")(x, zq)
    x = nn.silu(_norm(widths[-1], g, s, "conv_norm_out", x, zq))
    return conv(c.out_channels, 3, "conv_out")(x)


class VectorQuantizer(nn.Module):
  """The codebook [K, D]; nearest code by Euclidean distance (argmin of |z|^2 - 2 z.e + |e|^2)."""
  config: VQGANConfig

  def setup(self):
    k = self.config.codebook_size
    init = lambda key, shape, dtype: jax.random.uniform(key, shape, dtype, -1.0 / k, 1.0 / k)
    self.embedding = nn.Embed(k, self.config.code_dim, name="embedding", embedding_init=init)

  def codes(self, z):
    book = self.embedding.embedding
    d = (jnp.sum(z * z, axis=-1, keepdims=True) - 2.0 * jnp.einsum("nhwd,kd->nhwk", z, book)
         + jnp.sum(book * book, axis=-1))
    return jnp.argmin(d, axis=-1).astype(jnp.int32)

  def lookup(self, codes):
    return self.embedding(codes)


class VQGAN(nn.Module):
  """diffusers' VQModel in NHWC: `encode` images -> int32 codes, `decode` back, `__call__` both."""
  config: VQGANConfig

  def setup(self):
    c = self.config
    self.encoder = Encoder(c)
    self.quant_conv = conv(c.code_dim, 1, "quant_conv")
    self.quantize = VectorQuantizer(c)
    self.post_quant_conv = conv(c.latent_channels, 1, "post_quant_conv")
    self.decoder = Decoder(c)

  def encode(self, images):
    """[N, H, W, C] float in [-1, 1] -> codes [N, H / downsample, W / downsample] int32."""
    return self.quantize.codes(self.quant_conv(self.encoder(images)))

  def decode(self, codes):
    """codes [N, h, w] -> images [N, h * downsample, w * downsample, out_channels], ~[-1, 1]."""
    q = self.quantize.lookup(codes)
    return self.decoder(self.post_quant_conv(q), q if self.config.spatial else None)

  def __call__(self, images):
    return self.decode(self.encode(images))


# --------------------------------------------------------------------------------------------------
# diffusers state dicts -> parameters.
# --------------------------------------------------------------------------------------------------

_LEAF = dict(kernel="weight", scale="weight", embedding="weight", bias="bias")


def torch_name(path: str) -> str:
  """Our parameter path -> diffusers' state-dict name: "decoder/up_blocks_0/resnets_1/conv1/kernel"
  -> "decoder.up_blocks.0.resnets.1.conv1.weight" (only list members end in _<index>)."""
  *modules, leaf = path.split("/")
  return ".".join([re.sub(r"_(\d+)$", r".\1", m) for m in modules] + [_LEAF[leaf]])


def _torch_shape(path: str, shape: tuple[int, ...]) -> tuple[int, ...]:
  if path.endswith("kernel") and len(shape) == 4:     # conv HWIO -> OIHW
    return (shape[3], shape[2], shape[0], shape[1])
  if path.endswith("kernel"):                         # dense [in, out] -> linear [out, in]
    return shape[::-1]
  return tuple(shape)


def abstract_params(cfg: VQGANConfig) -> dict[str, jax.ShapeDtypeStruct]:
  """Our parameter path -> its shape, from `jax.eval_shape` of `VQGAN(cfg).init` (no compute)."""
  s = cfg.downsample                  # shapes do not depend on the image size; the smallest will do
  tree = jax.eval_shape(VQGAN(cfg).init, jax.random.key(0),
                        jax.ShapeDtypeStruct((1, s, s, cfg.channels), jnp.float32))
  return state_dict.flatten(tree["params"])


def params_from_state_dict(state: dict[str, np.ndarray], cfg: VQGANConfig,
                           where: str) -> dict[str, Any]:
  """A `VQModel` state dict (as `save_pretrained` writes it) -> {"params": ...} for `VQGAN(cfg)`.

  Refuses, before converting anything, a state dict with tensors the config's network lacks, tensors
  it needs that are absent, or shapes it does not imply; the error names `where` and the tensors.
  """
  wanted = abstract_params(cfg)
  names = {path: torch_name(path) for path in wanted}
  expected = {names[p]: _torch_shape(p, tuple(leaf.shape)) for p, leaf in wanted.items()}
  state_dict.check(state, expected, f"{where} does not match its config (a VQModel with norm_type="
                   f"{cfg.norm_type!r}, blocks {list(cfg.block_out_channels)})")
  params = {}
  for path in wanted:
    x = np.asarray(state[names[path]], np.float32)
    if path.endswith("kernel"):
      x = np.transpose(x, (2, 3, 1, 0)) if x.ndim == 4 else x.T
    params[path] = np.ascontiguousarray(x)
  return {"params": state_dict.nest(params)}
