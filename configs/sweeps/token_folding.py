"""The paper's Tab. 6 on the Qwen2-0.5B ablation config: no folding vs fold 2x4 with dynamic
resolution, at equal length per understanding image.

  python launch/sweep.py --sweep configs/sweeps/token_folding.py --workdir gs://b/tab6 --print_only \
      --config.data.tokenizer=ckpt/qwen2/hf_files --config.vq.workdir=tok/vq256 \
      --config.data.path=data/abl
  python launch/sweep.py --sweep configs/sweeps/token_folding.py:runlocal --workdir /tmp/tab6

Points: `nofold_256` (fold 1x1, one 256x256 tile: 32x32 = 1,024 slots per image) and
`fold_2x4_dynamic` (fold 2x4, 7 InternVL tiles + a thumbnail: 8 x 128 = 1,024 slots). Each point is
evaluated by the benchmark suites of `python -m synergen_jax.evaluate` (caption, VQA, COCO FID) on the
files named by the sweep's arguments (`bench=DIR` holds caption.jsonl, vqa.jsonl, coco_prompts.jsonl,
coco_ref.npz and the Inception weights pt_inception.pth; see docs/inference.md for their formats).
`runlocal` trains the config's tiny stand-in on MNIST-5k digits (`tiny`: 8x8 codes, so the slot
counts are 64 vs 5 x 8 there, not equal) and evaluates with the class report, a few minutes on 2 CPU
cores.
"""

import ml_collections

from synergen_jax.core.config import parse_arg

POINTS = (("nofold_256", "fold=1x1,tiles=1"), ("fold_2x4_dynamic", "fold=2x4,tiles=7"))


def suites(bench: str) -> list[dict]:
  return [dict(suite="caption", data=f"{bench}/caption.jsonl"),
          dict(suite="vqa", data=f"{bench}/vqa.jsonl"),
          dict(suite="coco_fid", data=f"{bench}/coco_prompts.jsonl", reference=f"{bench}/coco_ref.npz",
               inception_weights=f"{bench}/pt_inception.pth")]


def get_sweep(arg=None):
  arg = parse_arg(arg, runlocal=False, bench="benchmarks", stage="1")
  sweep = ml_collections.ConfigDict()
  sweep.name = "token_folding"
  sweep.config = "configs/qwen2_0p5b_ablation.py"
  tiny = ",tiny=true" if arg.runlocal else ""
  sweep.points = [dict(name=name, arg=f"{a},stage={arg.stage}{tiny}", overrides={})
                  for name, a in POINTS]
  sweep.evaluate = dict(suites=suites(arg.bench), cfg_scale=3.0, top_k=0)
  if arg.runlocal:
    for p in sweep.points:
      p["overrides"] = {"train.steps": 30, "train.log_every": 10, "train.checkpoint_every": 30,
                        "train.eval_batches": 2}
    sweep.evaluate = dict(count=40, per_class=2, cfg_scale=3.0, top_k=20)
  return sweep
