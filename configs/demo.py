"""The CPU demo: MNIST-5k digits (32x32, 8x8 codes at downsampling 4), captioning + generation.

  python -m synergen_jax.demo --workdir workdirs/demo       # all stages + evaluation, ~10.5 min, 2 cores
  python -m synergen_jax.train --config configs/demo.py:stage=1 --workdir workdirs/demo/stage1
  python -m synergen_jax.evaluate --workdir workdirs/demo/sft --cfg 3 --top_k 20 --per_class 20

End to end from an empty cache (tokenizer, prepare, 150 stage-1 + 250 stage-2 + 550 SFT steps,
evaluation) 10.5-14 min on 2 cores, by machine. Result after SFT, 500 held-out digits, seed 0:
greedy captions name the right digit 0.894, zero-shot classification 0.904; generated digits (CFG 3,
top-k 20, 200 images) are the prompted digit for the judge 0.790, Frechet distance 35.7 (real-data
floor 17.5). Fold 1x1 with the same steps (an earlier revision): 0.624 / 0.542 / 0.380.

Data (until the trainer runs them for you):

  python -m synergen_jax.train_vq --config configs/demo.py --workdir workdirs/demo/vq    # ~100 s
  python -m synergen_jax.prepare --config configs/demo.py --out data/demo --vq_workdir workdirs/demo/vq

The tokenizer reaches held-out MSE 0.0068 (PSNR 21.7 dB) with 92% of its 512 codes in use; prepare
writes 14,609 training examples (9,000 caption, 4,500 generation, 1,109 interleaved) in ~5 s.

Shapes were chosen so one step is well under a second on 2 CPU cores (see bench/forward_backward.py)
and the 8x8 code grid folds 1x1, 2x2, 2x4 and 4x4 (`configs/demo.py:fold=2x4`). Text vocabulary 512 is
a small SentencePiece model over the captions plus special tokens; the codebook has 512 codes.
"""

from synergen_jax.core.config import base_config, parse_arg


def get_config(arg=None):
  arg = parse_arg(arg, fold=(2, 2), stage="1", scan=False, remat="none")
  config = base_config(
      model=dict(text_vocab=512, num_layers=4, d_model=256, num_heads=4, num_kv_heads=2,
                 head_dim=64, mlp_dim=688, codebook_size=512, code_embed_dim=64, code_grid=(8, 8),
                 fold_mlp_hidden=256, scan_layers=arg.scan, remat_policy=arg.remat),
      unfold=dict(num_layers=2, d_model=128, num_heads=2, num_kv_heads=1, head_dim=64, mlp_dim=352),
      seq_len=128, fold=arg.fold)
  config.data.update(name="mnist5k", image_fit="pad")  # 28x28 centred on 32x32 keeps stroke scale
  config.data.tasks.update(caption=2.0, interleaved=0.25)   # two captions per image; "a 3, then a 7" documents
  config.data.num_workers = 1          # one Grain worker: 52 -> 66 examples/s, data wait 5% -> 1.5%
  config.vq.update(channels=1, downsample=4, width=16, num_res_blocks=2, code_dim=16, steps=600,
                 batch_size=32)
  config.train.batch_size = 16
  # Every slot of a row may be an image-target window. The derived budget (40 windows here) admits
  # at most two generated images per 128-slot row; with this, the demo's generation prompt accuracy
  # was 0.800 instead of 0.705 and its Frechet distance 47.9 instead of 54.8.
  config.model.unfold_capacity = 128
  # Progressive alignment, shortened for a CPU: stage 1 (image parts + new tokens), stage 2 (+ all
  # attention), then SFT (everything), each from the previous stage's parameters (python -m
  # synergen_jax.demo chains them). The paper starts from a pretrained LLM; here the LLM is random,
  # so its text embedding, text FFNs and LM head only learn in SFT, which gets the most steps.
  config.stage = arg.stage
  config.train.update(steps={"1": 150, "2": 250, "sft": 550}[arg.stage], log_every=25,
                      checkpoint_every=100)
  config.optim.update(learning_rate=2e-3, warmup_steps=30, weight_decay=0.0,
                      schedule="constant" if arg.stage == "1" else "cosine")
  return config
