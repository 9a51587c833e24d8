"""Image decoding, fitting and InternVL-1.5 dynamic-resolution tiles."""

import io

import numpy as np
import pytest
from PIL import Image as PILImage

from synergen_jax.data import images
from synergen_jax.data.images import BadImage


def _png(array) -> bytes:
  buf = io.BytesIO()
  PILImage.fromarray(array).save(buf, format="PNG")
  return buf.getvalue()


def _internvl_reference(width, height, max_num, image_size):
  """InternVL-1.5's find_closest_aspect_ratio, transcribed from its published preprocessing code."""
  target_ratios = sorted({(i, j) for n in range(1, max_num + 1) for i in range(1, n + 1)
                          for j in range(1, n + 1) if 1 <= i * j <= max_num}, key=lambda x: x[0] * x[1])
  aspect_ratio = width / height
  best_ratio_diff, best_ratio, area = float("inf"), (1, 1), width * height
  for ratio in target_ratios:
    ratio_diff = abs(aspect_ratio - ratio[0] / ratio[1])
    if ratio_diff < best_ratio_diff:
      best_ratio_diff, best_ratio = ratio_diff, ratio
    elif ratio_diff == best_ratio_diff and area > 0.5 * image_size * image_size * ratio[0] * ratio[1]:
      best_ratio = ratio
  return best_ratio


def test_tile_grid_matches_internvl(rng):
  for _ in range(300):
    w, h = (int(x) for x in rng.integers(8, 2000, 2))
    max_tiles = int(rng.integers(1, 13))
    assert images.tile_grid(w, h, max_tiles, 448) == _internvl_reference(w, h, max_tiles, 448), (w, h)
  assert images.tile_grid(800, 600, 6, 448) == (3, 2)    # 1.33 is nearest 1.5 among <= 6 tiles
  assert images.tile_grid(600, 1800, 12, 448) == (1, 3)


def test_dynamic_tiles_cut_the_resized_image_in_raster_order(rng):
  image = rng.integers(0, 256, (60, 90, 3), dtype=np.uint8)
  tiles = images.dynamic_tiles(image, 16, max_tiles=6, thumbnail=True)
  cols, rows = images.tile_grid(90, 60, 6, 16)
  assert len(tiles) == cols * rows + 1
  big = np.asarray(PILImage.fromarray(image).resize((cols * 16, rows * 16), PILImage.BICUBIC))
  rebuilt = np.concatenate([np.concatenate(tiles[r * cols:(r + 1) * cols], axis=1) for r in range(rows)])
  np.testing.assert_array_equal(rebuilt, big)
  thumb = np.asarray(PILImage.fromarray(image).resize((16, 16), PILImage.BICUBIC))
  np.testing.assert_array_equal(tiles[-1], thumb)
  # One tile: no thumbnail, whatever the flag says.
  assert len(images.dynamic_tiles(image, 16, max_tiles=1, thumbnail=True)) == 1


def test_decode_formats_and_alpha(rng):
  rgb = rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)
  np.testing.assert_array_equal(images.decode(_png(rgb)), rgb)
  np.testing.assert_array_equal(images.decode(rgb[..., 0]), np.repeat(rgb[..., :1], 3, -1))
  rgba = np.zeros((8, 8, 4), np.uint8)          # fully transparent -> white background
  np.testing.assert_array_equal(images.decode(_png(rgba)), np.full((8, 8, 3), 255, np.uint8))


@pytest.mark.parametrize("make, reason", [
    (lambda png: png[:len(png) // 2], "undecodable_image"),     # truncated file
    (lambda png: b"not an image at all", "undecodable_image"),
    (lambda png: _png(np.zeros((2, 9, 3), np.uint8)), "too_small"),
])
def test_decode_bad_bytes_raise_counted_reasons(rng, make, reason):
  png = _png(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
  with pytest.raises(BadImage) as e:
    images.decode(make(png))
  assert e.value.reason == reason


def test_decode_missing_file(tmp_path):
  with pytest.raises(BadImage, match="not found") as e:
    images.decode(str(tmp_path / "nope.png"))
  assert e.value.reason == "missing_file"


def test_fit_pad_centres_without_resampling(rng):
  digit = rng.integers(1, 256, (28, 28, 3), dtype=np.uint8)
  out = images.fit(digit, 32, 3, "pad", background=0)
  np.testing.assert_array_equal(out[2:30, 2:30], digit)
  assert out[:2].max() == 0 and out[:, :2].max() == 0
  gray = images.fit(digit, 32, 1, "resize")
  assert gray.shape == (32, 32, 1)
  with pytest.raises(BadImage, match="needs 32x32") as e:
    images.fit(digit, 32, 3, "exact")
  assert e.value.reason == "wrong_size"
