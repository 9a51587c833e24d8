"""Every config key, its value and what it means; and whether a config is valid.

  python -m synergen_jax.config --describe                       # declared defaults
  python -m synergen_jax.config --describe --config configs/synergen_vl_2b.py:stage=2 \
      --config.model.fold=2x4                                    # a config's values
  python -m synergen_jax.config --config configs/demo.py         # validate only

--describe prints one line per key, `section.key = value  # description`, from the declarations in
synergen_jax/core/keys.py. With --config the config is then validated as training would validate it
(every key declared, every type right, the rules between keys), before any device work.
"""

from __future__ import annotations

import sys

from absl import app, flags

from synergen_jax.core import cli, keys
from synergen_jax.core.config import validate_config
from synergen_jax.core.errors import ConfigError

cli.define_config_flag(None)
flags.DEFINE_bool("describe", False, "print every key: section.key = value  # description")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  config = FLAGS.config
  try:
    if config is not None:
      validate_config(config)   # first: it normalises values (fold=2x4) that --describe prints
  except ConfigError as e:
    if FLAGS.describe:
      print("\n".join(keys.describe(keys.ExperimentKeys, config)))
    sys.exit(f"config: {e}")
  if FLAGS.describe:
    print("\n".join(keys.describe(keys.ExperimentKeys, config)))
  elif config is not None:
    print(f"config: {cli.config_spec()} is valid")
  else:
    sys.exit("config: give --describe, --config FILE[:arg], or both")


if __name__ == "__main__":
  app.run(main)
