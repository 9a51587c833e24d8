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
