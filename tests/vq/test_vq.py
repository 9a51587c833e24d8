"""Image tokenizer: codebook mechanics and the trained tokenizer's round trip."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from synergen_jax.core.errors import DataError
from synergen_jax.vq.tokenizer import ImageTokenizer
from synergen_jax.data.sources import mnist5k, split_indices
from synergen_jax.vq import autoencoder as vq
from synergen_jax.vq.training import load_pixels


@pytest.mark.parametrize("downsample", [4, 8, 16])
def test_downsampling_sets_the_grid_and_quantizes_to_the_nearest_code(downsample):
  config = vq.VQConfig(image_size=32, channels=3, downsample=downsample, codebook_size=16,
                       code_dim=4, width=4, num_res_blocks=1)
  model = vq.VQModel(config)
  x = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3), minval=-1, maxval=1)
  params = model.init(jax.random.key(1), x)
  out = model.apply(params, x)
  assert out["codes"].shape == (2, 32 // downsample, 32 // downsample)
  # Nearest by cosine == nearest by euclidean distance between unit vectors.
  book = params["params"]["codebook"]
  book = book / jnp.linalg.norm(book, axis=-1, keepdims=True)
  dist = jnp.sum((out["z"][..., None, :] - book) ** 2, axis=-1)
  np.testing.assert_array_equal(out["codes"], jnp.argmin(dist, axis=-1))
  np.testing.assert_allclose(model.apply(params, out["codes"], method=model.decode), out["recon"],
                             atol=1e-5)


def test_straight_through_gradient_reaches_the_encoder():
  config = vq.VQConfig(16, 1, 4, 8, 4, 4, 1)
  model = vq.VQModel(config)
  x = jax.random.uniform(jax.random.key(0), (2, 16, 16, 1), minval=-1, maxval=1)
  params = model.init(jax.random.key(1), x)
  grads = jax.grad(lambda p: jnp.mean((model.apply(p, x)["recon"] - x) ** 2))(params)
  assert all(float(jnp.abs(g).sum()) > 0 for g in jax.tree.leaves(grads["params"]["encoder"]))


def test_dead_codes_restart_on_batch_vectors_and_live_codes_stay():
  book = jnp.arange(12.0).reshape(6, 2)
  usage = jnp.asarray([1.0, 0.0, 2.0, 0.01, 0.5, 0.02])
  z = jnp.asarray([[[[100.0, 101.0]]], [[[200.0, 201.0]]]])
  new_book, new_usage, n = vq.restart_dead_codes(book, usage, z, jax.random.key(0), threshold=0.03)
  assert int(n) == 3
  for k in (1, 3, 5):
    assert tuple(np.asarray(new_book[k])) in {(100.0, 101.0), (200.0, 201.0)}
    assert float(new_usage[k]) == 1.0
  for k in (0, 2, 4):
    np.testing.assert_array_equal(new_book[k], book[k]); assert new_usage[k] == usage[k]


def test_usage_reads_one_when_uniform_and_perplexity_bounds():
  codes = jnp.tile(jnp.arange(8), 4)
  np.testing.assert_allclose(vq.update_usage(jnp.zeros(8), codes, decay=0.0), jnp.ones(8))
  np.testing.assert_allclose(vq.perplexity(jnp.ones(8)), 8.0, rtol=1e-6)
  np.testing.assert_allclose(vq.perplexity(jnp.asarray([5.0, 0, 0])), 1.0, rtol=1e-6)


def test_trained_tokenizer_round_trip_beats_a_fixed_bound(tiny_data):
  """Held-out images -> codes -> images through the tokenizer restored from its checkpoint."""
  config, report = tiny_data["config"], tiny_data["vq_report"]
  tok = ImageTokenizer.load(tiny_data["vq_dir"], batch_size=48)   # 64 images: a padded last batch
  _, held_out = split_indices(5000, config.data.eval_count, config.data.seed)
  pixels, _, _ = load_pixels(mnist5k(), held_out[:config.vq.eval_count], config)
  codes = tok.encode(pixels)
  assert codes.shape == (len(pixels), 4, 4) and codes.max() < config.model.codebook_size
  recon = tok.decode(codes)
  mse = float(np.mean(((recon.astype(float) - pixels.astype(float)) / 255.0) ** 2))
  mean_image_mse = float(np.mean(((pixels - pixels.mean(0)) / 255.0) ** 2))
  assert mse < 0.6 * mean_image_mse, (mse, mean_image_mse)     # 32 codes at 16x16 px
  np.testing.assert_allclose(mse, report["mse"], rtol=1e-4)     # restore == what was trained
  assert report["usage_fraction"] > 0.5
  with pytest.raises(DataError, match="expects uint8"):
    tok.encode(pixels.astype(np.float32))
  with pytest.raises(DataError, match="outside"):
    tok.decode(codes + config.model.codebook_size)


def test_missing_tokenizer_says_how_to_train_one(tmp_path):
  with pytest.raises(DataError, match="python -m synergen_jax.train_vq"):
    ImageTokenizer.load(str(tmp_path))
