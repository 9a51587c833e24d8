"""FID of a class-data model's generations against its held-out images, through the benchmark path
end to end: a `sample --prompts` job (the class names as prompts), PNG folders, eval/fid.py. Prints
a table.

  python -m bench.demo_fid --workdir workdirs/demo/sft --inception_weights FILE [--per_class 50]

With pytorch-fid's pt_inception-2015-12-05-6726825d.pth the numbers are FIDs as published ones are
computed. Without it (no download on a machine without internet), a random-weight state dict of the
same network (tests/eval/pytorch_fid_reference.py writes one) runs the same code, but its numbers
only compare runs scored with that same file. The floor row scores as many training-split images
against the same held-out images: what a model that reproduced the data exactly would get.
"""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "a trained workdir on a class dataset (the demo's sft stage)")
flags.DEFINE_string("inception_weights", None,
                    "pytorch-fid's weight file, or a random-weight state dict of that network")
flags.DEFINE_integer("per_class", 50, "images generated per class")
flags.DEFINE_float("cfg", 3.0, "guidance scale (the demo's evaluation uses 3)")
flags.DEFINE_integer("top_k", 20, "image sampling top-k (the demo's evaluation uses 20; 0 = off)")
flags.DEFINE_integer("batch_size", 16, "prompts per batch on each device")
flags.DEFINE_string("out_dir", None, "where the folders go (default: a temporary directory)")


def _save_folder(pixels: np.ndarray, folder: str) -> str:
  from synergen_jax.infer.jobs import save_png      # as the job writes the generated images
  os.makedirs(folder, exist_ok=True)
  for i, image in enumerate(pixels):
    save_png(image, os.path.join(folder, f"{i:05d}.png"))
  return folder


def real_images(loaded, per_class: int):
  """(held-out pixels, per_class x classes training-split pixels, class names, source name), the
  pixels as the model saw them."""
  from synergen_jax.data.decoding import decode_pairs
  from synergen_jax.eval.report import open_split
  source, settings, train_idx, eval_idx = open_split(loaded)
  held_out, _ = decode_pairs(source, eval_idx, settings)
  count = min(len(train_idx), per_class * max(1, len(source.class_names)))
  pick = np.sort(np.random.default_rng(loaded.config.data.seed).choice(train_idx, count,
                                                                       replace=False))
  train, _ = decode_pairs(source, pick, settings)
  return (np.stack([p.gen for p in held_out]), np.stack([p.gen for p in train]),
          list(source.class_names), source.name)


def main(argv):
  del argv
  from synergen_jax.eval import fid
  from synergen_jax.infer import jobs, loader
  from synergen_jax.infer.decode import Sampling
  out = FLAGS.out_dir or tempfile.mkdtemp(prefix="demo_fid_")
  os.makedirs(out, exist_ok=True)
  model = loader.load(FLAGS.workdir, mesh=loader.local_mesh())
  held_out, train, names, source = real_images(model, FLAGS.per_class)
  if not names:
    raise app.UsageError(f"{FLAGS.workdir}: its data ({source}) has no class names to prompt with")
  prompts = os.path.join(out, "prompts.jsonl")
  with open(prompts, "w") as f:
    for name in names:
      f.write(json.dumps({"prompt": name, "num": FLAGS.per_class}) + "\n")
  settings = jobs.JobSettings(cfg_scale=FLAGS.cfg, sampling=Sampling(top_k=FLAGS.top_k),
                              batch_size=FLAGS.batch_size)
  run = jobs.run_job(model, prompts, os.path.join(out, "generated"), settings, log=lambda _: None)
  reference = _save_folder(held_out, os.path.join(out, "held_out"))
  floor = _save_folder(train, os.path.join(out, "train"))
  stats = os.path.join(out, "held_out.npz")
  generated = fid.fid_between(os.path.join(out, "generated", "images"), reference,
                              FLAGS.inception_weights, save_reference=stats)
  real = fid.fid_between(floor, stats, FLAGS.inception_weights)
  speed = (f"generation {run['per_second']:.2f} images/s" if run["per_second"]
           else f"the {run['items']} images were generated before (resumed job)")
  print(f"\n{source}, step {model.step}, cfg {FLAGS.cfg}, top-k {FLAGS.top_k}; {speed} on "
        f"{model.mesh.devices.size} device(s); Inception weights {FLAGS.inception_weights}")
  print("| images | against | FID |")
  print("|---|---|---|")
  print(f"| {generated['generated_count']} generated | {generated['reference_count']} held-out "
        f"| {generated['fid']:.2f} |")
  print(f"| {real['generated_count']} training (floor) | {generated['reference_count']} held-out "
        f"| {real['fid']:.2f} |")


if __name__ == "__main__":
  flags.mark_flags_as_required(["workdir", "inception_weights"])
  app.run(main)
