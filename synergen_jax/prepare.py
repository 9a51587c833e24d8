"""Pre-tokenizes the configured dataset into ArrayRecord shards + meta.json (data/writer.py).

  python -m synergen_jax.prepare --config configs/demo.py --out data/mnist5k --vq_workdir workdirs/vq

The image tokenizer comes from --vq_workdir (else config.vq.workdir): train one first with
python -m synergen_jax.train_vq. Prints the example counts per split and task and the skipped records
by reason.
"""

from __future__ import annotations

import json

from absl import app, flags, logging

from synergen_jax import cli
from synergen_jax.data.errors import DataError
from synergen_jax.data.writer import prepare
from synergen_jax.vq.tokenizer import ImageTokenizer

cli.define_config_flag()
flags.DEFINE_string("out", None, "output folder for shards and meta.json")
flags.DEFINE_string("vq_workdir", None, "image tokenizer workdir (default: config.vq.workdir)")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  config = flags.FLAGS.config
  vq_workdir = flags.FLAGS.vq_workdir or config.vq.workdir
  if not vq_workdir:
    raise DataError("prepare needs an image tokenizer: pass --vq_workdir DIR (a train_vq workdir) or "
                    "set config.vq.workdir")
  meta = prepare(config, flags.FLAGS.out, ImageTokenizer.load(vq_workdir, config.vq.encode_batch))
  print(json.dumps({k: meta[k] for k in ("source", "splits", "skipped", "skipped_total", "text_vocab",
                                         "seconds")}, indent=1))


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "out"])
  app.run(main)
