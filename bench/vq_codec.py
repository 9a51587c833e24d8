"""Image-tokenizer throughput: our Flax ports against the PyTorch references, same images, same run.

  python -m bench.vq_codec [--emu3_size 512] [--movq_size 256] [--images 2] [--families emu3,movq]

Emu3: transformers' Emu3VQVAE at its released shape (Emu3VQVAEConfig() defaults: 270M parameters,
32,768 codes, downsampling 8) against `ImageTokenizer` over vq/emu3.py. MoVQ: diffusers' VQModel with
Kandinsky 2.2's MoVQ shape (norm_type "spatial", channels 128-256-256-512, 16,384 codes) against
vq/vqgan.py. Random weights (throughput does not depend on them); both sides get the same uint8
images, torch through its usual float path ([-1, 1] in NCHW), ours through `encode`/`decode` with
the tokenizer's normalisation. Each side runs once untimed (compilation, allocator warm-up), then
`--repeats` timed passes over `--images` images; torch uses all intra-op threads. The code agreement
column checks both sides computed the same thing.
"""

from __future__ import annotations

import os
import time

import jax
import numpy as np
from absl import app, flags

from synergen_jax.vq import emu3, vqgan
from synergen_jax.vq.tokenizer import ImageTokenizer

FLAGS = flags.FLAGS
flags.DEFINE_string("families", "emu3,movq", "which tokenizers to time")
flags.DEFINE_integer("emu3_size", 512, "Emu3 image size")
flags.DEFINE_integer("movq_size", 256, "MoVQ image size")
flags.DEFINE_integer("images", 2, "images per timed pass (one batch)")
flags.DEFINE_integer("repeats", 1, "timed passes")

MOVQ = dict(in_channels=3, out_channels=3, block_out_channels=(128, 256, 256, 512),
            down_block_types=("DownEncoderBlock2D",) * 3 + ("AttnDownEncoderBlock2D",),
            up_block_types=("AttnUpDecoderBlock2D",) + ("UpDecoderBlock2D",) * 3,
            layers_per_block=2, latent_channels=4, num_vq_embeddings=16384, vq_embed_dim=4,
            norm_num_groups=32, norm_type="spatial")


def _timed(fn, repeats):
  fn()                                         # compile / warm up
  t0 = time.perf_counter()
  for _ in range(repeats):
    out = fn()
  return (time.perf_counter() - t0) / repeats, out


def _state(model):
  return {k: v.detach().float().numpy() for k, v in model.state_dict().items()
          if not k.endswith("num_batches_tracked")}


def build(name: str, size: int):
  """(torch model, our ImageTokenizer, torch encode fn, torch decode fn) with the same weights."""
  import torch
  torch.manual_seed(0)
  if name == "emu3":
    import transformers
    hf = transformers.Emu3VQVAEConfig()
    model = transformers.Emu3VQVAE(hf).eval()
    cfg = emu3.Emu3Config.from_hf(hf.to_dict(), "Emu3VQVAEConfig()")
    variables = emu3.params_from_state_dict(_state(model), cfg, "Emu3VQVAE")
    encode = lambda x: torch.stack(model.encode(x, image_sizes=[[size, size]] * len(x)).image_tokens)
    decode = lambda c: model.decode(c)
    family = "emu3"
  else:
    import diffusers
    model = diffusers.VQModel(sample_size=size, **MOVQ).eval()
    cfg = vqgan.VQGANConfig.from_hf(dict(model.config), "VQModel(MoVQ)")
    variables = vqgan.params_from_state_dict(_state(model), cfg, "VQModel")

    def encode(x):
      latents = model.encode(x).latents
      return model.quantize(latents)[2][2].reshape(len(x), size // 8, size // 8)

    def decode(c):
      n, h, w = c.shape
      q = model.quantize.get_codebook_entry(c.reshape(-1), (n, h, w, cfg.code_dim))
      return model.decode(q, force_not_quantize=True).sample
    family = "vqgan"
  tok = ImageTokenizer(family, cfg, variables, image_size=size, batch_size=FLAGS.images)
  params = sum(p.numel() for p in model.parameters())
  return model, tok, encode, decode, params


def main(argv):
  del argv
  import torch
  rows = []
  for name in FLAGS.families.split(","):
    size = FLAGS.emu3_size if name == "emu3" else FLAGS.movq_size
    model, tok, t_encode, t_decode, params = build(name, size)
    pixels = np.random.default_rng(0).integers(0, 256, (FLAGS.images, size, size, 3), np.uint8)
    x = torch.as_tensor(pixels.transpose(0, 3, 1, 2) / 127.5 - 1.0, dtype=torch.float32)
    with torch.no_grad():
      enc_t, codes_t = _timed(lambda: t_encode(x), FLAGS.repeats)
      dec_t, _ = _timed(lambda: t_decode(codes_t), FLAGS.repeats)
    enc_j, codes_j = _timed(lambda: tok.encode(pixels), FLAGS.repeats)
    dec_j, _ = _timed(lambda: tok.decode(codes_j), FLAGS.repeats)
    agree = float(np.mean(codes_j == codes_t.numpy().reshape(codes_j.shape)))
    n = FLAGS.images
    rows.append((name, size, params, n / enc_j, n / enc_t, n / dec_j, n / dec_t, agree))
  print(f"\n{jax.devices()[0].device_kind} ({os.cpu_count()} CPUs), torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads, jax {jax.__version__}; {FLAGS.images} images per pass")
  print("| tokenizer | size | params | encode img/s (ours) | encode img/s (torch) | decode img/s (ours) "
        "| decode img/s (torch) | codes agree |")
  print("|---|---|---|---|---|---|---|---|")
  for name, size, params, ej, et, dj, dt, agree in rows:
    print(f"| {name} | {size} | {params / 1e6:.0f}M | {ej:.3f} | {et:.3f} | {dj:.3f} | {dt:.3f} | "
          f"{agree:.4f} |")


if __name__ == "__main__":
  app.run(main)
