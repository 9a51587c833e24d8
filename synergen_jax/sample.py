"""Text -> image grid, or image -> caption / answer, from a trained workdir; or a batch job.

  python -m synergen_jax.sample --workdir DIR --prompt "seven" [--num 16 --cfg 7.5 --seed 0] --out x.png
  python -m synergen_jax.sample --workdir DIR --image x.png [--question "..."]
  python -m synergen_jax.sample --workdir DIR --prompts prompts.jsonl --out_dir OUT [--per_prompt 4]

The batch job (infer/jobs.py) reads {"prompt": ...} records (images) or {"image": ..., "question":
...} records (answers), runs on every local device and is resumable: rerun it to finish what a stop
left, with the same results as an uninterrupted run.

--workdir, --out, --out_dir and --image may be bucket paths (gs://...); every file is written whole
or not at all, and a batch job resumes on a bucket as it does on disk.

Generation reads config.data.generation_prompt followed by --prompt (the format training used) and
samples every image code with classifier-free guidance at scale --cfg against the "<UNCOND>" prompt;
--cfg 1 turns guidance off. Captioning decodes greedily unless --temperature is set. A run trained
on conversations (SFT on chat data) is asked through its chat template and its answer ends at
<|im_end|>; --chat=true|false overrides what the workdir records.
"""

from __future__ import annotations

from absl import app, flags, logging

from synergen_jax.core import storage
from synergen_jax.data import images as image_ops
from synergen_jax.infer import jobs, loader, tasks
from synergen_jax.infer.decode import Sampling

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "a training workdir (config.json + checkpoints)")
flags.DEFINE_string("prompt", None, "text to generate images of")
flags.DEFINE_integer("num", 16, "images to generate")
flags.DEFINE_float("cfg", 7.5, "classifier-free guidance scale (1 = off)")
flags.DEFINE_integer("seed", 0, "sampling seed")
flags.DEFINE_float("temperature", None, "sampling temperature (default: 1 for images, 0 = greedy "
                   "for text)")
flags.DEFINE_integer("top_k", 0, "keep the k most likely tokens/codes (0 = all)")
flags.DEFINE_float("top_p", 1.0, "nucleus sampling mass (1 = off)")
flags.DEFINE_string("out", "samples.png", "where the generated image grid goes")
flags.DEFINE_string("image", None, "an image file to caption (or to ask --question about)")
flags.DEFINE_string("question", None, "a question about --image instead of the caption prompt")
flags.DEFINE_integer("max_new_tokens", 32, "longest caption / answer")
flags.DEFINE_string("prompts", None, "a jsonl of generation or (image, question) records: batch job")
flags.DEFINE_string("out_dir", None, "where the batch job writes images/ and its index")
flags.DEFINE_integer("per_prompt", 1, "images per prompt record without a \"num\" field")
flags.DEFINE_integer("batch_size", 8, "batch job: prompts per step on each local device")
flags.DEFINE_integer("fsdp", 1, "batch job: shard the parameters over this many local devices")
flags.DEFINE_boolean("chat", None, "ask --image / answer records through the run's chat template and "
                     "stop at <|im_end|> (default: as the run was trained, see infer/chat.py)")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  if sum(x is not None for x in (FLAGS.prompt, FLAGS.image, FLAGS.prompts)) != 1:
    raise app.UsageError("give exactly one of --prompt (text -> image), --image (image -> text) or "
                         "--prompts FILE.jsonl (a batch job)")
  if FLAGS.prompts is not None:
    return batch_job()
  if FLAGS.prompt is not None:      # an unreachable bucket fails now, not after generating
    storage.check_reachable(FLAGS.out, "--out")
  model = loader.load(FLAGS.workdir)
  if FLAGS.prompt is not None:
    sampling = Sampling(temperature=1.0 if FLAGS.temperature is None else FLAGS.temperature,
                        top_k=FLAGS.top_k, top_p=FLAGS.top_p)
    pixels = tasks.generate(model, [FLAGS.prompt] * FLAGS.num, cfg_scale=FLAGS.cfg,
                            sampling=sampling, seed=FLAGS.seed)
    image_ops.save_grid(pixels, FLAGS.out)
    print(f"sample: {FLAGS.num} images of {FLAGS.prompt!r} (cfg {FLAGS.cfg}, seed {FLAGS.seed}, "
          f"step {model.step}) -> {FLAGS.out}")
  else:
    sampling = Sampling(temperature=FLAGS.temperature or 0.0, top_k=FLAGS.top_k, top_p=FLAGS.top_p)
    codes = tasks.image_codes(model, image_ops.decode(FLAGS.image))
    print(tasks.caption(model, [codes], question=FLAGS.question, sampling=sampling,
                        max_new_tokens=FLAGS.max_new_tokens, seed=FLAGS.seed, chat=FLAGS.chat)[0])


def batch_job():
  if not FLAGS.out_dir:
    raise app.UsageError("--prompts needs --out_dir (where images/ and the index go)")
  storage.check_reachable(FLAGS.out_dir, "--out_dir")     # before the model is loaded
  model = loader.load(FLAGS.workdir, mesh=loader.local_mesh(FLAGS.fsdp))
  settings = jobs.JobSettings(
      num=FLAGS.per_prompt, cfg_scale=FLAGS.cfg, seed=FLAGS.seed, batch_size=FLAGS.batch_size,
      max_new_tokens=FLAGS.max_new_tokens, chat=FLAGS.chat,
      sampling=Sampling(temperature=1.0 if FLAGS.temperature is None else FLAGS.temperature,
                        top_k=FLAGS.top_k, top_p=FLAGS.top_p),
      answer_sampling=Sampling(temperature=FLAGS.temperature or 0.0, top_k=FLAGS.top_k,
                               top_p=FLAGS.top_p))
  result = jobs.run_job(model, FLAGS.prompts, FLAGS.out_dir, settings)
  print(f"sample: {result['generated']} new {result['kind']} items ({result['done_before']} already "
        f"done) in {result['seconds']:.1f} s -> {FLAGS.out_dir} (step {model.step})")


if __name__ == "__main__":
  flags.mark_flags_as_required(["workdir"])
  app.run(main)
