"""An image tokenizer's weights -> an image-tokenizer workdir (prepare, sample and the trainer read it).

A released tokenizer folder (diffusers VQModel: taming VQGAN / MoVQ; transformers Emu3VQVAE; the
original Emu3-VisionTokenizer release), its family and architecture read from its config.json:

  python -m synergen_jax.convert.vq_import --hf_dir DIR --workdir OUT [--image_size 512]

A state dict of our own small tokenizer (vq/autoencoder.py), its shape from --config:

  python -m synergen_jax.convert.vq_import --weights vq.safetensors --config configs/X.py \
      --workdir OUT [--prefix vqmodel.] [--allow_pickle]

Then `python -m synergen_jax.train --config configs/X.py --config.vq.workdir=OUT ...`. What is read
and refused: synergen_jax/convert/vq_release.py (folders), synergen_jax/convert/vq_weights.py (ours).
OUT may be a bucket path (gs://...); --hf_dir and --weights are local.
"""

from __future__ import annotations

from absl import app, flags, logging

from synergen_jax.core import cli
from synergen_jax.core.config import validate_config
from synergen_jax.core.errors import ConfigError
from synergen_jax.convert import vq_release, vq_weights
from synergen_jax.vq import autoencoder as vq

FLAGS = flags.FLAGS
cli.define_config_flag()   # with --weights: its vq section gives the tokenizer's shape
flags.DEFINE_string("hf_dir", None, "a released tokenizer folder (config.json + safetensors)")
flags.DEFINE_integer("image_size", None, "with --hf_dir: the square image size to tokenize at "
                     "(default: the release's config)")
flags.DEFINE_string("weights", None, ".safetensors (or .pt/.bin/.ckpt with --allow_pickle)")
flags.DEFINE_string("workdir", None, "new image-tokenizer workdir")
flags.DEFINE_string("prefix", "", "key prefix to strip (e.g. 'vqmodel.')")
flags.DEFINE_bool("allow_pickle", False, "read pickle files (runs code from the file)")
flags.DEFINE_integer("background", 255, "padding grey level for config.data.image_fit=pad")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  if bool(FLAGS.hf_dir) == bool(FLAGS.weights):
    raise ConfigError("give either --hf_dir (a released tokenizer folder) or --weights with --config")
  if FLAGS.hf_dir:
    meta = vq_release.import_release(FLAGS.hf_dir, FLAGS.workdir, FLAGS.image_size)
    print(f"vq_import: {meta['family']} from {FLAGS.hf_dir} ({meta['tensors']} tensors, "
          f"{meta['parameters'] / 1e6:.1f}M parameters, {meta['image_size']}px) -> {FLAGS.workdir}")
    return
  config = FLAGS.config
  if config is None:
    raise ConfigError("--weights needs --config (its vq section gives the tokenizer's shape)")
  validate_config(config)
  vq_config = vq.VQConfig.from_config(config)
  state = vq_weights.read_state_dict(FLAGS.weights, FLAGS.allow_pickle, FLAGS.prefix)
  params = vq_weights.from_state_dict(state, vq_config, FLAGS.weights)
  vq_weights.write_tokenizer(FLAGS.workdir, vq_config, params, image_fit=config.data.image_fit,
                             background=FLAGS.background, source=FLAGS.weights)
  print(f"vq_import: {len(state)} tensors from {FLAGS.weights} -> {FLAGS.workdir} "
        f"(K={vq_config.codebook_size}, {vq_config.image_size}px -> {vq_config.grid}x{vq_config.grid})")


if __name__ == "__main__":
  flags.mark_flags_as_required(["workdir"])
  app.run(main)
