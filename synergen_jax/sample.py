"""Text -> image grid, or image -> caption / answer, from a trained workdir.

  python -m synergen_jax.sample --workdir DIR --prompt "seven" [--num 16 --cfg 7.5 --seed 0] --out x.png
  python -m synergen_jax.sample --workdir DIR --image x.png [--question "..."]

Generation reads config.data.generation_prompt followed by --prompt (the format training used) and
samples every image code with classifier-free guidance at scale --cfg against the "<UNCOND>" prompt;
--cfg 1 turns guidance off. Captioning decodes greedily unless --temperature is set.
"""

from __future__ import annotations

from absl import app, flags, logging

from synergen_jax.data import images as image_ops
from synergen_jax.infer import loader, tasks
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


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  if (FLAGS.prompt is None) == (FLAGS.image is None):
    raise app.UsageError("give exactly one of --prompt (text -> image) or --image (image -> text)")
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
                        max_new_tokens=FLAGS.max_new_tokens, seed=FLAGS.seed)[0])


if __name__ == "__main__":
  flags.mark_flags_as_required(["workdir"])
  app.run(main)
