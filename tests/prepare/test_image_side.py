"""The config's image side follows its image tokenizer or prepared data; command-line values that
disagree are refused naming both."""

import pytest

from synergen_jax.core.errors import ConfigError
from synergen_jax.prepare import image_side
from synergen_jax.vq.tokenizer import ImageTokenizer


def _stranger(tiny_data):
  """tiny_data's config with every image-side value wrong, as a config file written for another
  tokenizer (e.g. the paper's 2B config used with an imported Emu3 tokenizer) would have them."""
  config = tiny_data["config"].copy_and_resolve_references()
  config.model.code_grid = (32, 32)
  config.model.codebook_size = 32_768
  config.vq.channels = 3 if config.vq.channels == 1 else 1
  config.vq.downsample = 16
  return config


def test_the_image_side_comes_from_the_named_tokenizer(tiny_data):
  truth = tiny_data["config"]
  vq_dir = tiny_data["vq_dir"]
  config = _stranger(tiny_data)
  notes = image_side.follow(config, vq_workdir=vq_dir)
  assert len(notes) == 4 and all(vq_dir in n for n in notes)
  vq = ImageTokenizer.load(vq_dir)
  assert tuple(config.model.code_grid) == (vq.grid, vq.grid) == tuple(truth.model.code_grid)
  assert config.model.codebook_size == vq.codebook_size
  assert config.vq.channels == vq.channels
  assert config.vq.downsample * vq.grid == vq.image_size
  assert image_side.follow(config, vq_workdir=vq_dir) == []       # nothing left to change


def test_without_a_named_tokenizer_the_prepared_data_says(tiny_data):
  config = _stranger(tiny_data)
  config.vq.workdir = None
  notes = image_side.follow(config)
  assert notes and all(config.data.path in n for n in notes)
  truth = tiny_data["config"]
  assert tuple(config.model.code_grid) == tuple(truth.model.code_grid)
  for key in ("model.codebook_size", "vq.channels", "vq.downsample"):
    section, name = key.split(".")
    assert config[section][name] == truth[section][name], key


def test_a_command_line_value_that_disagrees_is_refused_naming_both(tiny_data):
  config = _stranger(tiny_data)
  config.vq.workdir = None
  with pytest.raises(ConfigError, match=r"--config.model.codebook_size=32768 disagrees with the "
                                        r"prepared data at .*which has \d+"):
    image_side.follow(config, explicit={"model.codebook_size"})


def test_prepare_and_train_commands_on_an_imported_tokenizer_need_no_image_side_flags(
    tiny_data, tmp_path):
  """The run a new user tries: a config file written for another tokenizer, an image tokenizer
  given to prepare, webdataset shards and no eval path. prepare takes the image side from the
  tokenizer, train from the prepared data; each says so, and training runs with held-out metrics
  off to its final checkpoint."""
  import json
  import os
  import subprocess
  import sys

  from helpers import ROOT, config_path, write_webdataset

  other = tmp_path / "other_tokenizer.py"        # tiny.py as written for a 32x32-code, RGB tokenizer
  other.write_text(
      "from synergen_jax.core.config import load_config\n"
      "def get_config(arg=None):\n"
      f"  config = load_config({config_path('tiny.py')!r})\n"
      "  config.model.update(code_grid=(32, 32), codebook_size=32768)\n"
      "  config.vq.update(channels=3, downsample=8)\n"
      "  return config\n")
  run = lambda *args: subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                                     timeout=600, cwd=ROOT)
  prepared, workdir = tmp_path / "prepared", tmp_path / "run"
  done = run("synergen_jax.prepare", "--config", str(other), "--out", str(prepared),
             "--vq_workdir", tiny_data["vq_dir"], "--config.data.name=webdataset",
             f"--config.data.path={write_webdataset(tmp_path / 'a.tar')}",
             f"--config.data.tokenizer={tiny_data['data_dir']}")
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
  assert "prepare: config.model.code_grid: (32, 32) -> (4, 4) (from the image tokenizer at" in done.stdout
  done = run("synergen_jax.train", "--config", str(other), "--workdir", str(workdir),
             f"--config.data.path={prepared}", "--config.train.steps=2", "--config.train.log_every=1")
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
  assert "train: config.vq.channels: 3 -> 1 (from the prepared data at" in done.stdout
  assert "held-out metrics and previews are off" in done.stdout
  assert "train: done at step 2" in done.stdout
  saved = json.loads((workdir / "config.json").read_text())
  vq = tiny_data["image_tokenizer"]
  assert tuple(saved["model"]["code_grid"]) == (vq.grid, vq.grid)
  assert saved["model"]["codebook_size"] == vq.codebook_size and saved["vq"]["channels"] == vq.channels
  assert "2" in os.listdir(workdir / "checkpoints")
