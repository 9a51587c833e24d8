"""What every command line shares: `--config file.py[:arg]` with `--config.a.b=v` overrides.

Every CLI, benchmark and sweep defines its config flag with `define_config_flag` (ml_collections'
config file flag, locked: an override of a key that does not exist is an error). Drivers that run
one config file several times with different `get_config` arguments (the demo's stages, a sweep's
points, the fold-ratio benchmark) call `reload(...)`: the same file, more arguments, the same
`--config.a.b=v` overrides.
"""

from __future__ import annotations

from typing import Any

import ml_collections
from absl import flags
from ml_collections import config_flags

from synergen_jax.core.config import load_config
from synergen_jax.core.errors import ConfigError

HELP = "experiment config file[:arg] (configs/*.py); override any value with --config.a.b=v"


def define_config_flag(default: str | None = None) -> None:
  config_flags.DEFINE_config_file("config", default, HELP, lock_config=True)


def config_spec() -> str | None:
  """The --config value as given, `path.py[:arg]` (None when the flag has no value)."""
  if flags.FLAGS.config is None:
    return None
  return config_flags.get_config_filename(flags.FLAGS["config"])


def overrides() -> dict[str, Any]:
  """The --config.a.b=v values given on the command line, as {"a.b": v}."""
  if flags.FLAGS.config is None:
    return {}
  return dict(config_flags.get_override_values(flags.FLAGS["config"]))


def _arg_items(arg: str) -> dict[str, str]:
  return dict(item.split("=", 1) if "=" in item else (item, "true")
              for item in filter(None, arg.split(",")))


def with_args(spec: str, more: str = "", **args) -> str:
  """`path.py:k1=v1` + `k2=v2` (a get_config argument string) + k3=v3 ->
  `path.py:k1=v1,k2=v2,k3=v3`; a key given again takes the new value."""
  path, _, arg = spec.partition(":")
  items = _arg_items(arg)
  items.update(_arg_items(more))
  items.update({k: str(v) for k, v in args.items()})
  return path + (":" + ",".join(f"{k}={v}" for k, v in items.items()) if items else "")


def apply_overrides(config: ml_collections.ConfigDict, values: dict[str, Any],
                    where: str = "override ") -> ml_collections.ConfigDict:
  """Sets dotted keys ({"train.steps": 40}) on `config`; a key the config lacks is a ConfigError."""
  for key, value in values.items():
    *parents, leaf = key.split(".")
    node = config
    for p in parents:
      if p not in node:
        raise ConfigError(f"{where}{key}: the config has no section {p!r}")
      node = node[p]
    if leaf not in node:
      raise ConfigError(f"{where}{key}: not a config key (keys here: {sorted(node.keys())})")
    node[leaf] = value
  return config


def reload(spec: str | None = None, values: dict[str, Any] | None = None,
           **args) -> ml_collections.ConfigDict:
  """The config file of `spec` (default: --config) loaded with more get_config `args`, then the
  `values` overrides (default: the command line's --config.a.b=v)."""
  spec = config_spec() if spec is None else spec
  values = overrides() if values is None else values
  return apply_overrides(load_config(with_args(spec, **args)), values, "--config.")
