"""python -m synergen_jax.train --config configs/X.py[:arg] --workdir DIR [--config.a.b=v ...]

Prepares the configured dataset on first use (training the image tokenizer if needed) into a cache,
then trains (the config's image side follows the image tokenizer or prepared data it names:
prepare/image_side.py); rerunning the same command resumes from DIR's latest complete checkpoint. Started as
one of several processes (SYNERGEN_* variables, see parallel/distributed.py; launch/*.sh set them),
it joins them first: every process reads its own data shards and only process 0 logs.

Exit status: 0 done, 1 failed, 3 another process failed first, 75 preempted (SIGTERM; a checkpoint
was saved, rerun to resume). See parallel/failure.py.
"""

import sys

from absl import app, flags, logging

from synergen_jax.core import cli
from synergen_jax.parallel import failure
from synergen_jax.parallel.distributed import initialize_from_env
from synergen_jax.prepare import image_side
from synergen_jax.train.loop import log, train

cli.define_config_flag()
flags.DEFINE_string("workdir", None, "where checkpoints, metrics.jsonl and events go")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)   # Orbax logs every save at INFO
  initialize_from_env()                    # one of several processes: join them before any JAX call
  watchdog = failure.Watchdog()            # another process's failure stops this one too
  try:
    # The image side (code grid, codebook, channels) comes from the run's image tokenizer or data.
    for line in image_side.follow(flags.FLAGS.config, cli.overrides()):
      log(f"train: {line}")
    result = train(flags.FLAGS.config, flags.FLAGS.workdir)
  except failure.Preempted:
    watchdog.stop()
    sys.exit(failure.EXIT_PREEMPTED)
  except BaseException as e:               # KeyboardInterrupt too: the others must hear of it
    failure.fail(e)
  watchdog.stop()
  log(f"train: done at step {result['step']}")


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
