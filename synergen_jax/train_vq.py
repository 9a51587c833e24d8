"""Trains the image tokenizer on the configured source (the library: synergen_jax/vq/training.py).

  python -m synergen_jax.train_vq --config configs/demo.py --workdir workdirs/demo/vq

Writes to the workdir: `vq_config.json` (what `ImageTokenizer.load` rebuilds the model from), Orbax
checkpoints in `checkpoints/`, `vq_metrics.jsonl`, `recon.png` (held-out originals above their
reconstructions) and `vq_report.json`: reconstruction MSE / PSNR and codebook usage on the held-out
images of the split `prepare` also holds out. The report is printed as JSON.
"""

from __future__ import annotations

import json

from absl import app, flags, logging

from synergen_jax.core import cli
from synergen_jax.vq import training

cli.define_config_flag()
flags.DEFINE_string("workdir", None, "where the tokenizer is written")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)  # Orbax logs every checkpoint step at INFO
  print(json.dumps(training.train(flags.FLAGS.config, flags.FLAGS.workdir), indent=1))


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
