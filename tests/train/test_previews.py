"""The previews' decoding (train/preview_decode.py: the training forward over a fixed buffer, on the
training mesh with sharded parameters) gives the KV-cached decoder's greedy images and captions
(infer/decode.py), for prompts of different lengths and a row count the mesh does not divide."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from helpers import random_batch, tiny
from synergen_jax.core.errors import ConfigError
from synergen_jax.data.layout import SpecialTokens
from synergen_jax.infer.decode import GREEDY, Decoder, caption_prompt
from synergen_jax.model.synergen_vl import SynerGenVL
from synergen_jax.parallel.mesh import make_mesh
from synergen_jax.parallel.sharding import LOGICAL_RULES, mesh_shardings
from synergen_jax.train import preview_decode
from synergen_jax.train.previews import Previews


def test_preview_decoding_matches_the_kv_cached_decoder():
  config, mc = tiny()
  special = SpecialTokens()
  model = SynerGenVL(mc)
  boxed = jax.jit(model.init)(jax.random.key(3), random_batch(mc, 2, 32))
  mesh = make_mesh(dict(data=4, fsdp=2, tensor=1), jax.devices())     # parameters sharded 2 ways
  params = jax.device_put(nn.unbox(boxed), mesh_shardings(boxed, mesh))
  rng = np.random.default_rng(0)
  prompts = [list(rng.integers(6, 60, k)) for k in (3, 7, 5)]         # 3 rows on 8 batch devices
  uncond = [7, 8, 9, 10]
  captioned = [caption_prompt([rng.integers(0, mc.codebook_size, mc.code_grid)], p, mc.fold, special)
               for p in prompts]

  cached = Decoder(mc, jax.device_get(params), special)
  want_images = cached.generate_images(prompts, uncond_prompt=uncond, cfg_scale=3.0, sampling=GREEDY)
  want_text = cached.generate_text(captioned, 6, sampling=GREEDY)
  with jax.set_mesh(mesh), nn.logical_axis_rules(LOGICAL_RULES):
    images = preview_decode.generate_codes(model, params, mesh, prompts, special=special,
                                           uncond=uncond, cfg_scale=3.0, length=32, temperature=0.0)
    text = preview_decode.generate_text(model, params, mesh, captioned, special=special,
                                        max_tokens=6, length=32)
    sampled = [preview_decode.generate_codes(model, params, mesh, prompts, special=special,
                                             uncond=uncond, cfg_scale=3.0, length=32, seed=5)
               for _ in range(2)]
  np.testing.assert_array_equal(images, want_images)
  assert text == want_text
  assert len({tuple(x.ravel()) for x in images}) > 1      # the prompts matter: not a constant
  np.testing.assert_array_equal(*sampled)                  # seeded: the same codes every time
  assert not np.array_equal(sampled[0], images)


def test_buffer_length_halves_seq_len_only_in_whole_kernel_blocks():
  assert preview_decode.buffer_length(40, 32) == 32
  assert preview_decode.buffer_length(300, 8192) == 512
  assert preview_decode.buffer_length(600, 8192) == 1024
  assert preview_decode.buffer_length(300, 8192, unit=1024) == 1024
  assert preview_decode.buffer_length(300, 1000) == 1000     # not a multiple of the block: kept


def test_a_preview_prompt_too_long_for_a_row_stops_the_run_naming_the_key(tiny_data):
  config = tiny_data["config"].copy_and_resolve_references()
  config.train.preview_images = 4
  config.train.preview_prompts = ("seven " * 40,)
  mesh = make_mesh(config.mesh, jax.devices())
  with pytest.raises(ConfigError, match=r"config.train.preview_prompts: 'seven seven .* does not fit "
                                        r"config.data.seq_len=32; shorten it"):
    Previews(config, SynerGenVL(tiny_data["mc"]), mesh)
  config.train.preview_images = -1
  with pytest.raises(ConfigError, match=r"config.train.preview_images=-1 must be >= 0"):
    Previews(config, SynerGenVL(tiny_data["mc"]), mesh)


def test_data_with_no_image_tokenizer_in_sight_trains_without_previews(tiny_data, tmp_path, capsys):
  """On by default: prepared data copied away from its `vq` folder, with config.vq.workdir unset,
  turns previews off with one line; naming a folder that holds no tokenizer is an error."""
  import shutil
  config = tiny_data["config"].copy_and_resolve_references()
  config.train.preview_images = 8
  config.data.path = str(shutil.copytree(tiny_data["data_dir"], tmp_path / "alone" / "prepared"))
  mesh = make_mesh(config.mesh, jax.devices())
  previews = Previews(config, SynerGenVL(tiny_data["mc"]), mesh)
  assert previews.n == 0 and previews(None) == []
  assert "train: no previews: no image tokenizer found" in capsys.readouterr().out
  config.vq.workdir = str(tmp_path / "alone")
  with pytest.raises(ConfigError, match="holds none .*fix config.vq.workdir"):
    Previews(config, SynerGenVL(tiny_data["mc"]), mesh)
