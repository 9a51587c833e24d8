"""The paper's ablation preset: Qwen2-0.5B backbone, 256x256 images, fold 2x4.

  python -m synergen_jax.train --config configs/qwen2_0p5b_ablation.py --workdir DIR

Qwen2-0.5B shapes (from its config.json): 24 layers, d_model 896, 14 heads, 2 kv heads, head_dim 64,
SwiGLU 4864, RMSNorm eps 1e-6, RoPE theta 1e6, vocab 151,936, q/k/v biases, tied embeddings.
Images 256x256 with a downsampling-8 tokenizer (K = 32,768) give 32x32 codes, folded 2x4 -> 128 slots.
Our choices: code embedding width 896, fold MLP hidden 896, a 4-layer unfold head of the backbone's
block shape, sequence length 2,048.
"""

from synergen_jax.core.config import base_config, parse_arg


def get_config(arg=None):
  arg = parse_arg(arg, fold=(2, 4), scan=True, remat="full")
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
  return config
