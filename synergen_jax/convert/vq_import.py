"""A VQGAN-style image tokenizer state dict -> an image-tokenizer workdir (prepare / sample read it).

  python -m synergen_jax.convert.vq_import --weights vq.safetensors --config configs/X.py \
      --workdir OUT [--prefix vqmodel.] [--allow_pickle]
  python -m synergen_jax.train --config configs/X.py --config.vq.workdir=OUT ...

The architecture comes from --config (config.vq and config.model's codebook_size / code_grid); the
naming map and what cannot be imported: synergen_jax/convert/vq_weights.py.
"""

from __future__ import annotations

from absl import app, flags, logging

from synergen_jax import cli
from synergen_jax.config import validate_config
from synergen_jax.convert import vq_weights
from synergen_jax.vq import autoencoder as vq

FLAGS = flags.FLAGS
cli.define_config_flag()   # its vq section gives the tokenizer's shape
flags.DEFINE_string("weights", None, ".safetensors (or .pt/.bin/.ckpt with --allow_pickle)")
flags.DEFINE_string("workdir", None, "new image-tokenizer workdir")
flags.DEFINE_string("prefix", "", "key prefix to strip (e.g. 'vqmodel.')")
flags.DEFINE_bool("allow_pickle", False, "read pickle files (runs code from the file)")
flags.DEFINE_integer("background", 255, "padding grey level for config.data.image_fit=pad")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  config = FLAGS.config
  validate_config(config)
  vq_config = vq.VQConfig.from_config(config)
  state = vq_weights.read_state_dict(FLAGS.weights, FLAGS.allow_pickle, FLAGS.prefix)
  params = vq_weights.from_state_dict(state, vq_config, FLAGS.weights)
  vq_weights.write_tokenizer(FLAGS.workdir, vq_config, params, image_fit=config.data.image_fit,
                             background=FLAGS.background, source=FLAGS.weights)
  print(f"vq_import: {len(state)} tensors from {FLAGS.weights} -> {FLAGS.workdir} "
        f"(K={vq_config.codebook_size}, {vq_config.image_size}px -> {vq_config.grid}x{vq_config.grid})")


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "weights", "workdir"])
  app.run(main)
