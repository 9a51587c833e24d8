"""The CPU demo: MNIST-5k digits (32x32, 8x8 codes at downsampling 4), captioning + generation.

  python -m synergen_jax.train --config configs/demo.py --workdir workdirs/demo

Data (until the trainer runs them for you):

  python -m synergen_jax.train_vq --config configs/demo.py --workdir workdirs/demo/vq    # ~100 s
  python -m synergen_jax.prepare --config configs/demo.py --out data/demo --vq_workdir workdirs/demo/vq

The tokenizer reaches held-out MSE 0.0068 (PSNR 21.7 dB) with 92% of its 512 codes in use; prepare
writes 10,138 training examples (caption, generation, interleaved) in ~7 s.

Shapes were chosen so one step is well under a second on 2 CPU cores (see bench/forward_backward.py)
and the 8x8 code grid folds 1x1, 2x2, 2x4 and 4x4 (`configs/demo.py:fold=2x4`). Text vocabulary 512 is
a small SentencePiece model over the captions plus special tokens; the codebook has 512 codes.
"""

from synergen_jax.config import base_config, parse_arg


def get_config(arg=None):
  arg = parse_arg(arg, fold=(2, 2), scan=False, remat="none")
  config = base_config(
      model=dict(text_vocab=512, num_layers=4, d_model=256, num_heads=4, num_kv_heads=2,
                 head_dim=64, mlp_dim=688, codebook_size=512, code_embed_dim=64, code_grid=(8, 8),
                 fold_mlp_hidden=256, scan_layers=arg.scan, remat_policy=arg.remat),
      unfold=dict(num_layers=2, d_model=128, num_heads=2, num_kv_heads=1, head_dim=64, mlp_dim=352),
      seq_len=128, fold=arg.fold)
  config.data.update(name="mnist5k", image_fit="pad")  # 28x28 centred on 32x32 keeps stroke scale
  config.data.tasks.interleaved = 0.25                  # "a 3, then a 7" documents
  config.vq.update(channels=1, downsample=4, width=16, num_res_blocks=2, code_dim=16, steps=600,
                 batch_size=32)
  config.train.batch_size = 16
  return config
