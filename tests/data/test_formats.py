"""Web-scale formats: data written here in each real layout, read back item by item."""

from __future__ import annotations

import gzip
import io
import json
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image as PILImage

from synergen_jax.data import formats
from synergen_jax.data.documents import Document, ImageSpan, Skipped, TextSpan
from synergen_jax.core.errors import DataError
from synergen_jax.data.sources import RawExample

CONFIG = dict(image_column="image", text_column="text", image_root=None)


def _encoded(value: int, fmt: str = "JPEG") -> bytes:
  buf = io.BytesIO()
  PILImage.fromarray(np.full((8, 8, 3), value, np.uint8)).save(buf, fmt)
  return buf.getvalue()


def _tar_bytes(samples) -> bytes:
  """samples: [(key, {ext: bytes})] -> an uncompressed tar, members in order (as img2dataset writes)."""
  buf = io.BytesIO()
  with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
    for key, members in samples:
      for ext, data in members.items():
        info = tarfile.TarInfo(f"{key}.{ext}")
        info.size, info.mtime = len(data), 0
        tar.addfile(info, io.BytesIO(data))
  return buf.getvalue()


def _img2dataset_sample(i: int) -> tuple[str, dict]:
  key = f"{i:09d}"
  return key, dict(jpg=_encoded(10 * i), txt=f"caption {i}".encode(),
                   json=json.dumps(dict(key=key, caption=f"caption {i}", status="success")).encode())


def _read(name, path, **config):
  shards = formats.format_shards(name, str(path), "train", dict(CONFIG, **config))
  return [item for shard in shards for item in shard.read()]


# ---------------------------------------------------------------------------------------------------
# Patterns.
# ---------------------------------------------------------------------------------------------------

def test_brace_ranges_lists_and_globs(tmp_path):
  shards = tmp_path / "shards"
  (shards / "sub" / "deep").mkdir(parents=True)
  for i in range(5):
    (shards / f"{i:05d}.tar").write_bytes(b"")
  (shards / "sub" / "deep" / "00000.tar").write_bytes(b"")
  (shards / "00000_stats.json").write_text("{}")
  want = [str(shards / f"{i:05d}.tar") for i in range(5)]
  assert formats.expand_paths(f"{shards}/{{00000..00004}}.tar") == want
  assert formats.expand_paths(f"{shards}/*.tar") == want
  assert formats.expand_paths(f"{shards}/0000?.tar") == want
  assert formats.expand_paths(f"{shards}/{{00004,00001,00001}}.tar") == [want[1], want[4]]
  assert formats.expand_paths(f"{shards}/{{00000..00002}}.tar") == want[:3]
  # `**` crosses any depth of folders, zero included; `*` never crosses a `/`.
  assert formats.expand_paths(f"{shards}/**/*.tar") == sorted(want + [str(shards / "sub/deep/00000.tar")])
  assert formats.expand_paths(f"{shards}/*/*/*.tar") == [str(shards / "sub/deep/00000.tar")]
  # Two brace groups, a range and a list.
  (tmp_path / "a").mkdir(); (tmp_path / "b").mkdir()
  for d in "ab":
    for i in (8, 9, 10):
      (tmp_path / d / f"{i:02d}.jsonl").write_text("")
  got = formats.expand_paths(f"{tmp_path}/{{a,b}}/{{08..10}}.jsonl")
  assert got == [str(tmp_path / d / f"{i:02d}.jsonl") for d in "ab" for i in (8, 9, 10)]


def test_a_missing_shard_in_a_range_is_named(tmp_path):
  for i in (0, 1, 2, 4):
    (tmp_path / f"{i:05d}.tar").write_bytes(b"")
  with pytest.raises(DataError, match=r"1 of 5 brace expansions match no file: .*00003\.tar") as e:
    formats.expand_paths(f"{tmp_path}/{{00000..00004}}.tar")
  assert "00001.tar" not in str(e.value)
  with pytest.raises(DataError, match=r"nothing/\*\.parquet' matches no files"):
    formats.expand_paths(f"{tmp_path}/nothing/*.parquet")
  with pytest.raises(DataError, match="matches no files"):
    formats.expand_paths(str(tmp_path / "absent.tar"))


def test_shard_names_and_format_checks(tmp_path):
  (tmp_path / "shards" / "part-a").mkdir(parents=True)
  for i in range(3):
    (tmp_path / "shards" / f"{i:05d}.tar").write_bytes(b"")
  (tmp_path / "shards" / "part-a" / "00000.tar").write_bytes(b"")
  shards = formats.format_shards("webdataset", f"{tmp_path}/shards/{{00000..00002}}.tar", "eval", CONFIG)
  assert [(s.name, s.split) for s in shards] == [("00000", "eval"), ("00001", "eval"), ("00002", "eval")]
  shards = formats.format_shards("webdataset", f"{tmp_path}/shards/**/*.tar", "train", CONFIG)
  assert [s.name for s in shards] == ["00000", "00001", "00002", "part-a-00000"]
  # `x.jsonl` and `x.jsonl.gz` both strip to `x`: the collision is broken by a hash of the path.
  (tmp_path / "t").mkdir()
  (tmp_path / "t" / "x.jsonl").write_text("")
  with gzip.open(tmp_path / "t" / "x.jsonl.gz", "wt") as f:
    f.write("")
  names = [s.name for s in formats.format_shards("text", f"{tmp_path}/t/x.*", "train", CONFIG)]
  assert len(set(names)) == 2 and all(n.startswith("x-") for n in names)
  assert names == [s.name for s in formats.format_shards("text", f"{tmp_path}/t/x.*", "train", CONFIG)]
  with pytest.raises(DataError, match="webdataset, parquet, interleaved, chat, text"):
    formats.format_shards("tfrecord", f"{tmp_path}/shards/*.tar", "train", CONFIG)
  (tmp_path / "shards" / "00000_stats.json").write_text("{}")
  with pytest.raises(DataError, match=r"00000_stats\.json.*reads \.tar, \.tar\.gz, \.tgz"):
    formats.format_shards("webdataset", f"{tmp_path}/shards/*", "train", CONFIG)


# ---------------------------------------------------------------------------------------------------
# webdataset.
# ---------------------------------------------------------------------------------------------------

def _webdataset_samples():
  samples = [_img2dataset_sample(i) for i in range(3)]
  samples.append(("000000003", dict(png=_encoded(99, "PNG"),
                                    json=json.dumps(dict(caption="from the json")).encode())))
  samples.append(("000000004", dict(txt=b"no image here", json=b"{}")))
  samples.append(("000000005", dict(jpg=_encoded(5), json=json.dumps(dict(status="ok")).encode())))
  samples.append(_img2dataset_sample(6))
  return samples


def _webdataset_expected(path):
  expected = [RawExample(_encoded(10 * i), f"caption {i}") for i in range(3)]
  expected += [RawExample(_encoded(99, "PNG"), "from the json"),
               Skipped("missing_image", f"{path} key 000000004"),
               Skipped("missing_text", f"{path} key 000000005"),
               RawExample(_encoded(60), "caption 6")]
  return expected


@pytest.mark.parametrize("compressed", [False, True])
def test_webdataset_img2dataset_layout(tmp_path, compressed):
  data = _tar_bytes(_webdataset_samples())
  path = tmp_path / ("00000.tar.gz" if compressed else "00000.tar")
  path.write_bytes(gzip.compress(data) if compressed else data)
  assert _read("webdataset", path) == _webdataset_expected(path)


def _member_offsets(data: bytes) -> list[tuple[str, int, int]]:
  """(name, header offset, data offset) of each member."""
  with tarfile.open(fileobj=io.BytesIO(data)) as tar:
    return [(m.name, m.offset, m.offset_data) for m in tar.getmembers()]


def test_broken_tars_yield_what_came_before(tmp_path):
  samples = [_img2dataset_sample(i) for i in range(6)]
  data = _tar_bytes(samples)
  members = _member_offsets(data)
  good = [RawExample(_encoded(10 * i), f"caption {i}") for i in range(6)]

  def read(name, blob):
    (tmp_path / name).write_bytes(blob)
    items = _read("webdataset", tmp_path / name)
    assert isinstance(items[-1], Skipped) and items[-1].reason == "truncated_tar"
    assert items[-1].where.startswith(str(tmp_path / name) + ": ")
    return items[:-1], items[-1].where

  # Cut inside the data of sample 3's .txt: samples 0-2 are whole, sample 3 is lost with the cut.
  _, _, txt3 = next(m for m in members if m[0] == "000000003.txt")
  before, why = read("cut_data.tar", data[:txt3 + 2])
  assert before == good[:3] and "unexpected end of data" in why
  # Cut exactly before sample 4's first header: tarfile alone would end quietly with sample 3 done;
  # sample 3 could be incomplete (its .json lost), so it is dropped with the break.
  header4 = next(m[1] for m in members if m[0] == "000000004.jpg")
  before, why = read("cut_header.tar", data[:header4])
  assert before == good[:3] and "without the end-of-archive blocks" in why
  # A header overwritten with junk in the middle of the file.
  junk = bytearray(data)
  junk[header4:header4 + 512] = b"\x01" * 512
  before, why = read("junk.tar", bytes(junk))
  assert before == good[:3] and f"invalid tar header at byte {header4}" in why
  # A gzip stream that lost its trailer (CRC and length) after the whole tar: it is read to the end
  # so gzip checks it, and the last sample goes with the break.
  before, why = read("cut.tar.gz", gzip.compress(data)[:-8])
  assert before == good[:5] and "end-of-stream marker" in why
  # Not a tar at all.
  before, _ = read("text.tar", b"hello, not a tar" * 64)
  assert before == []
  # A whole archive ends with its zero blocks: no skip.
  (tmp_path / "whole.tar").write_bytes(data)
  assert _read("webdataset", tmp_path / "whole.tar") == good


class _Counting:
  """A file object that counts the bytes read through it."""

  def __init__(self, f, counter):
    self.f, self.counter = f, counter

  def read(self, size=-1):
    data = self.f.read(size)
    self.counter[0] += len(data)
    return data

  def __iter__(self):
    for line in self.f:
      self.counter[0] += len(line)
      yield line

  def __getattr__(self, name):
    return getattr(self.f, name)

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.f.close()


def _counting_open(monkeypatch):
  counter, real = [0], formats._open
  monkeypatch.setattr(formats, "_open", lambda path: _Counting(real(path), counter))
  return counter


def test_webdataset_streams_a_large_shard(tmp_path, monkeypatch):
  rng = np.random.default_rng(0)
  samples = [(f"{i:09d}", dict(jpg=rng.bytes(16_384), txt=f"c{i}".encode())) for i in range(300)]
  (tmp_path / "big.tar").write_bytes(_tar_bytes(samples))
  size = (tmp_path / "big.tar").stat().st_size
  counter = _counting_open(monkeypatch)
  reader = formats.format_shards("webdataset", str(tmp_path / "big.tar"), "train", CONFIG)[0].read()
  first = next(reader)
  assert first == RawExample(samples[0][1]["jpg"], "c0")
  assert counter[0] < size / 50         # the first sample came after ~70 KB of a 5 MB shard
  assert sum(1 for _ in reader) == 299 and counter[0] >= size - 10_240


# ---------------------------------------------------------------------------------------------------
# parquet.
# ---------------------------------------------------------------------------------------------------

def test_parquet_bytes_struct_and_path_columns(tmp_path):
  images = [_encoded(20 * i) for i in range(6)]
  (tmp_path / "img").mkdir()
  for i, data in enumerate(images):
    (tmp_path / "img" / f"{i}.jpg").write_bytes(data)
  struct = [dict(bytes=images[0], path=None), dict(bytes=None, path="img/1.jpg"),
            dict(bytes=images[2], path="ignored.jpg"), None, dict(bytes=images[4], path=None),
            dict(bytes=images[5], path=None)]
  table = pa.table(dict(
      raw=pa.array([images[0], images[1], images[2], images[3], None, images[5]], pa.binary()),
      hf=pa.array(struct, pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
      rel=pa.array([f"img/{i}.jpg" for i in range(6)]),
      caption=pa.array(["c0", "c1", "c2", "c3", "c4", None]),
      unused=pa.array([b"x" * 10] * 6)))
  pq.write_table(table, tmp_path / "pairs.parquet", row_group_size=2)
  path = tmp_path / "pairs.parquet"
  assert pq.ParquetFile(path).metadata.num_row_groups == 3

  def where(i):
    return f"{path} row group {i // 2} row {i % 2}"

  assert _read("parquet", path, image_column="raw", text_column="caption") == [
      RawExample(images[i], f"c{i}") for i in range(4)] + [
      Skipped("missing_image", where(4)), Skipped("missing_text", where(5))]
  assert _read("parquet", path, image_column="hf", text_column="caption") == [
      RawExample(images[0], "c0"), RawExample(str(tmp_path / "img/1.jpg"), "c1"),
      RawExample(images[2], "c2"), Skipped("missing_image", where(3)),
      RawExample(images[4], "c4"), Skipped("missing_text", where(5))]
  got = _read("parquet", path, image_column="rel", text_column="caption", image_root="/data/root")
  assert [g.image for g in got[:5]] == [f"/data/root/img/{i}.jpg" for i in range(5)]
  got = _read("parquet", path, image_column="rel", text_column="caption")
  assert [open(g.image, "rb").read() for g in got[:5]] == images[:5]


def test_parquet_corrupt_row_group_is_counted_once_and_skipped(tmp_path):
  images = [_encoded(30 * i) for i in range(6)]
  table = pa.table(dict(image=images, text=[f"t{i}" for i in range(6)]))
  path = tmp_path / "pairs.parquet"
  pq.write_table(table, path, row_group_size=2, use_dictionary=False)
  # Overwrite the page header of row group 1's image column chunk, found by the file's metadata.
  chunk = pq.ParquetFile(path).metadata.row_group(1).column(0)
  data = bytearray(path.read_bytes())
  data[chunk.data_page_offset:chunk.data_page_offset + 16] = b"\xff" * 16
  path.write_bytes(bytes(data))
  items = _read("parquet", path)
  assert items[:2] == [RawExample(images[0], "t0"), RawExample(images[1], "t1")]
  assert items[2].reason == "unreadable_row_group" and items[2].where.startswith(f"{path} row group 1: ")
  assert items[3:] == [RawExample(images[4], "t4"), RawExample(images[5], "t5")]
  # A file whose footer is gone is one skip, not a crash.
  (tmp_path / "junk.parquet").write_bytes(b"PAR1" + b"\x00" * 100)
  assert [i.reason for i in _read("parquet", tmp_path / "junk.parquet")] == ["unreadable_file"]


def test_parquet_missing_column_names_what_to_set(tmp_path):
  pq.write_table(pa.table(dict(jpg=[b"x"], caption=["c"])), tmp_path / "p.parquet")
  with pytest.raises(DataError, match=r"p\.parquet: no column 'image' \(columns: jpg, caption\); "
                                      r"set config\.data\.image_column"):
    _read("parquet", tmp_path / "p.parquet", text_column="caption")
  with pytest.raises(DataError, match=r"no column 'text'.*config\.data\.text_column"):
    _read("parquet", tmp_path / "p.parquet", image_column="jpg")
  with pytest.raises(DataError, match=r"text column 'jpg' is binary"):
    _read("parquet", tmp_path / "p.parquet", image_column="jpg", text_column="jpg")


def test_parquet_streams_row_groups(tmp_path, monkeypatch):
  rng = np.random.default_rng(1)
  blobs = [rng.bytes(65_536) for _ in range(40)]
  pq.write_table(pa.table(dict(image=blobs, text=[f"t{i}" for i in range(40)],
                               other=[rng.bytes(65_536) for _ in range(40)])),
                 tmp_path / "big.parquet", row_group_size=4, compression="none")
  size = (tmp_path / "big.parquet").stat().st_size
  counter = _counting_open(monkeypatch)
  reader = formats.format_shards("parquet", str(tmp_path / "big.parquet"), "train", CONFIG)[0].read()
  assert next(reader) == RawExample(blobs[0], "t0")
  assert counter[0] < size / 8           # the footer and one row group's two columns, of 10 groups
  assert [r.text for r in reader] == [f"t{i}" for i in range(1, 40)]
  assert counter[0] < size * 0.6         # the `other` column was never read


# ---------------------------------------------------------------------------------------------------
# interleaved.
# ---------------------------------------------------------------------------------------------------

def test_interleaved_jsonl_documents(tmp_path):
  img = _encoded(7)
  (tmp_path / "pics").mkdir()
  (tmp_path / "pics" / "b.jpg").write_bytes(img)
  docs = [
      dict(texts=["Intro.", None, "Middle", None, "End."], images=[None, "pics/a.jpg", None,
                                                                    dict(path="pics/b.jpg"), None],
           metadata=dict(url="x")),
      dict(texts=["a", None], images=[None]),
      dict(texts=["a", "b"], images=[None, "x.jpg"]),
      dict(texts=["a", None], images=[None, None]),
      dict(texts=[None, ""], images=["x.jpg", None]),
      dict(texts=["a", 5], images=[None, None]),
  ]
  lines = [json.dumps(d) for d in docs]
  lines.insert(2, "{oops")
  (tmp_path / "docs.jsonl").write_text("\n".join(lines) + "\n\n")
  path = tmp_path / "docs.jsonl"
  items = _read("interleaved", path)
  where = [f"{path}:{n}" for n in range(1, 8)]
  assert items[0] == Document((TextSpan("Intro.", True), ImageSpan(str(tmp_path / "pics/a.jpg"), True),
                               TextSpan("Middle", True), ImageSpan(str(tmp_path / "pics/b.jpg"), True),
                               TextSpan("End.", True)), task="interleaved", key=where[0])
  assert [(i.reason, i.where.split(": ")[0]) for i in items[1:]] == [
      ("bad_document", where[1]), ("bad_json", where[2]), ("bad_document", where[3]),
      ("bad_document", where[4]), ("missing_text", where[5]), ("bad_document", where[6])]
  assert "1 texts but 2 images" in items[1].where or "2 texts but 1 images" in items[1].where
  assert "both" in items[3].where and "neither" in items[4].where


def test_interleaved_parquet_documents(tmp_path):
  a, b = _encoded(1), _encoded(2)
  image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
  table = pa.table(dict(
      texts=pa.array([[None, "A cat.", None, "Another."], ["only text"], ["x", None]],
                     pa.list_(pa.string())),
      images=pa.array([[dict(bytes=a, path=None), None, dict(bytes=b, path="b.jpg"), None], [None],
                       [None]], pa.list_(image_type))))
  pq.write_table(table, tmp_path / "obelics.parquet", row_group_size=2)
  path = tmp_path / "obelics.parquet"
  items = _read("interleaved", path)
  assert items[:2] == [
      Document((ImageSpan(a, True), TextSpan("A cat.", True), ImageSpan(b, True),
                TextSpan("Another.", True)), "interleaved", f"{path} row group 0 row 0"),
      Document((TextSpan("only text", True),), "interleaved", f"{path} row group 0 row 1")]
  assert items[2].reason == "bad_document" and items[2].where.startswith(f"{path} row group 1 row 0")


# ---------------------------------------------------------------------------------------------------
# chat.
# ---------------------------------------------------------------------------------------------------

LLAVA = [
    dict(id="two-images", images=["coco/1.jpg", "coco/2.jpg"], conversations=[
        dict(**{"from": "system"}, value="Be brief."),
        dict(**{"from": "human"}, value="<image>\nWhat is in the first image?"),
        dict(**{"from": "gpt"}, value="A dog."),
        dict(**{"from": "human"}, value="And here? <image>"),
        dict(**{"from": "gpt"}, value="A cat.")]),
    dict(id="text-only", conversations=[dict(role="user", content="Hi"),
                                        dict(role="assistant", content="Hello!")]),
    dict(id="mismatch", image="coco/3.jpg", conversations=[
        dict(**{"from": "human"}, value="No placeholder"), dict(**{"from": "gpt"}, value="x")]),
    dict(id="two-humans", conversations=[dict(**{"from": "human"}, value="a"),
                                         dict(**{"from": "human"}, value="b")]),
    dict(id="bad-role", conversations=[dict(**{"from": "bot"}, value="a"),
                                       dict(**{"from": "gpt"}, value="b")]),
    dict(id="no-answer", conversations=[dict(**{"from": "human"}, value="a")]),
]


def _chat_expected(key, root):
  first = Document((
      TextSpan("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n", False),
      ImageSpan(f"{root}/coco/1.jpg", False),
      TextSpan("\nWhat is in the first image?<|im_end|>\n<|im_start|>assistant\n", False),
      TextSpan("A dog.<|im_end|>", True),
      TextSpan("\n<|im_start|>user\nAnd here? ", False),
      ImageSpan(f"{root}/coco/2.jpg", False),
      TextSpan("<|im_end|>\n<|im_start|>assistant\n", False),
      TextSpan("A cat.<|im_end|>", True),
      TextSpan("\n", False)), task="chat", key=key(1))
  second = Document((TextSpan("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n", False),
                     TextSpan("Hello!<|im_end|>", True), TextSpan("\n", False)), "chat", key(2))
  return [first, second]


def test_chat_json_array_renders_internlm2(tmp_path):
  (tmp_path / "llava.json").write_text(json.dumps(LLAVA, indent=2))
  path = tmp_path / "llava.json"
  items = _read("chat", path, image_root="/images")
  lines = [1 + n for n, line in enumerate(json.dumps(LLAVA, indent=2).splitlines()) if line == "  {"]

  def key(k):
    return f"{path}:{lines[k - 1]}"
  assert items[:2] == _chat_expected(key, "/images")
  assert [(i.reason, i.where.split(": ")[0]) for i in items[2:]] == [
      ("image_count_mismatch", key(3)), ("bad_conversation", key(4)), ("bad_conversation", key(5)),
      ("bad_conversation", key(6))]
  assert "unknown role 'bot'" in items[4].where and "no assistant answer" in items[5].where
  text = "".join(s.text for s in items[0].spans if isinstance(s, TextSpan))
  assert text.count("<|im_start|>") == 5 and text.count("<|im_end|>") == 5


def test_chat_jsonl_relative_paths_and_bad_lines(tmp_path):
  lines = [json.dumps(LLAVA[0]), "[not, json", json.dumps(LLAVA[1])]
  (tmp_path / "llava.jsonl").write_text("\n".join(lines))
  path = tmp_path / "llava.jsonl"
  items = _read("chat", path)
  assert items[0] == _chat_expected(lambda k: f"{path}:1", str(tmp_path))[0]
  assert items[1].reason == "bad_json" and items[1].where.startswith(f"{path}:2: ")
  assert items[2].key == f"{path}:3" and items[2].spans[1] == TextSpan("Hello!<|im_end|>", True)


def test_json_array_is_parsed_incrementally(tmp_path, monkeypatch):
  records = [dict(i=i, text="x" * (i * 37), nested=[dict(k=[1.5, None, True])] * (i % 3))
             for i in range(60)]
  (tmp_path / "a.json").write_text("\ufeff" + json.dumps(records, indent=1) + "\n")
  # Tiny chunks: elements straddle chunk ends, numbers are cut mid-way, some are many chunks long.
  monkeypatch.setattr(formats, "_JSON_CHUNK", 5)
  got = list(formats._json_array(str(tmp_path / "a.json")))
  assert [v for _, v in got] == records
  lines = (tmp_path / "a.json").read_text().splitlines()
  assert all(lines[int(w.rsplit(":", 1)[1]) - 1].strip() == "{" for w, _ in got)
  (tmp_path / "num.json").write_text("[12345, 678]")
  assert [v for _, v in formats._json_array(str(tmp_path / "num.json"))] == [12345, 678]
  (tmp_path / "bad.json").write_text('[{"a": 1},\n {"b": 2}\n {"c": 3}]')
  got = list(formats._json_array(str(tmp_path / "bad.json")))
  assert got[:2] == [(f"{tmp_path}/bad.json:1", dict(a=1)), (f"{tmp_path}/bad.json:2", dict(b=2))]
  assert got[2].reason == "bad_json" and got[2].where.startswith(f"{tmp_path}/bad.json:3")
  (tmp_path / "obj.json").write_text('{"data": []}')
  with pytest.raises(DataError, match="must hold one JSON array"):
    _read("chat", tmp_path / "obj.json")


def test_json_array_streams(tmp_path, monkeypatch):
  records = [dict(conversations=[dict(**{"from": "human"}, value="q" * 1000),
                                 dict(**{"from": "gpt"}, value=f"a{i}")]) for i in range(3000)]
  (tmp_path / "big.json").write_text(json.dumps(records))
  size = (tmp_path / "big.json").stat().st_size
  counter = _counting_open(monkeypatch)
  reader = formats.format_shards("chat", str(tmp_path / "big.json"), "train", CONFIG)[0].read()
  assert next(reader).spans[1] == TextSpan("a0<|im_end|>", True)
  assert counter[0] <= formats._JSON_CHUNK < size / 2
  assert sum(1 for _ in reader) == 2999


# ---------------------------------------------------------------------------------------------------
# text.
# ---------------------------------------------------------------------------------------------------

def test_text_jsonl(tmp_path):
  lines = [dict(content="First document."), dict(content=""), dict(content="  "),
           dict(content=None), dict(other="x"), dict(content=["a"]), dict(content="Last.")]
  with gzip.open(tmp_path / "c4.jsonl.gz", "wt") as f:
    f.write("\n".join(json.dumps(l) for l in lines))
  path = tmp_path / "c4.jsonl.gz"
  items = _read("text", path, text_column="content")
  assert items[0] == Document((TextSpan("First document.", True),), "text", f"{path}:1")
  assert items[-1] == Document((TextSpan("Last.", True),), "text", f"{path}:7")
  assert [(i.reason, i.where.split(": ")[0]) for i in items[1:-1]] == [
      ("missing_text", f"{path}:{n}") for n in (2, 3, 4, 5)] + [("bad_json", f"{path}:6")]
  with pytest.raises(DataError, match=r"c4\.jsonl\.gz:1: no key 'text' \(keys: content\); set "
                                      r"config\.data\.text_column"):
    _read("text", path)
