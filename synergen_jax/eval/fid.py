"""FID as pytorch-fid computes it, with the InceptionV3 of eval/inception.py on JAX devices.

  fid_between(generated, reference, weights_path)   each a folder of images or a .npz of statistics

Folders are read as pytorch-fid reads them (the files directly inside with its image extensions,
sorted; PIL's .convert("RGB"); pixels / 255; torch's bilinear resize to 299x299, done here on the
host so one compiled network serves images of every size). Features stream through fixed-size
batches (the last one padded, so the network compiles once) sharded over this process's devices,
and only float64 sums of features and of their outer products are kept: 30k+ images take the same
memory as 50. Statistics files are pytorch-fid's --save-stats format (keys mu, sigma); the ones
written here add `count`, the number of images they were made of (pytorch-fid ignores it).
Folders and statistics files may be bucket paths (gs://...); the Inception weights are a local file.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import io
import os
import zipfile

import jax
import numpy as np
from absl import logging
from PIL import Image
from scipy import linalg

from synergen_jax.core import storage
from synergen_jax.core.errors import DataError
from synergen_jax.eval.inception import FEATURES, FIDInceptionV3, INPUT_SIZE, load_pt_inception
from synergen_jax.eval.inception import resize_like_torch

IMAGE_EXTENSIONS = ("bmp", "jpg", "jpeg", "pgm", "png", "ppm", "tif", "tiff", "webp")  # pytorch-fid's
DECODE_THREADS = min(8, os.cpu_count() or 1)


@dataclasses.dataclass
class Statistics:
  mu: np.ndarray          # [d] float64
  sigma: np.ndarray       # [d, d] float64, unbiased (np.cov)
  count: int | None       # images behind them; None: a statistics file that does not say


class RunningMoments:
  """Mean and covariance of features added batch by batch, in float64. The sums are of features
  minus the first batch's mean, so a large common offset does not cancel catastrophically."""

  def __init__(self, dim: int | None = FEATURES):
    """dim None: the width of the first batch's features (a stand-in feature extractor's)."""
    self.count = 0
    self._shift = None
    self._dim = dim

  def add(self, features: np.ndarray) -> None:
    features = np.asarray(features, np.float64)
    if self._shift is None:
      dim = self._dim or features.shape[1]
      self._sum, self._outer = np.zeros(dim), np.zeros((dim, dim))
      self._shift = features.mean(0)
    centred = features - self._shift
    self._sum += centred.sum(0)
    self._outer += centred.T @ centred
    self.count += len(features)

  def statistics(self) -> Statistics:
    if self.count < 2:
      raise DataError(f"a covariance needs at least 2 images, got {self.count}")
    mean = self._sum / self.count
    sigma = (self._outer - self.count * np.outer(mean, mean)) / (self.count - 1)
    return Statistics(self._shift + mean, sigma, self.count)


class FeatureExtractor:
  """The network compiled for one batch size, split over all given devices (a 1-D mesh); the batch
  size is rounded up to a multiple of their count, as ImageTokenizer does."""

  def __init__(self, variables: dict, batch_size: int, devices=None):
    devices = list(devices if devices is not None else jax.local_devices())
    batch_size = -(-batch_size // len(devices)) * len(devices)
    mesh = jax.sharding.Mesh(np.asarray(devices), ("batch",))
    self.batch_size = batch_size
    self.devices = devices
    self._batch_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("batch"))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    self._variables = jax.device_put(variables, replicated)
    self._apply = jax.jit(FIDInceptionV3().apply, out_shardings=replicated)

  def __call__(self, images: np.ndarray) -> np.ndarray:
    """uint8 or [0, 1] float images [n <= batch_size, H, W, 3] -> float32 features [n, 2048]."""
    count = len(images)
    if count > self.batch_size:
      raise ValueError(f"{count} images for a batch of {self.batch_size}")
    padded = np.concatenate([images, np.zeros((self.batch_size - count,) + images.shape[1:],
                                              images.dtype)])
    return np.asarray(self._apply(self._variables, jax.device_put(padded, self._batch_sharding)))[:count]


def image_files(folder: str) -> list[str]:
  """The images pytorch-fid would read from folder (not recursive), sorted by path."""
  where = storage.path(folder)
  if not where.is_dir():
    raise DataError(f"{folder}: neither a folder of images nor a .npz statistics file")
  files = sorted(os.fspath(p) for p in where.iterdir()
                 if p.name.rsplit(".", 1)[-1].lower() in IMAGE_EXTENSIONS and p.is_file())
  if not files:
    raise DataError(f"{folder}: no images ({', '.join(IMAGE_EXTENSIONS)})")
  return files


def read_rgb(path: str) -> np.ndarray:
  """One image file (local or on a bucket) -> uint8 [H, W, 3]; a DataError naming it if unreadable."""
  try:
    source = io.BytesIO(storage.path(path).read_bytes()) if storage.is_remote(path) else path
    with Image.open(source) as image:
      return np.asarray(image.convert("RGB"), np.uint8)
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    raise DataError(f"{path}: cannot read the image: {e}") from e


def read_image(path: str) -> np.ndarray:
  """One file -> float32 [299, 299, 3] in [0, 1], the network's input as pytorch-fid makes it."""
  pixels = read_rgb(path)
  return resize_like_torch(pixels[None].astype(np.float32) / np.float32(255), INPUT_SIZE)[0]


def image_batches(files: list[str], batch_size: int, reader=read_image):
  """Decoded batches in order; the next one decodes on threads while the current one is used.
  reader: file -> the network's input (read_image: pytorch-fid's reading of a folder)."""
  chunks = [files[i:i + batch_size] for i in range(0, len(files), batch_size)]
  if not chunks:
    return
  with concurrent.futures.ThreadPoolExecutor(DECODE_THREADS) as pool:
    ahead = [pool.submit(reader, path) for path in chunks[0]]
    for next_chunk in chunks[1:] + [[]]:
      current, ahead = ahead, [pool.submit(reader, path) for path in next_chunk]
      yield np.stack([job.result() for job in current])


def files_statistics(files: list[str], extractor: FeatureExtractor, reader=read_image) -> Statistics:
  """Statistics of the images in `files` (an extractor is anything with batch_size that maps a
  batch of [0, 1] images [n, 299, 299, 3] to features [n, d])."""
  moments = RunningMoments(None)
  for batch in image_batches(files, extractor.batch_size, reader):
    moments.add(extractor(batch))
  return moments.statistics()


def read_statistics(path: str) -> Statistics:
  """A .npz with `mu` [d] and `sigma` [d, d] (pytorch-fid's --save-stats, or write_statistics)."""
  try:
    source = io.BytesIO(storage.path(path).read_bytes()) if storage.is_remote(path) else path
    with np.load(source) as stats:
      arrays = {key: stats[key] for key in stats.files}
  except (OSError, ValueError, zipfile.BadZipFile) as e:
    raise DataError(f"{path}: cannot read it as a .npz of FID statistics: {e}") from e
  missing = [key for key in ("mu", "sigma") if key not in arrays]
  if missing:
    raise DataError(f"{path}: no {' and '.join(missing)} in it (keys: {', '.join(arrays) or 'none'}); "
                    "FID statistics files hold mu and sigma")
  mu, sigma = np.asarray(arrays["mu"], np.float64), np.asarray(arrays["sigma"], np.float64)
  if mu.ndim != 1 or sigma.shape != (len(mu), len(mu)):
    raise DataError(f"{path}: mu of shape {mu.shape} and sigma of shape {sigma.shape}; expected "
                    "[d] and [d, d]")
  return Statistics(mu, sigma, int(arrays["count"]) if "count" in arrays else None)


def write_statistics(path: str, stats: Statistics) -> None:
  """pytorch-fid's statistics file (np.savez_compressed, mu and sigma), plus the image count when
  known."""
  if not path.endswith(".npz"):
    raise ValueError(f"{path}: statistics files end in .npz (how a path is told from a folder)")
  count = {} if stats.count is None else dict(count=stats.count)
  buffer = io.BytesIO()
  np.savez_compressed(buffer, mu=stats.mu, sigma=stats.sigma, **count)
  storage.write_bytes(path, buffer.getvalue())     # whole or not at all, on disk or a bucket


def feature_statistics(features: np.ndarray) -> Statistics:
  """Statistics of features [N, d] held in memory: float64 mean and np.cov, as pytorch-fid takes
  them (RunningMoments is for features that arrive in batches)."""
  features = np.asarray(features, np.float64)
  if len(features) < 2:
    raise DataError(f"a covariance needs at least 2 images, got {len(features)}")
  return Statistics(features.mean(0), np.cov(features, rowvar=False), len(features))


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
  """||mu1 - mu2||^2 + tr(sigma1 + sigma2 - 2 sqrt(sigma1 sigma2)), step for step as pytorch-fid's
  calculate_frechet_distance: scipy's sqrtm, eps added to both diagonals when the product's root is
  not finite, a small imaginary part dropped and a large one refused."""
  mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
  sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
  if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
    raise ValueError(f"statistics of different dimensions: mu {mu1.shape} vs {mu2.shape}, sigma "
                     f"{sigma1.shape} vs {sigma2.shape}")
  diff = mu1 - mu2
  covmean = linalg.sqrtm(sigma1.dot(sigma2))
  if not np.isfinite(covmean).all():
    logging.warning("fid calculation produces singular product; adding %s to diagonal of cov "
                    "estimates", eps)
    offset = np.eye(sigma1.shape[0]) * eps
    covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
  if np.iscomplexobj(covmean):
    if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
      raise ValueError(f"Imaginary component {np.max(np.abs(covmean.imag))}")
    covmean = covmean.real
  return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def fid_between(generated: str, reference: str, weights_path: str | None, batch_size: int = 50,
                devices=None, save_reference: str | None = None) -> dict:
  """FID of two folders of images or .npz statistics files (the network, from pytorch-fid's
  weights_path, is loaded only for a folder). Both inputs are checked before any image is read.
  save_reference: write the reference folder's statistics there (.npz), so that later runs against
  the same reference (30k COCO images, say) read the file instead of the folder."""
  if save_reference and reference.endswith(".npz"):
    raise DataError(f"save_reference={save_reference}: the reference {reference} is already a "
                    "statistics file")
  if save_reference and not save_reference.endswith(".npz"):
    raise DataError(f"save_reference={save_reference}: statistics files end in .npz")
  sources = [read_statistics(path) if path.endswith(".npz") else image_files(path)
             for path in (generated, reference)]
  if any(isinstance(source, list) for source in sources):
    if not weights_path:
      raise DataError("FID of an image folder needs the Inception weights: pytorch-fid's "
                      "pt_inception-2015-12-05-6726825d.pth")
    extractor = FeatureExtractor(load_pt_inception(weights_path), batch_size, devices)
    sources = [source if isinstance(source, Statistics) else files_statistics(source, extractor)
               for source in sources]
  ours, theirs = sources
  if save_reference:
    write_statistics(save_reference, theirs)
  return dict(fid=frechet_distance(ours.mu, ours.sigma, theirs.mu, theirs.sigma),
              generated_count=ours.count, reference_count=theirs.count)
