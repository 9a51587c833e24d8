"""Every raw input read from a bucket (the GCS emulator) gives exactly what the same files give read
from a local folder: the formats' records, the random-access sources, the strict jsonl reader, the
images records name by relative paths, mixture folders and the text tokenizer. A bucket that does
not exist is one ConfigError naming the config key."""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import re

import ml_collections
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image as PILImage

from synergen_jax.core import storage
from synergen_jax.core.errors import BadRecord, ConfigError, DataError
from synergen_jax.data import formats, images, inputs, jsonl, mixture, sources
from synergen_jax.data.documents import Document, ImageSpan
from synergen_jax.data.sources import RawExample
from synergen_jax.data.tokenizers import TextTokenizer
from test_formats import LLAVA, _encoded, _img2dataset_sample, _tar_bytes, _webdataset_samples
from test_tokenizers import internlm2_like, write_hf_folder

MISSING_BUCKET = "gs://no-such-bucket-for-synergen-tests"


# ---------------------------------------------------------------------------------------------------
# One local tree of raw inputs, copied to the bucket as it is.
# ---------------------------------------------------------------------------------------------------

def _png(path, value):
  path.parent.mkdir(parents=True, exist_ok=True)
  PILImage.fromarray(np.full((20, 20, 3), value, np.uint8)).save(path)


def _webdataset(root):
  (root / "shards").mkdir()
  data = _tar_bytes(_webdataset_samples())
  (root / "shards" / "00000.tar").write_bytes(data)
  (root / "shards" / "00001.tar").write_bytes(_tar_bytes([_img2dataset_sample(i) for i in range(4)]))
  (root / "gz" / "deep").mkdir(parents=True)
  (root / "gz" / "deep" / "00000.tar.gz").write_bytes(gzip.compress(data))
  # Cut inside the data: the samples before the cut, then one truncated_tar naming the file.
  (root / "broken").mkdir()
  (root / "broken" / "cut.tar").write_bytes(data[:len(data) // 2])


def _parquet(root):
  pictures = [_encoded(20 * i) for i in range(6)]
  (root / "img").mkdir()
  for i, data in enumerate(pictures[:5]):      # img/5.jpg is missing: a missing_file when decoded
    (root / "img" / f"{i}.jpg").write_bytes(data)
  struct = [dict(bytes=pictures[0], path=None), dict(bytes=None, path="img/1.jpg"), None,
            dict(bytes=None, path="img/5.jpg"), dict(bytes=pictures[4], path=None), None]
  pq.write_table(pa.table(dict(
      hf=pa.array(struct, pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
      rel=pa.array([f"img/{i}.jpg" for i in range(6)]),
      caption=pa.array(["c0", "c1", "c2", "c3", "c4", None]))), root / "pairs.parquet", row_group_size=2)


def _documents(root):
  (root / "pics" / "b.jpg").parent.mkdir()
  (root / "pics" / "b.jpg").write_bytes(_encoded(7))
  docs = [dict(texts=["Intro.", None, "Middle", None, "End."],
               images=[None, "pics/a.jpg", None, dict(path="pics/b.jpg"), None]),
          dict(texts=["a", None], images=[None])]
  lines = [json.dumps(d) for d in docs]
  lines.insert(1, "{oops")
  (root / "docs.jsonl").write_text("\n".join(lines) + "\n\n")
  pq.write_table(pa.table(dict(texts=pa.array([["x", None], ["only text"]], pa.list_(pa.string())),
                               images=pa.array([[None, "pics/b.jpg"], [None]], pa.list_(pa.string())))),
                 root / "obelics.parquet", row_group_size=1)
  for i in (1, 2):
    (root / "coco" / f"{i}.jpg").parent.mkdir(exist_ok=True)
    (root / "coco" / f"{i}.jpg").write_bytes(_encoded(40 * i))
  (root / "llava.json").write_text(json.dumps(LLAVA, indent=2))
  (root / "llava.jsonl").write_text("\n".join([json.dumps(LLAVA[0]), "[not, json", json.dumps(LLAVA[1])]))
  with gzip.open(root / "c4.jsonl.gz", "wt") as f:
    f.write("\n".join(json.dumps(dict(text=t)) for t in ["First document.", "", "Last."]))


def _sources(root):
  _png(root / "pairs" / "a.png", 10)
  _png(root / "pairs" / "sub" / "b.png", 30)
  lines = [json.dumps({"image": "a.png", "text": "a grey square"}), "{not json",
           json.dumps({"image": "sub/b.png", "text": "a darker one"}),
           json.dumps({"image": "gone.png", "text": "no such image"})]
  (root / "pairs" / "data.jsonl").write_text("\n".join(lines))
  _png(root / "classes" / "cats" / "1.png", 1)
  _png(root / "classes" / "dogs" / "2.png", 2)
  _png(root / "classes" / "dogs" / "deep" / "3.png", 3)
  (root / "classes" / "dogs" / "2.txt").write_text("a very good dog\r\nsecond line")
  (root / "classes" / "cats" / "._1.png").write_bytes(b"\x00\x05\x16\x07")     # macOS metadata
  (root / "records.jsonl").write_text('\n{"a": 1}\n   \n{"a": 2, "b": "x"}\r\n')


@pytest.fixture(scope="module")
def local_tree(tmp_path_factory):
  root = tmp_path_factory.mktemp("raw")
  for build in (_webdataset, _parquet, _documents, _sources):
    build(root)
  return root


def _upload_tree(local_root, remote_root: str) -> None:
  for folder, _, names in os.walk(local_root):
    for name in names:
      rel = os.path.relpath(os.path.join(folder, name), local_root)
      storage.upload(os.path.join(folder, name), f"{remote_root}/{rel}")


@pytest.fixture
def trees(local_tree, gcs_bucket):
  """(local root, bucket root) holding the same files."""
  remote = f"{gcs_bucket}/raw"
  _upload_tree(local_tree, remote)
  return str(local_tree), remote


# ---------------------------------------------------------------------------------------------------
# Comparing what the two give.
# ---------------------------------------------------------------------------------------------------

def _moved(value, old: str, new: str):
  """`value` with every path string under `old` spelled under `new` (records, spans, skips)."""
  if isinstance(value, str):
    return new + value[len(old):] if value.startswith(old) else value
  if isinstance(value, tuple):
    return tuple(_moved(v, old, new) for v in value)
  if dataclasses.is_dataclass(value):
    return dataclasses.replace(value, **{f.name: _moved(getattr(value, f.name), old, new)
                                         for f in dataclasses.fields(value)})
  return value


def _image_refs(items) -> list:
  out = []
  for item in items:
    if isinstance(item, RawExample):
      out.append(item.image)
    elif isinstance(item, Document):
      out.extend(s.image for s in item.spans if isinstance(s, ImageSpan))
  return out


def _decoded(ref):
  try:
    return images.decode(ref)
  except images.BadImage as e:
    return e.reason


def _assert_same_images(remote_items, local_items) -> None:
  """Every image a record names decodes to the same pixels (or the same counted reason) from the
  bucket as from the local folder: relative paths really were resolved on the bucket."""
  pairs = list(zip(_image_refs(remote_items), _image_refs(local_items), strict=True))
  assert any(isinstance(r, str) and r.startswith("gs://") for r, _ in pairs)
  for remote, local in pairs:
    want, got = _decoded(local), _decoded(remote)
    assert type(want) is type(got) and np.array_equal(want, got), (remote, local)


def _read(name, pattern, **config):
  data_config = dict(dict(image_column="image", text_column="text", image_root=None), **config)
  shards = formats.format_shards(name, pattern, "train", data_config)
  return [s.name for s in shards], [item for s in shards for item in s.read()]


# ---------------------------------------------------------------------------------------------------
# Tests.
# ---------------------------------------------------------------------------------------------------

FORMAT_CASES = [
    ("webdataset", "shards/{00000..00001}.tar", {}),
    ("webdataset", "**/*.tar.gz", {}),
    ("webdataset", "broken/*.tar", {}),
    ("parquet", "pair?.parquet", dict(image_column="hf", text_column="caption")),
    ("parquet", "pairs.parquet", dict(image_column="rel", text_column="caption")),
    ("interleaved", "{docs.jsonl,obelics.parquet}", {}),
    ("chat", "llava.json", {}),
    ("chat", "llava.jsonl", {}),
    ("text", "c4.jsonl.gz", {}),
]


def test_every_format_reads_the_same_records_from_a_bucket(trees):
  local, remote = trees
  kinds = set()
  for name, pattern, config in FORMAT_CASES:
    local_names, local_items = _read(name, f"{local}/{pattern}", **config)
    remote_names, remote_items = _read(name, f"{remote}/{pattern}", **config)
    assert local_items, (name, pattern)
    assert remote_names == local_names, (name, pattern)
    assert remote_items == [_moved(i, local, remote) for i in local_items], (name, pattern)
    if any(isinstance(r, str) for r in _image_refs(local_items)):
      _assert_same_images(remote_items, local_items)
    kinds |= {type(i).__name__ for i in remote_items}
  # Every kind of item was compared (a reader that yields nothing from a bucket cannot pass).
  assert kinds == {"RawExample", "Document", "Skipped"}


def test_sources_read_the_same_examples_from_a_bucket(trees):
  local, remote = trees
  for name, sub in (("jsonl", "pairs/data.jsonl"), ("folder", "classes")):
    got = [sources.open_source(ml_collections.ConfigDict(dict(name=name, path=f"{root}/{sub}", seed=3)))
           for root in (local, remote)]
    assert len(got[1]) == len(got[0]) > 0 and got[1].class_names == got[0].class_names
    local_items, remote_items = [], []
    for i in range(len(got[0])):
      try:
        local_items.append(got[0][i])
      except BadRecord as e:                 # the same line is bad, with the same message
        with pytest.raises(BadRecord) as on_bucket:
          got[1][i]
        assert (on_bucket.value.reason, str(on_bucket.value)) == (e.reason, str(e).replace(local, remote))
        continue
      remote_items.append(got[1][i])
    assert remote_items == [_moved(x, local, remote) for x in local_items]
    _assert_same_images(remote_items, local_items)
  folder = sources.folder(f"{remote}/classes", seed=3)
  assert [x.text for x in (folder[i] for i in range(len(folder)))][1] == "a very good dog"


def test_open_inputs_and_the_strict_jsonl_reader_on_a_bucket(trees):
  local, remote = trees
  shards = inputs.open_inputs(ml_collections.ConfigDict(dict(
      name="webdataset", path=f"{remote}/shards/*.tar", eval_path=f"{remote}/gz/**/*.tar.gz",
      image_root=None)))
  assert [(s.name, s.split) for s in shards.shards] == [("00000", "train"), ("00001", "train"),
                                                         ("deep-00000", "eval")]
  assert [x.text for x in shards.shards[1].read()] == [f"caption {i}" for i in range(4)]
  want = [tuple(_moved(line, local, remote)) for line in jsonl.records(f"{local}/records.jsonl")]
  assert [tuple(line) for line in jsonl.records(f"{remote}/records.jsonl")] == want
  assert [line.number for line in jsonl.records(f"{remote}/records.jsonl")] == [2, 4]


def test_text_tokenizer_loads_from_a_bucket_folder(tmp_path, gcs_bucket):
  proto, added = internlm2_like(16)
  write_hf_folder(tmp_path / "hf", proto, added)
  _upload_tree(tmp_path / "hf", f"{gcs_bucket}/llm/hf_files")
  storage.write_bytes(f"{gcs_bucket}/bare.model", proto)
  local = TextTokenizer.load(str(tmp_path / "hf"), reserved=4)
  text = "<|im_start|>user\na three <boi><eoi> seven<|im_end|>"
  for path in (f"{gcs_bucket}/llm/hf_files", f"{gcs_bucket}/llm/hf_files/tokenizer.model"):
    remote = TextTokenizer.load(path, reserved=4)
    assert (remote.fingerprint, remote.pieces, remote.special) == (local.fingerprint, local.pieces,
                                                                   local.special)
    assert remote.encode(text) == local.encode(text)
  # Without its folder's tokenizer_config.json the chat pieces are not the release's: a different
  # vocabulary, so the folder's added tokens really were read from the bucket above.
  assert TextTokenizer.load(f"{gcs_bucket}/bare.model", reserved=4).fingerprint != local.fingerprint


def test_mixture_folders_on_a_bucket(gcs_bucket):
  meta = dict(text_tokenizer="sha256:1", special=dict(pad=0), splits={})
  for name in ("a", "b"):
    storage.write_text(f"{gcs_bucket}/prepared/{name}/meta.json", json.dumps(meta))
  components = mixture.parse_mixture(ml_collections.ConfigDict(dict(
      path="", mixture=((f"{gcs_bucket}/prepared/a", 1.0), (f"{gcs_bucket}/prepared/b", 2.0)))))
  assert mixture.shared_meta(components) == meta
  with pytest.raises(DataError, match=r"prepared/c holds no prepared data \(no meta\.json\)"):
    mixture.read_meta(f"{gcs_bucket}/prepared/c")


def test_a_missing_bucket_is_one_config_error_naming_the_key(gcs_emulator):
  def config(**kw):
    return ml_collections.ConfigDict(dict(dict(name="webdataset", path="", eval_path=None,
                                               image_root=None, seed=0), **kw))
  cases = [
      ("config.data.path", lambda: inputs.open_inputs(config(path=f"{MISSING_BUCKET}/s/*.tar"))),
      ("config.data.eval_path", lambda: inputs.open_inputs(config(
          path=f"{MISSING_BUCKET}/s/*.tar".replace(MISSING_BUCKET, "/nonexistent-local"),
          eval_path=f"{MISSING_BUCKET}/e/*.tar"))),
      ("config.data.path", lambda: sources.open_source(config(name="jsonl", path=f"{MISSING_BUCKET}/d.jsonl"))),
      ("config.data.path", lambda: sources.open_source(config(name="folder", path=f"{MISSING_BUCKET}/f"))),
      ("config.data.tokenizer", lambda: TextTokenizer.load(f"{MISSING_BUCKET}/hf")),
      ("config.data.mixture[0]", lambda: mixture.shared_meta(mixture.parse_mixture(config(
          mixture=((f"{MISSING_BUCKET}/a", 1.0), ("/nonexistent-local/b", 1.0)))))),
  ]
  for key, call in cases:
    with pytest.raises(ConfigError, match=rf"{re.escape(key)}=gs://no-such"
                                          rf".*bucket {MISSING_BUCKET} does not exist.*gcloud storage "
                                          r"buckets create"):
      call()
  with pytest.raises(ConfigError, match=r"config\.data\.path='gs:/bucket/x' looks like a bucket path"):
    sources.open_source(config(name="jsonl", path="gs:/bucket/x"))


def test_an_image_on_a_refused_bucket_stops_instead_of_counting_a_skip(monkeypatch, gcs_emulator):
  """A missing image object is one counted missing_file; a bucket that refuses this account is the
  same for every image, so it is a ConfigError saying what to grant, not a skip per record."""
  with pytest.raises(images.BadImage) as missing:
    images.decode(f"{MISSING_BUCKET}/x.png")
  assert missing.value.reason == "missing_file"

  class Refused:
    def read_bytes(self):
      raise PermissionError("403 Forbidden")
  monkeypatch.setattr(storage, "path", lambda p, what="path": Refused())
  with pytest.raises(ConfigError, match=r"image=gs://b/x\.png: permission denied on gs://b; grant"):
    images.decode("gs://b/x.png")
