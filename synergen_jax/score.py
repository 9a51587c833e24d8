"""Log-probability of each next text token under a trained (or imported) model.

  python -m synergen_jax.score --workdir DIR --token_ids 1,2,3,...
  -> {"logprobs": [log p(t1 | t0), log p(t2 | t0 t1), ...], "step": N}

The ids are used as given (add <s> yourself); used to check imported weights against their source
and for perplexity. --workdir may be a bucket path (gs://...).
"""

from __future__ import annotations

import json

from absl import app, flags, logging

from synergen_jax.infer import loader
from synergen_jax.infer.scoring import next_token_logprobs

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "a training or import workdir")
flags.DEFINE_string("token_ids", None, "comma-separated text token ids")


def parse_ids(text: str) -> list[int]:
  try:
    return [int(t) for t in text.replace(" ", "").split(",") if t]
  except ValueError:
    raise app.UsageError(f"--token_ids={text!r} must be comma-separated integers") from None


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  ids = parse_ids(FLAGS.token_ids)
  model = loader.load(FLAGS.workdir)
  print(json.dumps({"logprobs": next_token_logprobs(model.mc, model.params, ids), "step": model.step}))


if __name__ == "__main__":
  flags.mark_flags_as_required(["workdir", "token_ids"])
  app.run(main)
