"""The shared command line: --config file.py[:arg] with --config.a.b=v overrides, everywhere."""

import os
import subprocess
import sys

import pytest

from helpers import ROOT, config_path
from synergen_jax.core import cli
from synergen_jax.core.config import load_config
from synergen_jax.core.errors import ConfigError


def test_with_args_merges_and_a_repeated_key_takes_the_new_value():
  assert cli.with_args("c.py") == "c.py"
  assert cli.with_args("c.py", stage=2) == "c.py:stage=2"
  assert cli.with_args("c.py:fold=2x2,scan", "stage=sft", fold="1x1") == "c.py:fold=1x1,scan=true,stage=sft"


def test_reload_applies_the_args_and_the_overrides():
  config = cli.reload(config_path("tiny.py") + ":fold=1x1", {"train.steps": 7, "model.unfold.d_model": 24},
                      stage="sft")
  assert config.stage == "sft" and tuple(config.model.fold) == (1, 1)
  assert config.train.steps == 7 and config.model.unfold.d_model == 24
  assert load_config(config_path("tiny.py")).train.steps == 30     # the file itself is untouched


@pytest.mark.parametrize("key, message", [
    ("train.stepz", r"train.stepz: not a config key"),
    ("trainz.steps", r"trainz.steps: the config has no section 'trainz'"),
])
def test_an_override_of_a_missing_key_is_named(key, message):
  with pytest.raises(ConfigError, match=message):
    cli.reload(config_path("tiny.py"), {key: 1})


def _run(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
  return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=300)


def test_summary_takes_config_args_and_overrides():
  out = _run("synergen_jax.summary", "--config", "configs/tiny.py:fold=1x1",
             "--config.model.code_grid=(8, 8)", "--config.data.seq_len=80", "--steps", "0")
  assert out.returncode == 0, out.stderr[-2000:]
  # fold 1x1 over the overridden 8x8 grid: 64 slots per image
  assert "fold 1x1, code grid 8x8 -> 64 slots per image" in out.stdout
  # the override reaches validation: the default 32-slot rows cannot hold a 64-slot image
  short = _run("synergen_jax.summary", "--config", "configs/tiny.py:fold=1x1",
               "--config.model.code_grid=(8, 8)", "--steps", "0")
  assert short.returncode != 0 and "config.data.seq_len=32 cannot hold one image" in short.stderr
  bad = _run("synergen_jax.summary", "--config", "configs/tiny.py", "--config.model.foldd=2", "--steps", "0")
  assert bad.returncode != 0 and "foldd" in bad.stderr
