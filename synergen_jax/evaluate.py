"""Evaluates a trained workdir: the class-dataset report, or a benchmark suite.

  python -m synergen_jax.evaluate --workdir DIR [--count 500 --per_class 10 --cfg 7.5 --seed 0]
  python -m synergen_jax.evaluate --workdir DIR --suite coco_fid \
      --captions_from annotations/captions_val2014.json --count 30000 --seed 0 \
      --coco_images val2014 --inception_weights pt_inception-2015-12-05-6726825d.pth
  python -m synergen_jax.evaluate --workdir DIR --suite coco_fid --data prompts.jsonl \
      --reference REF_DIR_OR_STATS.npz --inception_weights pt_inception-2015-12-05-6726825d.pth
  python -m synergen_jax.evaluate --workdir DIR --suite vqa --data FILE.jsonl --benchmark textvqa
  python -m synergen_jax.evaluate --workdir DIR --suite vqa|caption --data FILE.jsonl
  python -m synergen_jax.evaluate --suite fid --generated DIR --reference DIR_OR_STATS.npz \
      --inception_weights FILE --out eval.json [--save_reference_stats REF.npz]

Without --suite: DIR/eval.json, DIR/eval_samples.png, DIR/eval_captions.png, what each number
means in synergen_jax/eval/report.py (every number comes with the held-out size and the seed; the
generation judge is trained once per dataset and cached). With --suite: the suite's numbers under its
name in --out (default DIR/eval.json; other keys are kept); see synergen_jax/eval/suites.py (the
COCO FID protocol: eval/coco_protocol.py; the VQA answer rules: eval/benchmarks.py). Run by several
processes, each does its share of the job and process 0 alone scores once all shares are done.
DIR, --out, --generated and --reference may be bucket paths (gs://...).
"""

from __future__ import annotations

import json
import os

from absl import app, flags, logging

from synergen_jax.core import storage
from synergen_jax.eval import benchmarks, suites
from synergen_jax.infer.decode import Sampling
from synergen_jax.infer.jobs import JobSettings
from synergen_jax.eval.report import evaluate_workdir, format_table

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "a training workdir")
flags.DEFINE_integer("count", 0, "held-out images to use (0 = the whole held-out split); --suite "
                     "coco_fid --captions_from: captions to draw (0 = 30000)")
flags.DEFINE_integer("per_class", 10, "generated images per class")
flags.DEFINE_float("cfg", 7.5, "classifier-free guidance scale for generation")
flags.DEFINE_float("temperature", 1.0, "image sampling temperature")
flags.DEFINE_integer("top_k", 0, "image sampling top-k (0 = off)")
flags.DEFINE_integer("seed", 0, "sampling seed; --suite coco_fid --captions_from: also the draw's")
flags.DEFINE_string("source_path", None, "raw jsonl file / image folder (data.name jsonl or folder)")
flags.DEFINE_enum("suite", None, suites.SUITES, "a benchmark suite instead of the class report")
flags.DEFINE_string("data", None, "--suite coco_fid / vqa / caption: the benchmark's jsonl")
flags.DEFINE_string("captions_from", None, "--suite coco_fid: draw the captions from this MSCOCO "
                    "captions file (annotations/captions_val2014.json) instead of --data")
flags.DEFINE_string("coco_images", None, "--suite coco_fid: the val2014 image folder; the reference "
                    "is the drawn images (statistics cached next to --out) instead of --reference")
flags.DEFINE_enum("benchmark", None, list(benchmarks.BENCHMARKS),
                  "--suite vqa: score with this benchmark's official answer rule")
flags.DEFINE_string("reference", None, "--suite coco_fid / fid: reference image folder or .npz stats")
flags.DEFINE_string("generated", None, "--suite fid: folder of generated images")
flags.DEFINE_string("inception_weights", None, "pytorch-fid's pt_inception-2015-12-05-6726825d.pth")
flags.DEFINE_string("save_reference_stats", None,
                    "--suite coco_fid / fid: write the reference folder's FID statistics here (.npz)")
flags.DEFINE_string("out", None, "--suite: the JSON file to merge the numbers into (default DIR/eval.json)")
flags.DEFINE_integer("per_prompt", 1, "--suite coco_fid: images per caption")
flags.DEFINE_integer("batch_size", 8, "--suite: prompts per step on each local device")
flags.DEFINE_integer("fsdp", 1, "--suite: shard the parameters over this many local devices")
flags.DEFINE_integer("max_new_tokens", 32, "--suite vqa / caption: longest answer")
flags.DEFINE_boolean("chat", None, "--suite vqa / caption: ask through the run's chat template and "
                     "stop at <|im_end|> (default: as the run was trained)")


def suite(out: str | None) -> dict | None:
  need = {"coco_fid": ("workdir", "inception_weights"),
          "vqa": ("workdir", "data"), "caption": ("workdir", "data"),
          "fid": ("generated", "reference")}[FLAGS.suite]
  missing = [f"--{name}" for name in need if not FLAGS[name].value]
  if missing:
    raise app.UsageError(f"--suite {FLAGS.suite} needs {', '.join(missing)}")
  if FLAGS.suite == "fid":
    if not FLAGS.out:
      raise app.UsageError("--suite fid has no workdir: give --out FILE.json")
    from synergen_jax.eval import fid
    return fid.fid_between(FLAGS.generated, FLAGS.reference, FLAGS.inception_weights,
                           save_reference=FLAGS.save_reference_stats)
  settings = JobSettings(
      num=FLAGS.per_prompt, cfg_scale=FLAGS.cfg, seed=FLAGS.seed, batch_size=FLAGS.batch_size,
      max_new_tokens=FLAGS.max_new_tokens, chat=FLAGS.chat,
      sampling=Sampling(temperature=FLAGS.temperature, top_k=FLAGS.top_k))
  if FLAGS.suite == "coco_fid":
    return suites.coco_fid(FLAGS.workdir, FLAGS.data, FLAGS.reference, FLAGS.inception_weights,
                           settings, FLAGS.fsdp, save_reference=FLAGS.save_reference_stats,
                           captions_from=FLAGS.captions_from, count=FLAGS.count,
                           coco_images=FLAGS.coco_images, out=out)
  if FLAGS.suite == "vqa":
    return suites.vqa(FLAGS.workdir, FLAGS.data, settings, FLAGS.fsdp, benchmark=FLAGS.benchmark)
  return suites.caption(FLAGS.workdir, FLAGS.data, settings, FLAGS.fsdp)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  if FLAGS.suite:
    out = FLAGS.out or (os.fspath(storage.path(FLAGS.workdir, "--workdir") / "eval.json")
                        if FLAGS.workdir else None)
    if out:         # an unreachable bucket fails now, not after the whole evaluation
      storage.check_reachable(out, "--out")
    result = suite(out)
    if result is None:      # a process other than 0: its share is done, process 0 writes the report
      print(f"evaluate: {FLAGS.suite}: this process's share is done; process 0 writes {out}")
      return
    suites.merge_into(out, FLAGS.suite, result)
    print(json.dumps({FLAGS.suite: result}, indent=1))
    print(f"evaluate: {FLAGS.suite} -> {out}")
    return
  if not FLAGS.workdir:
    raise app.UsageError("--workdir is required (without --suite fid)")
  report = evaluate_workdir(
      FLAGS.workdir, count=FLAGS.count or None, per_class=FLAGS.per_class, cfg_scale=FLAGS.cfg,
      seed=FLAGS.seed, sampling=Sampling(temperature=FLAGS.temperature, top_k=FLAGS.top_k),
      source_path=FLAGS.source_path)
  print(format_table(report))


if __name__ == "__main__":
  app.run(main)
