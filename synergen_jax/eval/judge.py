"""The judge of generated images: a small CNN classifier trained once on the real training images.

Generation metrics read it two ways: its predicted class (does the image show what the prompt
asked for?) and its 128-d penultimate features (Frechet distance to the real held-out images and
within-class diversity live in that space). It is trained on the same fitted pixels the image
tokenizer saw, cached by a hash of the data it was trained on, and reports its own held-out accuracy
so a generation score can be read against the judge's ceiling.
"""

from __future__ import annotations

import hashlib
import json
import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import serialization
from scipy.linalg import LinAlgWarning

from synergen_jax.core import storage
from synergen_jax.eval import fid

JUDGE_VERSION = 1


class JudgeNet(nn.Module):
  num_classes: int

  @nn.compact
  def __call__(self, x):
    """x: uint8 [N, S, S, C] -> (logits [N, classes], features [N, 128])."""
    x = x.astype(jnp.float32) / 255.0
    for width in (32, 64):
      x = nn.relu(nn.Conv(width, (3, 3))(x))
      x = nn.avg_pool(x, (2, 2), (2, 2))
    features = nn.relu(nn.Dense(128)(x.reshape(x.shape[0], -1)))
    return nn.Dense(self.num_classes)(features), features


class Judge:

  def __init__(self, num_classes: int, params):
    self.net, self.params = JudgeNet(num_classes), params
    self._apply = jax.jit(self.net.apply)

  def __call__(self, pixels: np.ndarray, batch_size: int = 512):
    """uint8 [N, S, S, C] -> (predicted class [N], features [N, 128]) as numpy."""
    preds, feats = [], []
    for start in range(0, len(pixels), batch_size):
      logits, f = self._apply(self.params, jnp.asarray(pixels[start:start + batch_size]))
      preds.append(np.asarray(jnp.argmax(logits, -1))); feats.append(np.asarray(f))
    return np.concatenate(preds), np.concatenate(feats)


def train_judge(pixels: np.ndarray, labels: np.ndarray, num_classes: int, *, steps: int = 400,
                batch_size: int = 128, seed: int = 0) -> Judge:
  net = JudgeNet(num_classes)
  params = net.init(jax.random.key(seed), jnp.asarray(pixels[:1]))
  tx = optax.adam(1e-3)
  opt = tx.init(params)

  @jax.jit
  def step(params, opt, x, y):
    def loss_fn(p):
      logits, _ = net.apply(p, x)
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    grads = jax.grad(loss_fn)(params)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), opt

  rng = np.random.default_rng(seed)
  for _ in range(steps):
    idx = rng.integers(0, len(pixels), batch_size)
    params, opt = step(params, opt, jnp.asarray(pixels[idx]), jnp.asarray(labels[idx]))
  return Judge(num_classes, params)


def load_or_train(cache_dir: str, pixels: np.ndarray, labels: np.ndarray, num_classes: int) -> Judge:
  """The judge for exactly these training images and labels, from `cache_dir` or trained now."""
  digest = hashlib.sha256(np.ascontiguousarray(pixels).tobytes())
  digest.update(np.asarray(labels, np.int64).tobytes())
  digest.update(json.dumps([JUDGE_VERSION, num_classes]).encode())
  path = storage.path(cache_dir) / f"judge-{digest.hexdigest()[:16]}.msgpack"
  if path.exists():
    net = JudgeNet(num_classes)
    template = net.init(jax.random.key(0), jnp.asarray(pixels[:1]))
    return Judge(num_classes, serialization.from_bytes(template, path.read_bytes()))
  judge = train_judge(pixels, np.asarray(labels), num_classes)
  path.parent.mkdir(parents=True, exist_ok=True)
  # Whole or not at all under a name of its own per writer: several processes may train the same
  # judge at once, and a reader never sees half a file (core/storage.py).
  storage.write_bytes(path, serialization.to_bytes(judge.params))
  return judge


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
  """FID's distance (eval/fid.py, pytorch-fid's steps) between two feature sets [N, 128].

  The judge's covariances are singular as a rule: units that never fire on these images are zero in
  every row (35 of 128 on the demo's digits), and a small set has fewer images than features.
  scipy's sqrtm warns "Matrix is singular" then, but on the demo's features (200 and 500 images) it
  came within 1e-10 of a 40-digit reference (an eigh-based form was off by 5e-6: the square roots of
  rounding noise in the zero eigenvalues add up), so the warning is silenced here, not in fid.py."""
  sa, sb = fid.feature_statistics(a), fid.feature_statistics(b)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", LinAlgWarning)
    return fid.frechet_distance(sa.mu, sa.sigma, sb.mu, sb.sigma)


def mean_pairwise_distance(features: np.ndarray) -> float:
  """Average L2 distance between distinct pairs (diversity within one class)."""
  f = np.asarray(features, np.float64)
  if len(f) < 2:
    return 0.0
  d = np.sqrt(np.clip(((f[:, None] - f[None]) ** 2).sum(-1), 0, None))
  return float(d.sum() / (len(f) * (len(f) - 1)))
