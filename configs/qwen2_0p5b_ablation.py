"""The paper's ablation preset: Qwen2-0.5B backbone, 256x256 images, fold 2x4.

  python -m synergen_jax.train --config configs/qwen2_0p5b_ablation.py --workdir DIR
  python -m synergen_jax.train --config configs/qwen2_0p5b_ablation.py:fold=1x1,tiles=1 --workdir DIR
  python -m synergen_jax.train --config configs/qwen2_0p5b_ablation.py:tiny --workdir /tmp/abl

Qwen2-0.5B shapes (from its config.json): 24 layers, d_model 896, 14 heads, 2 kv heads, head_dim 64,
SwiGLU 4864, RMSNorm eps 1e-6, RoPE theta 1e6, vocab 151,936, q/k/v biases, tied embeddings.
Images 256x256 with a downsampling-8 tokenizer (K = 32,768) give 32x32 codes, folded 2x4 -> 128 slots.
Our choices: code embedding width 896, fold MLP hidden 896, a 4-layer unfold head of the backbone's
block shape, sequence length 2,048.

Its text tokenizer is Qwen2's BPE `tokenizer.json` (`--config.data.tokenizer=DIR`, as imported by
convert.hf_import). Arguments: fold (FHxFW), tiles (InternVL dynamic-resolution tiles of an
understanding image, plus a thumbnail when above 1: Tab. 6 compares fold 1x1 with one 256x256 tile
against fold 2x4 with 7 tiles + thumbnail, 1,024 slots per image either way), stage (1, 2, sft),
scan, remat, and tiny: a stand-in of the same structure (vision experts, unfold head, the same
folds over an 8x8 code grid) that trains in minutes on 2 CPU cores on the embedded MNIST-5k digits,
for the sweeps' `runlocal` variants (configs/sweeps/).
"""

from synergen_jax.core.config import base_config, parse_arg


def get_config(arg=None):
  arg = parse_arg(arg, fold=(2, 4), tiles=1, stage="1", scan=True, remat="full", tiny=False)
  if arg.tiny:
    return _tiny(arg)
  block = dict(d_model=896, num_heads=14, num_kv_heads=2, head_dim=64, mlp_dim=4864)
  config = base_config(
      model=dict(text_vocab=151_936, num_layers=24, **block, norm_eps=1e-6, rope_theta=1_000_000.0,
                 qkv_bias=True, tie_embeddings=True, codebook_size=32_768, code_embed_dim=896,
                 code_grid=(32, 32), fold_mlp_hidden=896, scan_layers=arg.scan,
                 remat_policy=arg.remat, dtype="bfloat16"),
      unfold=dict(num_layers=4, **block),
      seq_len=2048, fold=arg.fold)
  config.train.batch_size = 64
  config.vq.downsample = 8   # 256 px -> 32x32 codes, as in the paper's ablation
  # FSDP over the whole slice: billions of parameters and their Adam moments are never copied whole
  # onto every chip, and a mesh that would replicate more than 1% of the parameter bytes fails first.
  config.mesh.update(data=1, fsdp=-1, tensor=1)
  config.train.max_replicated_fraction = 0.01
  return _common(config, arg)


def _tiny(arg):
  """Qwen2's structure (q/k/v biases, tied embeddings, GQA) at demo size on MNIST-5k 32x32 digits."""
  block = dict(d_model=64, num_heads=4, num_kv_heads=2, head_dim=16, mlp_dim=176)
  config = base_config(
      model=dict(text_vocab=512, num_layers=2, **block, norm_eps=1e-6, rope_theta=1_000_000.0,
                 qkv_bias=True, tie_embeddings=True, codebook_size=256, code_embed_dim=32,
                 code_grid=(8, 8), fold_mlp_hidden=64, scan_layers=arg.scan,
                 remat_policy="none"),
      unfold=dict(num_layers=1, d_model=32, num_heads=2, num_kv_heads=1, head_dim=16, mlp_dim=88),
      seq_len=256, fold=arg.fold)
  config.data.update(name="mnist5k", image_fit="pad")
  config.vq.update(channels=1, downsample=4, width=16, num_res_blocks=1, code_dim=16, steps=300,
                   batch_size=32, log_every=100)
  config.train.batch_size = 8
  config.train.preview_images = 0
  config.optim.update(learning_rate=2e-3, warmup_steps=10, weight_decay=0.0)
  return _common(config, arg)


def _common(config, arg):
  config.stage = arg.stage
  config.data.max_tiles = arg.tiles
  config.data.thumbnail = arg.tiles > 1
  return config
