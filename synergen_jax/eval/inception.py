"""pytorch-fid's FID InceptionV3 in Flax (NHWC): images -> the 2048-d pool3 features FID is made of.

It is pytorch-fid's `InceptionV3(output_blocks=[3], resize_input=True, normalize_input=True,
use_fid_inception=True)` layer for layer, because an FID is only comparable to published numbers
when the features are: torchvision's InceptionV3 with the TF 2015 weights, its Mixed_5b-5d / 6b-6e
/ 7b average pools not counting padding (TF's pooling) and Mixed_7c pooling by max (a quirk of the
TF graph), BatchNorm eps 0.001 with running statistics, input resized to 299x299 the way torch's
F.interpolate(mode="bilinear", align_corners=False) does it (no antialiasing: jax.image.resize
would antialias a downscale and move every feature), then scaled from [0, 1] to [-1, 1].

Module names are the torch state dict's, so `load_pt_inception` maps pytorch-fid's weight file
(pt_inception-2015-12-05-6726825d.pth) name for name and refuses anything that does not fit.
"""

from __future__ import annotations

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from synergen_jax.core.errors import CheckpointError

INPUT_SIZE = 299
FEATURES = 2048
# f32 convolutions at full precision: an accelerator's default (TF32 on NVIDIA) moves pool3 features
# by ~1e-3, and an FID should not depend on the device it was computed on.
PRECISION = jax.lax.Precision.HIGHEST
# In the weight file but not part of pool3 (the 1008-way classifier) or not used in eval mode.
UNUSED_KEYS = ("fc.weight", "fc.bias")
UNUSED_SUFFIX = ".num_batches_tracked"


def bilinear_taps(in_size: int, out_size: int):
  """(index0, index1, weight0, weight1) per output pixel, as torch's upsample_bilinear2d with
  align_corners=False computes them: source = (i + 0.5) * scale - 0.5 clamped at 0, with the float32
  scale in / out and the multiply-add rounded once to float32 (the compiled kernel fuses it into an
  FMA; rounding twice moves some weights of a downscale by ~1e-5)."""
  scale = np.float64(np.float32(in_size) / np.float32(out_size))
  source = ((np.arange(out_size) + 0.5) * scale - 0.5).astype(np.float32)
  source = np.maximum(source, np.float32(0))
  index0 = np.minimum(np.floor(source).astype(np.int64), in_size - 1)
  weight1 = np.clip(source - index0.astype(np.float32), 0, 1).astype(np.float32)
  index1 = np.minimum(index0 + 1, in_size - 1)
  return index0, index1, np.float32(1) - weight1, weight1


def resize_like_torch(images, size: int = INPUT_SIZE):
  """float [N, H, W, C] -> [N, size, size, C] (numpy or jax arrays alike): torch's bilinear
  interpolation, along the width first and then the height as its kernel does. Same size: as is."""
  _, height, width, _ = images.shape
  if (height, width) == (size, size):
    return images
  index0, index1, weight0, weight1 = bilinear_taps(width, size)
  images = images.take(index0, axis=2) * weight0[:, None] + images.take(index1, axis=2) * weight1[:, None]
  index0, index1, weight0, weight1 = bilinear_taps(height, size)
  return (images.take(index0, axis=1) * weight0[:, None, None]
          + images.take(index1, axis=1) * weight1[:, None, None])


class BasicConv(nn.Module):
  """torchvision's BasicConv2d: convolution without bias, BatchNorm (eps 0.001), ReLU."""
  features: int
  kernel: tuple[int, int] = (1, 1)
  strides: int = 1
  padding: tuple[int, int] = (0, 0)

  @nn.compact
  def __call__(self, x):
    (pad_h, pad_w) = self.padding
    x = nn.Conv(self.features, self.kernel, self.strides, padding=((pad_h, pad_h), (pad_w, pad_w)),
                use_bias=False, precision=PRECISION, name="conv")(x)
    x = nn.BatchNorm(use_running_average=True, epsilon=1e-3, name="bn")(x)
    return nn.relu(x)


def average_pool_3x3(x):
  """TF's 3x3 stride-1 average pool: the padded zeros are not counted (count_include_pad=False)."""
  return nn.avg_pool(x, (3, 3), (1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def max_pool_3x3_stride_2(x):
  return nn.max_pool(x, (3, 3), (2, 2))


class InceptionA(nn.Module):
  """pytorch-fid's FIDInceptionA (Mixed_5b-5d)."""
  pool_features: int

  @nn.compact
  def __call__(self, x):
    branch1x1 = BasicConv(64, name="branch1x1")(x)
    branch5x5 = BasicConv(48, name="branch5x5_1")(x)
    branch5x5 = BasicConv(64, (5, 5), padding=(2, 2), name="branch5x5_2")(branch5x5)
    branch3x3dbl = BasicConv(64, name="branch3x3dbl_1")(x)
    branch3x3dbl = BasicConv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(branch3x3dbl)
    branch3x3dbl = BasicConv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(branch3x3dbl)
    branch_pool = BasicConv(self.pool_features, name="branch_pool")(average_pool_3x3(x))
    return jnp.concatenate([branch1x1, branch5x5, branch3x3dbl, branch_pool], -1)


class InceptionB(nn.Module):
  """torchvision's InceptionB (Mixed_6a): the 35x35 -> 17x17 reduction."""

  @nn.compact
  def __call__(self, x):
    branch3x3 = BasicConv(384, (3, 3), 2, name="branch3x3")(x)
    branch3x3dbl = BasicConv(64, name="branch3x3dbl_1")(x)
    branch3x3dbl = BasicConv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(branch3x3dbl)
    branch3x3dbl = BasicConv(96, (3, 3), 2, name="branch3x3dbl_3")(branch3x3dbl)
    return jnp.concatenate([branch3x3, branch3x3dbl, max_pool_3x3_stride_2(x)], -1)


class InceptionC(nn.Module):
  """pytorch-fid's FIDInceptionC (Mixed_6b-6e): factorised 7x7 convolutions."""
  channels_7x7: int

  @nn.compact
  def __call__(self, x):
    c7 = self.channels_7x7
    branch1x1 = BasicConv(192, name="branch1x1")(x)
    branch7x7 = BasicConv(c7, name="branch7x7_1")(x)
    branch7x7 = BasicConv(c7, (1, 7), padding=(0, 3), name="branch7x7_2")(branch7x7)
    branch7x7 = BasicConv(192, (7, 1), padding=(3, 0), name="branch7x7_3")(branch7x7)
    branch7x7dbl = BasicConv(c7, name="branch7x7dbl_1")(x)
    branch7x7dbl = BasicConv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_2")(branch7x7dbl)
    branch7x7dbl = BasicConv(c7, (1, 7), padding=(0, 3), name="branch7x7dbl_3")(branch7x7dbl)
    branch7x7dbl = BasicConv(c7, (7, 1), padding=(3, 0), name="branch7x7dbl_4")(branch7x7dbl)
    branch7x7dbl = BasicConv(192, (1, 7), padding=(0, 3), name="branch7x7dbl_5")(branch7x7dbl)
    branch_pool = BasicConv(192, name="branch_pool")(average_pool_3x3(x))
    return jnp.concatenate([branch1x1, branch7x7, branch7x7dbl, branch_pool], -1)


class InceptionD(nn.Module):
  """torchvision's InceptionD (Mixed_7a): the 17x17 -> 8x8 reduction."""

  @nn.compact
  def __call__(self, x):
    branch3x3 = BasicConv(192, name="branch3x3_1")(x)
    branch3x3 = BasicConv(320, (3, 3), 2, name="branch3x3_2")(branch3x3)
    branch7x7x3 = BasicConv(192, name="branch7x7x3_1")(x)
    branch7x7x3 = BasicConv(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(branch7x7x3)
    branch7x7x3 = BasicConv(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(branch7x7x3)
    branch7x7x3 = BasicConv(192, (3, 3), 2, name="branch7x7x3_4")(branch7x7x3)
    return jnp.concatenate([branch3x3, branch7x7x3, max_pool_3x3_stride_2(x)], -1)


class InceptionE(nn.Module):
  """pytorch-fid's FIDInceptionE_1 (Mixed_7b, pool "average") and FIDInceptionE_2 (Mixed_7c, pool
  "max": a 3x3 stride-1 max pool where the paper has an average)."""
  pool: str

  @nn.compact
  def __call__(self, x):
    branch1x1 = BasicConv(320, name="branch1x1")(x)
    branch3x3 = BasicConv(384, name="branch3x3_1")(x)
    branch3x3 = jnp.concatenate([
        BasicConv(384, (1, 3), padding=(0, 1), name="branch3x3_2a")(branch3x3),
        BasicConv(384, (3, 1), padding=(1, 0), name="branch3x3_2b")(branch3x3)], -1)
    branch3x3dbl = BasicConv(448, name="branch3x3dbl_1")(x)
    branch3x3dbl = BasicConv(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(branch3x3dbl)
    branch3x3dbl = jnp.concatenate([
        BasicConv(384, (1, 3), padding=(0, 1), name="branch3x3dbl_3a")(branch3x3dbl),
        BasicConv(384, (3, 1), padding=(1, 0), name="branch3x3dbl_3b")(branch3x3dbl)], -1)
    if self.pool == "max":
      pooled = nn.max_pool(x, (3, 3), (1, 1), padding=((1, 1), (1, 1)))
    else:
      pooled = average_pool_3x3(x)
    branch_pool = BasicConv(192, name="branch_pool")(pooled)
    return jnp.concatenate([branch1x1, branch3x3, branch3x3dbl, branch_pool], -1)


class FIDInceptionV3(nn.Module):
  """uint8 [N, H, W, 3] (or float in [0, 1]) -> float32 pool3 features [N, 2048]."""

  @nn.compact
  def __call__(self, images):
    if images.dtype == jnp.uint8:
      x = images.astype(jnp.float32) / 255
    else:
      x = images.astype(jnp.float32)
    x = 2 * resize_like_torch(x) - 1
    x = BasicConv(32, (3, 3), 2, name="Conv2d_1a_3x3")(x)
    x = BasicConv(32, (3, 3), name="Conv2d_2a_3x3")(x)
    x = BasicConv(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)
    x = max_pool_3x3_stride_2(x)
    x = BasicConv(80, name="Conv2d_3b_1x1")(x)
    x = BasicConv(192, (3, 3), name="Conv2d_4a_3x3")(x)
    x = max_pool_3x3_stride_2(x)
    for name, pool_features in (("Mixed_5b", 32), ("Mixed_5c", 64), ("Mixed_5d", 64)):
      x = InceptionA(pool_features, name=name)(x)
    x = InceptionB(name="Mixed_6a")(x)
    for name, channels_7x7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160),
                               ("Mixed_6e", 192)):
      x = InceptionC(channels_7x7, name=name)(x)
    x = InceptionD(name="Mixed_7a")(x)
    x = InceptionE("average", name="Mixed_7b")(x)
    x = InceptionE("max", name="Mixed_7c")(x)
    return x.mean(axis=(1, 2))


# Flax leaf -> torch tensor name and how a torch tensor becomes that leaf.
_TORCH_LEAVES = {
    ("params", "kernel"): ("weight", lambda w: w.transpose(2, 3, 1, 0)),   # OIHW -> HWIO
    ("params", "scale"): ("weight", lambda w: w),
    ("params", "bias"): ("bias", lambda w: w),
    ("batch_stats", "mean"): ("running_mean", lambda w: w),
    ("batch_stats", "var"): ("running_var", lambda w: w),
}


def torch_layout() -> dict:
  """{torch state dict key: (flax variable path, flax shape)} of every tensor the network needs."""
  abstract = jax.eval_shape(FIDInceptionV3().init, jax.random.key(0),
                            jax.ShapeDtypeStruct((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32))
  layout = {}
  for path, leaf in traverse_util.flatten_dict(abstract).items():
    torch_leaf, _ = _TORCH_LEAVES[(path[0], path[-1])]
    layout[".".join(path[1:-1] + (torch_leaf,))] = (path, leaf.shape)
  return layout


def variables_from_state_dict(state: dict, where: str) -> dict:
  """torch tensors (or arrays) by pytorch-fid's names -> {"params", "batch_stats"} of
  FIDInceptionV3; a missing, unexpected or misshaped tensor is refused by name."""
  layout = torch_layout()
  unused = {key for key in state if key in UNUSED_KEYS or key.endswith(UNUSED_SUFFIX)}
  missing = sorted(set(layout) - set(state))
  unexpected = sorted(set(state) - set(layout) - unused)
  problems = []
  if missing:
    problems.append(f"missing {len(missing)} tensors ({', '.join(missing[:5])})")
  if unexpected:
    problems.append(f"unexpected {len(unexpected)} tensors ({', '.join(unexpected[:5])})")
  flat = {}
  for key, (path, shape) in layout.items():
    if key not in state:
      continue
    value = state[key]
    array = np.asarray(value.detach().cpu().float().numpy() if hasattr(value, "detach") else value,
                       np.float32)
    array = _TORCH_LEAVES[(path[0], path[-1])][1](array)
    if array.shape != shape:
      problems.append(f"{key} has shape {tuple(array.shape)}, the network needs {shape} (flax layout)")
    flat[path] = array
  if problems:
    raise CheckpointError(f"{where} is not pytorch-fid's FID InceptionV3 state dict: "
                          + "; ".join(problems))
  return traverse_util.unflatten_dict(flat)


def load_pt_inception(path: str) -> dict:
  """pytorch-fid's pt_inception-2015-12-05-6726825d.pth (or a state dict of the same network with
  other weights) -> the variables of FIDInceptionV3. Needs torch (the `hf` extra)."""
  import torch
  if not os.path.isfile(path):
    raise CheckpointError(f"{path}: no such Inception weight file (pytorch-fid's "
                          "pt_inception-2015-12-05-6726825d.pth)")
  try:
    state = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:    # torch raises RuntimeError, UnpicklingError, EOFError, ... by cause
    raise CheckpointError(f"{path}: cannot read it as a torch state dict: {e}") from e
  if not isinstance(state, dict):
    raise CheckpointError(f"{path} holds a {type(state).__name__}, not a state dict")
  return variables_from_state_dict(state, path)
