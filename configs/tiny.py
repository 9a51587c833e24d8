"""Tiny SynerGen-VL for tests: compiles and runs a train step in seconds on one CPU core.

  python -m synergen_jax.train --config configs/tiny.py:fold=2x2 --workdir /tmp/tiny

Arguments (`configs/tiny.py:fold=1x1,scan=true`): fold (FHxFW over the 4x4 code grid), scan (nn.scan
over layers), remat (none/full/dots/...), experts (vision experts on/off).
"""

from synergen_jax.config import base_config, parse_arg


def get_config(arg=None):
  arg = parse_arg(arg, fold=(2, 2), scan=False, remat="none", experts=True)
  config = base_config(
      model=dict(text_vocab=64, num_layers=2, d_model=32, num_heads=4, num_kv_heads=2, head_dim=8,
                 mlp_dim=64, codebook_size=32, code_embed_dim=16, code_grid=(4, 4),
                 fold_mlp_hidden=64, scan_layers=arg.scan, remat_policy=arg.remat,
                 vision_experts=arg.experts),
      unfold=dict(num_layers=1, d_model=16, num_heads=2, num_kv_heads=1, head_dim=8, mlp_dim=32),
      seq_len=32, fold=arg.fold)
  config.train.batch_size = 4
  config.train.steps = 30
  return config
