"""The streaming safetensors writer: what safetensors itself reads back, bit for bit, in shards of
the given size with HF's index, in float32 and bfloat16, on a disk and in a bucket."""

import json

import ml_dtypes
import numpy as np
import pytest

safetensors = pytest.importorskip("safetensors")
from safetensors.numpy import load_file  # noqa: E402

from synergen_jax.convert.safetensors_out import write_shards  # noqa: E402
from synergen_jax.core import storage  # noqa: E402


def _tensors():
  rng = np.random.default_rng(0)
  shapes = {"a.weight": (7, 5), "b": (3,), "c.kernel": (64, 33), "d": (2, 3, 4), "e": (1,)}
  return {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}


@pytest.mark.parametrize("dtype", [np.float32, ml_dtypes.bfloat16])
def test_shards_read_back_by_safetensors(tmp_path, dtype):
  tensors = _tensors()
  itemsize = np.dtype(dtype).itemsize
  names = write_shards(tensors.items(), storage.path(tmp_path), dtype, max_shard_bytes=100 * itemsize)
  assert len(names) > 1 and all(n.startswith("model-") for n in names)
  index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
  assert set(index["weight_map"]) == set(tensors)
  read = {}
  for name in names:
    read.update(load_file(str(tmp_path / name)))
  for k, v in tensors.items():
    assert read[k].dtype == np.dtype(dtype) and read[k].shape == v.shape
    np.testing.assert_array_equal(read[k], v.astype(dtype))
  assert index["metadata"]["total_size"] == sum(v.size * itemsize for v in tensors.values())
  assert not list(tmp_path.glob("*.tmp"))                   # nothing left behind


def test_one_shard_is_model_safetensors_and_a_bucket_gets_it_whole(gcs_bucket, tmp_path):
  tensors = _tensors()
  assert write_shards(tensors.items(), storage.path(tmp_path), np.float32, 1 << 30) == [
      "model.safetensors"]
  local = load_file(str(tmp_path / "model.safetensors"))
  out = storage.path(f"{gcs_bucket}/export")
  assert write_shards(tensors.items(), out, np.float32, 1 << 30) == ["model.safetensors"]
  copy = tmp_path / "copy.safetensors"
  copy.write_bytes((out / "model.safetensors").read_bytes())
  remote = load_file(str(copy))
  for k in tensors:
    np.testing.assert_array_equal(local[k], remote[k])
  assert sorted(p.name for p in out.iterdir()) == ["model.safetensors"]
