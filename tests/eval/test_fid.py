"""FID (eval/fid.py, eval/inception.py) against pytorch-fid itself: the Flax InceptionV3 loaded from
a pytorch-fid state dict gives its pool3 features for images of several sizes (resize included),
folder statistics equal `compute_statistics_of_path` (batches padded, any batch size), the Frechet
distance equals `calculate_frechet_distance` (rank-deficient statistics too), and a statistics file
round-trips. pytorch-fid runs in .venv-fid (.ci/fid_reference_env) with random weights, since the
real weight file is a download. Bad weights, statistics and folders are refused by name."""

import os
import subprocess

import jax
import numpy as np
import pytest
from PIL import Image

from helpers import ROOT
from synergen_jax.core.errors import CheckpointError, DataError
from synergen_jax.eval import fid, inception

REFERENCE_PYTHON = os.path.join(ROOT, ".venv-fid", "bin", "python")
IMAGE_SIZES = [(28, 28), (40, 32), (64, 64), (28, 28), (33, 47), (64, 64), (28, 28)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """pytorch-fid's numbers for a random-weight network and a folder of images of several sizes."""
  if not os.path.exists(REFERENCE_PYTHON):
    pytest.skip("no .venv-fid (pytorch-fid's environment): run .ci/fid_reference_env")
  root = tmp_path_factory.mktemp("fid")
  images, out = root / "images", root / "out"
  images.mkdir()
  out.mkdir()
  rng = np.random.default_rng(3)
  for i, (height, width) in enumerate(IMAGE_SIZES):
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(images / f"{i:02d}.png")
  (images / "notes.txt").write_text("not an image: both sides skip it")
  subprocess.run([REFERENCE_PYTHON, os.path.join(ROOT, "tests/eval/pytorch_fid_reference.py"),
                  str(out), str(images)], check=True, timeout=600)
  return dict(images=str(images), out=str(out), weights=str(out / "inception.pth"),
              variables=inception.load_pt_inception(str(out / "inception.pth")))


def test_features_equal_pytorch_fid_for_every_input_size(reference):
  expected = np.load(os.path.join(reference["out"], "features.npy"))
  network = jax.jit(inception.FIDInceptionV3().apply)
  for i, want in enumerate(expected):
    image = np.load(os.path.join(reference["out"], f"image_{i}.npy"))
    got = np.asarray(network(reference["variables"], image[None]))[0]
    # within 1e-4 of the features' scale (pool3 features of random weights reach ~10)
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max(), f"image {i} {image.shape}"


@pytest.mark.parametrize("batch_size, devices", [(3, 1), (8, 8)])
def test_folder_statistics_equal_pytorch_fid(reference, batch_size, devices):
  """7 images: batches of 3 on one device end in a padded one; 8 over 8 devices hold them all in
  one padded batch."""
  want = np.load(os.path.join(reference["out"], "folder_stats.npz"))
  extractor = fid.FeatureExtractor(reference["variables"], batch_size, jax.local_devices()[:devices])
  assert extractor.batch_size == batch_size and len(extractor.devices) == devices
  stats = fid.files_statistics(fid.image_files(reference["images"]), extractor)
  assert stats.count == len(IMAGE_SIZES)
  np.testing.assert_allclose(stats.mu, want["mu"], atol=2e-4, rtol=1e-4)
  np.testing.assert_allclose(stats.sigma, want["sigma"], atol=1e-3, rtol=1e-4)


def test_frechet_distance_equals_pytorch_fid(reference):
  cases = np.load(os.path.join(reference["out"], "frechet.npz"))
  for name in ("full", "rank_deficient"):
    got = fid.frechet_distance(cases[f"{name}_mu_a"], cases[f"{name}_sigma_a"],
                               cases[f"{name}_mu_b"], cases[f"{name}_sigma_b"])
    assert got == pytest.approx(float(cases[f"{name}_fid"]), rel=1e-9), name


def test_fid_between_a_folder_and_statistics_files(reference, tmp_path):
  """A folder against pytorch-fid's statistics of itself is ~0 (what sqrtm of 7 samples in 2048
  dimensions leaves); our own statistics file keeps the count and gives the same FID."""
  stats_file = os.path.join(reference["out"], "folder_stats.npz")
  scores = fid.fid_between(reference["images"], stats_file, reference["weights"], batch_size=4)
  assert abs(scores["fid"]) < 0.05 and scores["generated_count"] == len(IMAGE_SIZES)
  assert scores["reference_count"] is None
  ours = str(tmp_path / "ours.npz")
  extractor = fid.FeatureExtractor(reference["variables"], 4)
  fid.write_statistics(ours, fid.files_statistics(fid.image_files(reference["images"]), extractor))
  assert fid.read_statistics(ours).count == len(IMAGE_SIZES)
  both_files = fid.fid_between(ours, stats_file, None)      # statistics only: no network needed
  assert both_files["fid"] == pytest.approx(scores["fid"], abs=1e-3)


def test_moments_over_batches_equal_numpy_cov():
  rng = np.random.default_rng(0)
  features = rng.normal(size=(101, 6)) * 3 + 1e4          # a large common offset
  moments = fid.RunningMoments(6)
  for start in range(0, 101, 17):
    moments.add(features[start:start + 17])
  stats = moments.statistics()
  np.testing.assert_allclose(stats.mu, features.mean(0), rtol=1e-12)
  np.testing.assert_allclose(stats.sigma, np.cov(features, rowvar=False), rtol=1e-9, atol=1e-9)


def test_bad_inputs_are_refused_by_name(tmp_path):
  with pytest.raises(DataError, match="no images"):
    fid.fid_between(str(tmp_path), str(tmp_path), None)
  (tmp_path / "a.png").write_bytes(b"not a png")
  with pytest.raises(DataError, match="needs the Inception weights"):
    fid.fid_between(str(tmp_path), str(tmp_path), None)
  with pytest.raises(DataError, match="a.png: cannot read the image"):
    fid.read_image(str(tmp_path / "a.png"))
  np.savez(tmp_path / "only_mu.npz", mu=np.zeros(3))
  with pytest.raises(DataError, match="only_mu.npz: no sigma"):
    fid.read_statistics(str(tmp_path / "only_mu.npz"))
  np.savez(tmp_path / "bad_shape.npz", mu=np.zeros(3), sigma=np.zeros((3, 2)))
  with pytest.raises(DataError, match="expected"):
    fid.read_statistics(str(tmp_path / "bad_shape.npz"))
  moments = fid.RunningMoments(3)
  moments.add(np.zeros((1, 3)))
  with pytest.raises(DataError, match="at least 2 images, got 1"):
    moments.statistics()


def test_a_state_dict_of_another_network_is_refused_by_name():
  layout = inception.torch_layout()
  state = {key: np.zeros(shape[::-1] if len(shape) != 4 else (shape[3], shape[2], shape[0], shape[1]),
                         np.float32) for key, (_, shape) in layout.items()}
  del state["Mixed_7c.branch_pool.conv.weight"]
  state["Mixed_5b.branch1x1.conv.weight"] = np.zeros((1, 1, 1, 1), np.float32)
  state["head.weight"] = np.zeros(3, np.float32)
  with pytest.raises(CheckpointError) as error:
    inception.variables_from_state_dict(state, "other.pth")
  message = str(error.value)
  assert "missing 1 tensors (Mixed_7c.branch_pool.conv.weight)" in message
  assert "unexpected 1 tensors (head.weight)" in message
  assert "Mixed_5b.branch1x1.conv.weight has shape (1, 1, 1, 1)" in message


def test_coco_fid_suite_scores_the_generated_images(reference, tiny_workdir, tmp_path):
  """evaluate --suite coco_fid: images generated for the prompts, their FID against the reference
  folder (equal to fid_between of the job's images), the reference's statistics saved for reuse."""
  import json
  import shutil
  import sys
  workdir = str(tmp_path / "work")
  shutil.copytree(tiny_workdir, workdir)
  prompts = tmp_path / "prompts.jsonl"
  prompts.write_text("".join(json.dumps(dict(prompt=p)) + "\n" for p in ("one", "two", "three")))
  saved = str(tmp_path / "reference.npz")
  env = dict(os.environ, PYTHONPATH=ROOT)
  run = subprocess.run([sys.executable, "-m", "synergen_jax.evaluate", "--workdir", workdir,
                        "--suite", "coco_fid", "--data", str(prompts), "--per_prompt", "2",
                        "--reference", reference["images"], "--inception_weights", reference["weights"],
                        "--save_reference_stats", saved, "--batch_size", "4"],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)
  assert run.returncode == 0, run.stderr[-3000:]
  result = json.load(open(os.path.join(workdir, "eval.json")))["coco_fid"]
  images = os.path.join(workdir, "eval_coco_fid", "images")
  assert result["images"] == 6 and result["generated_count"] == 6
  assert result["reference_count"] == len(IMAGE_SIZES)
  again = fid.fid_between(images, saved, reference["weights"], batch_size=8)
  assert result["fid"] == pytest.approx(again["fid"], rel=1e-4) and result["fid"] > 1
