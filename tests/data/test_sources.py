"""Sources: embedded datasets, Debian-packaged ones when installed, user folders/JSONL, TFDS."""

import json
import os

import ml_collections
import numpy as np
import pytest
from PIL import Image as PILImage

from synergen_jax.data import images, sources
from synergen_jax.core.errors import BadRecord, DataError


def test_mnist5k_from_the_wheel():
  src = sources.mnist5k()
  assert len(src) == 5000
  labels = np.asarray([src[i].label for i in range(0, 5000, 50)])
  assert set(labels) == set(range(10))           # rows are sorted by class; all classes present
  ex = src[4999]
  assert ex.image.shape == (28, 28) and ex.image.dtype == np.uint8
  assert ex.image[0, 0] == 0 and ex.image.max() > 200      # white digit on black
  assert sources.DIGIT_NAMES[ex.label] in ex.text


def test_digits_from_the_wheel():
  src = sources.digits()
  assert len(src) == 1797
  assert src[0].image.shape == (8, 8) and src[0].image.max() <= 255
  assert src[0].label == 0 and "zero" in src[0].text


def test_class_captions_vary_and_are_deterministic():
  captions = {sources.class_caption(sources.DIGIT_NAMES, 3, i) for i in range(50)}
  assert len(captions) == len(sources.CLASS_TEMPLATES) and all("three" in c for c in captions)
  assert sources.class_caption(sources.DIGIT_NAMES, 3, 7) == sources.class_caption(sources.DIGIT_NAMES, 3, 7)


@pytest.mark.parametrize("builder, package", [
    (lambda root: sources.fashion_mnist(root=root), "dataset-fashion-mnist"),
    (lambda root: sources.tuxpaint(root=root), "tuxpaint-stamps-default"),
    (lambda root: sources.emoji(font=os.path.join(root, "x.ttf")), "fonts-noto-color-emoji"),
])
def test_missing_debian_sources_name_their_package(tmp_path, builder, package):
  with pytest.raises(DataError, match=f"apt install {package}"):
    builder(str(tmp_path))


@pytest.mark.skipif(not os.path.exists("/usr/share/datasets/fashion-mnist"),
                    reason="apt package dataset-fashion-mnist not installed")
def test_fashion_mnist_installed():
  src = sources.fashion_mnist()
  assert len(src) == 70_000
  assert src[0].image.shape == (28, 28) and sources.FASHION_NAMES[src[0].label] in src[0].text


@pytest.mark.skipif(not os.path.exists("/usr/share/tuxpaint/stamps"),
                    reason="apt package tuxpaint-stamps-default not installed")
def test_tuxpaint_installed():
  src = sources.tuxpaint()
  assert len(src) > 500
  ex = src[0]
  assert ex.text and not ex.text.startswith(("#", "ach.utf8"))   # the English first line
  assert images.decode(ex.image).ndim == 3


@pytest.mark.skipif(not os.path.exists(sources.EMOJI_FONT),
                    reason="apt package fonts-noto-color-emoji not installed")
def test_emoji_installed():
  src = sources.emoji()
  assert len(src) > 500
  names = {src[i].text for i in range(len(src))}
  assert "dog face" in names
  img = images.decode(src[0].image)
  assert img.shape == (128, 136, 3) and img.min() < 200        # something was drawn on white


def _write_png(path, value):
  PILImage.fromarray(np.full((20, 20, 3), value, np.uint8)).save(path)


def test_jsonl_resolves_relative_paths_and_flags_bad_lines(tmp_path):
  _write_png(tmp_path / "a.png", 10)
  lines = [json.dumps({"image": "a.png", "text": "a grey square"}), "{not json", json.dumps({"text": "x"})]
  (tmp_path / "data.jsonl").write_text("\n".join(lines))
  src = sources.jsonl(str(tmp_path / "data.jsonl"))
  assert len(src) == 3
  assert src[0].text == "a grey square" and images.decode(src[0].image)[0, 0, 0] == 10
  for i in (1, 2):
    with pytest.raises(BadRecord, match=f"data.jsonl:{i + 1}") as e:
      src[i]
    assert e.value.reason == "bad_json"


def test_folder_sidecar_captions_and_class_folders(tmp_path):
  (tmp_path / "cats").mkdir(); (tmp_path / "dogs").mkdir()
  _write_png(tmp_path / "cats" / "1.png", 1)
  _write_png(tmp_path / "dogs" / "2.png", 2)
  (tmp_path / "dogs" / "2.txt").write_text("a very good dog\nsecond line")
  src = sources.folder(str(tmp_path))
  assert src.class_names == ("cats", "dogs")
  assert "cats" in src[0].text and src[0].label == 0
  assert src[1].text == "a very good dog" and src[1].label == -1


def test_open_source_unknown_name():
  with pytest.raises(DataError, match="choose one of mnist5k"):
    sources.open_source(ml_collections.ConfigDict(dict(name="mnist6k", path=None)))


def test_split_is_disjoint_and_covers_everything():
  train, held = sources.split_indices(1000, 100, seed=3)
  assert len(held) == 100 and not set(train) & set(held)
  assert sorted(set(train) | set(held)) == list(range(1000))
  np.testing.assert_array_equal(held, sources.split_indices(1000, 100, seed=3)[1])
  with pytest.raises(DataError, match="eval_count"):
    sources.split_indices(10, 10, seed=0)


def test_tfds_data_source_reads_a_prepared_dataset(tmp_path):
  """A real TFDS builder prepared to ArrayRecord on disk, read back through tfds.data_source."""
  tfds = pytest.importorskip("tensorflow_datasets")
  rng = np.random.default_rng(0)
  pixels = rng.integers(0, 256, (6, 8, 8, 1), dtype=np.uint8)

  class TinyShapes(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(dict(
          image=tfds.features.Tensor(shape=(8, 8, 1), dtype=np.uint8),   # Image() would need TF
          label=tfds.features.ClassLabel(names=["circle", "square"]))))

    def _split_generators(self, dl_manager):
      return {"train": self._generate_examples()}

    def _generate_examples(self):
      for i in range(6):
        yield i, dict(image=pixels[i], label=i % 2)

  try:
    TinyShapes(data_dir=str(tmp_path), file_format="array_record").download_and_prepare()
  except Exception as e:   # building (not reading) may need TensorFlow in some tfds versions
    pytest.skip(f"cannot build a TFDS dataset without TensorFlow here: {e}")
  src = sources.tfds_source("tiny_shapes", str(tmp_path))
  assert len(src) == 6 and src.class_names == ("circle", "square")
  got = sorted((int(src[i].label), src[i].image.tobytes()) for i in range(6))
  want = sorted((i % 2, pixels[i].tobytes()) for i in range(6))
  assert got == want
  assert any("square" in src[i].text for i in range(6))
  with pytest.raises(DataError, match="cannot open split"):
    sources.tfds_source("tiny_shapes", str(tmp_path / "elsewhere"))


@pytest.mark.parametrize("name, want", [
    ("eight", "an"), ("apple", "an"), ("ankle boot", "an"), ("umbrella", "an"), ("seven", "a"),
    ("t-shirt", "a"), ("one", "a"), ("unicorn", "a"), ("european robin", "a"), ("hour glass", "an"),
    ("x-ray", "an"), ("8", "an"), ("18", "an"), ("1", "a"), ("onion", "an"), ("horse", "a")])
def test_article_follows_the_sound(name, want):
  assert sources.article(name) == want


def test_class_captions_use_the_right_article():
  eights = {sources.class_caption(sources.DIGIT_NAMES, 8, i) for i in range(60)}
  assert {"an eight", "a picture of an eight", "eight"} <= eights
  assert not any("a eight" in c for c in eights)
  sevens = {sources.class_caption(sources.DIGIT_NAMES, 7, i) for i in range(60)}
  assert {"a seven", "a picture of a seven"} <= sevens


def _build_tfds(tmp_path, builder_cls):
  try:
    builder_cls(data_dir=str(tmp_path), file_format="array_record").download_and_prepare()
  except Exception as e:   # building (not reading) may need TensorFlow in some tfds versions
    pytest.skip(f"cannot build a TFDS dataset without TensorFlow here: {e}")


def test_tfds_nested_caption_feature(tmp_path):
  """coco_captions' layout: `captions` is a sequence of {id, text}; tfds_text_key="captions/text"."""
  tfds = pytest.importorskip("tensorflow_datasets")
  captions = {i: [f"image {i} caption {j}" for j in range(i % 4)] for i in range(12)}

  class TinyCaptions(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(dict(
          image=tfds.features.Tensor(shape=(4, 4, 3), dtype=np.uint8),
          image_id=np.int64,
          captions=tfds.features.Sequence(dict(id=np.int64, text=tfds.features.Text())))))

    def _split_generators(self, dl_manager):
      return {"train": self._generate_examples()}

    def _generate_examples(self):
      for i in range(12):
        yield i, dict(image=np.full((4, 4, 3), i, np.uint8), image_id=i,
                      captions=[dict(id=j, text=t) for j, t in enumerate(captions[i])])

  _build_tfds(tmp_path, TinyCaptions)
  config = ml_collections.ConfigDict(dict(name="tfds:tiny_captions", path=str(tmp_path),
                                          tfds_text_key="captions/text", seed=0))
  src = sources.open_source(config)
  assert len(src) == 12 and src.class_names == ()
  for k in range(12):
    ex = src[k]
    i = int(ex.image[0, 0, 0])
    assert (ex.text in captions[i]) if captions[i] else ex.text == ""   # empty: prepare's empty_text
    assert src[k].text == ex.text                                       # deterministic
  # Another seed picks other captions for some images: every caption gets used across seeds.
  picks = {(k, sources.tfds_source("tiny_captions", str(tmp_path), text_key="captions/text",
                                   seed=s)[k].text) for s in range(8) for k in range(12)}
  three = [k for k in range(12) if len(captions[int(src[k].image[0, 0, 0])]) == 3]
  assert all(len({t for kk, t in picks if kk == k}) > 1 for k in three)
  with pytest.raises(DataError, match=r"no feature 'captions/txt': at captions the features are id, text"):
    sources.tfds_source("tiny_captions", str(tmp_path), text_key="captions/txt")
  with pytest.raises(DataError, match=r"no feature 'caption': at the top level the features are "):
    sources.tfds_source("tiny_captions", str(tmp_path), text_key="caption")
