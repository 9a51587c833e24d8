"""HF import and export with a bucket (a GCS emulator on loopback) as the output: the import written to
gs:// loads back with the parameters of the same import written to a folder, and its export gives
the same files as the local export."""

import json
import os

import fsspec
import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="needs the hf extra: pip install -e '.[hf]'")
transformers = pytest.importorskip("transformers", reason="needs the hf extra")

import jax  # noqa: E402
from etils import epath  # noqa: E402

from helpers import tiny  # noqa: E402
from synergen_jax.core.errors import CheckpointError  # noqa: E402
from synergen_jax.convert.exporter import export_checkpoint  # noqa: E402
from synergen_jax.convert.importer import import_checkpoint  # noqa: E402
from synergen_jax.infer import loader  # noqa: E402

# The LLM of configs/tiny.py.
SHAPE = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
             max_position_embeddings=128)


def _hf_folder(path: str) -> None:
  """A tiny random Llama in several safetensors shards (with an index) and its generation config."""
  torch.manual_seed(0)
  model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**SHAPE))
  model.save_pretrained(path, max_shard_size="20KB")


def _files(root: str) -> dict[str, bytes]:
  """Every file under a folder or a bucket path: name relative to root -> bytes."""
  if root.startswith("gs://"):   # epath's walk drops the scheme of bucket paths: list with gcsfs
    fs = fsspec.filesystem("gs")
    fs.invalidate_cache()
    names = [name[len(root) - 5 + 1:] for name in fs.find(root[len("gs://"):])]
  else:
    names = [os.path.relpath(os.path.join(d, f), root) for d, _, files in os.walk(root) for f in files]
  return {name: (epath.Path(root) / name).read_bytes() for name in names}


def test_an_import_to_a_bucket_loads_back_equal_and_exports_the_same_files(gcs_bucket, tmp_path):
  hf = str(tmp_path / "hf")
  _hf_folder(hf)
  local, remote = str(tmp_path / "import"), f"{gcs_bucket}/imports/llama"
  theirs = import_checkpoint(hf, local, tiny()[0])
  ours = import_checkpoint(hf, remote, tiny()[0])
  assert ours == theirs and "generation_config.json" in ours["copied_files"]
  for name in ("config.json", "hf_import.json", "hf_files/generation_config.json"):
    assert (epath.Path(remote) / name).read_bytes() == (epath.Path(local) / name).read_bytes(), name

  a, b = loader.load(remote), loader.load(local)
  assert a.step == b.step == 0
  assert jax.tree.structure(a.params) == jax.tree.structure(b.params)
  for x, y in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))

  # Exported from the bucket into the bucket, in shards: the same files as the local export.
  export_checkpoint(remote, f"{gcs_bucket}/exports/llama", max_shard_bytes=20_000)
  export_checkpoint(local, str(tmp_path / "export"), max_shard_bytes=20_000)
  exported = _files(str(tmp_path / "export"))
  assert "model.safetensors.index.json" in exported and len(exported) > 3
  assert _files(f"{gcs_bucket}/exports/llama") == exported
  assert json.loads(exported["config.json"])["num_hidden_layers"] == 2


def test_a_bucket_hf_folder_is_refused_with_the_copy_command(gcs_bucket, tmp_path):
  with pytest.raises(CheckpointError, match=r"--hf_dir=gs://.*gcloud storage cp -r"):
    import_checkpoint(f"{gcs_bucket}/hf", str(tmp_path / "out"), tiny()[0])
