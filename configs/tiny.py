"""Tiny SynerGen-VL for tests: compiles and runs a train step in seconds on one CPU core.

  python -m synergen_jax.train --config configs/tiny.py:fold=2x2 --workdir /tmp/tiny

Arguments (`configs/tiny.py:fold=1x1,scan=true`): fold (FHxFW over the 4x4 code grid), scan (nn.scan
over layers), remat (none/full/dots/...), experts (vision experts on/off), stage (1, 2, sft: lets
`python -m synergen_jax.demo --config configs/tiny.py` chain the stages in seconds).
"""

from synergen_jax.core.config import base_config, parse_arg


def get_config(arg=None):
  arg = parse_arg(arg, fold=(2, 2), scan=False, remat="none", experts=True, stage="1")
  config = base_config(
      model=dict(text_vocab=64, num_layers=2, d_model=32, num_heads=4, num_kv_heads=2, head_dim=8,
                 mlp_dim=64, codebook_size=32, code_embed_dim=16, code_grid=(4, 4),
                 fold_mlp_hidden=64, scan_layers=arg.scan, remat_policy=arg.remat,
                 vision_experts=arg.experts),
      unfold=dict(num_layers=1, d_model=16, num_heads=2, num_kv_heads=1, head_dim=8, mlp_dim=32),
      seq_len=32, fold=arg.fold)
  config.train.batch_size = 8        # splits over the 8 fake test devices
  # Data: MNIST-5k resized to 16x16 -> 4x4 codes; a tokenizer that trains in seconds.
  config.data.update(eval_count=100, records_per_shard=2048)
  config.data.tasks.interleaved = 0.25
  config.vq.update(channels=1, width=8, code_dim=8, num_res_blocks=1, steps=300, batch_size=32,
                   eval_count=64, log_every=20, restart_every=20)
  config.train.steps = 30
  # No image previews at the held-out passes: every test that trains would compile their decoding;
  # the tests of previews turn them on (configs/demo.py keeps the default).
  config.train.preview_images = 0
  config.stage = arg.stage
  return config
