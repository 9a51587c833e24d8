"""What tokenizing a stage's images costs: encoder FLOPs per image at the stage's tiles, images per
second per chip and hours for the stage's images, from the same roofline ceiling as training.

The encoder is the Emu3 vision tokenizer's (the paper's; BAAI/Emu3-VisionTokenizer config.json,
2024): a conv encoder with base width 256, channel multipliers (1, 2, 2, 4), 2 residual blocks per
level, one self-attention block at the lowest resolution, 4 latent channels, downsampling 8 (512 px
-> 64 x 64 codes). Convolutions reach a lower share of peak than the LLM's matmuls: CONV_SHARE of
the target's ceiling (an assumption until a device check measures it).
"""

from __future__ import annotations

import dataclasses

EMU3_ENCODER = dict(ch=256, ch_mult=(1, 2, 2, 4), num_res_blocks=2, in_channels=3, z_channels=4)
CONV_SHARE = 0.5


def _conv(c_in: int, c_out: int, size: int, k: int = 3, stride: int = 1) -> float:
  return 2.0 * k * k * c_in * c_out * (size // stride) ** 2


def encoder_flops(image_size: int, ch: int, ch_mult, num_res_blocks: int, in_channels: int,
                  z_channels: int) -> float:
  """Forward FLOPs of one image through a VQGAN-style conv encoder (taming / MoVQ / Emu3 layout)."""
  size, flops = image_size, _conv(in_channels, ch, image_size)
  c = ch
  for level, mult in enumerate(ch_mult):
    out = ch * mult
    for _ in range(num_res_blocks):
      flops += _conv(c, out, size) + _conv(out, out, size) + (2.0 * c * out * size ** 2 if c != out else 0)
      c = out
    if level < len(ch_mult) - 1:
      flops += _conv(c, c, size, stride=2)
      size //= 2
  n = size * size                                     # mid: 2 res blocks + attention
  flops += 2 * 2 * _conv(c, c, size) + 4 * 2.0 * n * c * c + 2 * 2.0 * n * n * c
  return flops + _conv(c, z_channels, size) + 2.0 * z_channels * z_channels * n


@dataclasses.dataclass
class PrepareCost:
  tiles_per_image: int
  flops_per_image: float
  images_per_second_per_chip: float
  images: int
  hours: float


def prepare_cost(config, target, images: int, ceiling: float) -> PrepareCost:
  """Tokenizing `images` raw images of the config's stage on `target`."""
  d = config.data
  tiles = int(d.max_tiles) + (1 if int(d.max_tiles) > 1 and d.get("thumbnail", True) else 0)
  size = config.model.code_grid[0] * int(config.vq.downsample)
  flops = tiles * encoder_flops(size, **EMU3_ENCODER)
  rate = target.peak_flops * ceiling * CONV_SHARE / flops
  return PrepareCost(tiles_per_image=tiles, flops_per_image=flops, images_per_second_per_chip=rate,
                     images=images, hours=images / (rate * target.chips) / 3600)
