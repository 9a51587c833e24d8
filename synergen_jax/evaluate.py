"""Evaluates a trained workdir and writes DIR/eval.json, DIR/eval_samples.png, DIR/eval_captions.png.

  python -m synergen_jax.evaluate --workdir DIR [--count 500 --per_class 10 --cfg 7.5 --seed 0]

What each number means: synergen_jax/infer/report.py. Every number comes with the held-out size
and the seed; the generation judge is trained once per dataset and cached.
"""

from __future__ import annotations

from absl import app, flags, logging

from synergen_jax.infer.decode import Sampling
from synergen_jax.infer.report import evaluate_workdir, format_table

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "a training workdir")
flags.DEFINE_integer("count", 0, "held-out images to use (0 = the whole held-out split)")
flags.DEFINE_integer("per_class", 10, "generated images per class")
flags.DEFINE_float("cfg", 7.5, "classifier-free guidance scale for generation")
flags.DEFINE_float("temperature", 1.0, "image sampling temperature")
flags.DEFINE_integer("top_k", 0, "image sampling top-k (0 = off)")
flags.DEFINE_integer("seed", 0, "sampling seed")
flags.DEFINE_string("source_path", None, "raw jsonl file / image folder (data.name jsonl or folder)")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  report = evaluate_workdir(
      FLAGS.workdir, count=FLAGS.count or None, per_class=FLAGS.per_class, cfg_scale=FLAGS.cfg,
      seed=FLAGS.seed, sampling=Sampling(temperature=FLAGS.temperature, top_k=FLAGS.top_k),
      source_path=FLAGS.source_path)
  print(format_table(report))


if __name__ == "__main__":
  flags.mark_flags_as_required(["workdir"])
  app.run(main)
