"""prepare on the web-scale formats: pairs get the task mix, documents are written as they come
(loss where the format puts it), broken images do what data/decoding.py says, counts reach meta."""

import io
import json
import os
import tarfile

import numpy as np
import pytest
from grain.sources import ArrayRecordDataSource
from PIL import Image as PILImage

from synergen_jax.core.batch import IMAGE, TEXT
from synergen_jax.data import images
from synergen_jax.data.records import TASK_IDS, decode_record, record_parts
from synergen_jax.data.tokenizers import TextTokenizer
from synergen_jax.prepare.writer import prepare


def _png(seed, size=(20, 24)):
  pixels = np.random.default_rng(seed).integers(0, 256, size + (3,), dtype=np.uint8)
  buf = io.BytesIO()
  PILImage.fromarray(pixels).save(buf, format="PNG")
  return buf.getvalue()


def _config(tiny_data, name, path, **data):
  config = tiny_data["config"].copy_and_resolve_references()
  config.data.update(name=name, path=str(path), eval_count=0, **data)
  config.data.tasks.update(caption=1.0, generation=1.0, interleaved=0.0)
  return config


def _records(out, meta, split="train"):
  source = ArrayRecordDataSource([os.path.join(out, f) for f in meta["splits"][split]["shards"]])
  return [decode_record(source[i]) for i in range(len(source))]


def _tar(path, samples):
  with tarfile.open(path, "w") as tar:
    for name, data in samples:
      info = tarfile.TarInfo(name)
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))


def test_webdataset_shards_become_parts_with_the_task_mix(tiny_data, tmp_path):
  for shard in range(2):
    _tar(tmp_path / f"{shard:05d}.tar",
         [item for k in range(5) for item in (
             (f"{shard:04d}{k:05d}.png", _png(10 * shard + k)),
             (f"{shard:04d}{k:05d}.txt", f"random noise number {10 * shard + k}".encode()))])
  whole = (tmp_path / "00001.tar").read_bytes()
  _tar(tmp_path / "00002.tar", [("000200000.png", _png(99)), ("000200000.txt", b"kept sample"),
                                ("000200001.png", _png(98)), ("000200001.txt", b"lost sample")])
  cut = (tmp_path / "00002.tar").read_bytes()
  (tmp_path / "00002.tar").write_bytes(cut[:len(cut) // 2 + 700])  # inside the third member
  assert (tmp_path / "00001.tar").read_bytes() == whole
  config = _config(tiny_data, "webdataset", tmp_path / "{00000..00002}.tar")
  out = str(tmp_path / "out")
  meta = prepare(config, out, tiny_data["image_tokenizer"])
  assert meta["parts"] == 3 and meta["skipped"] == dict(truncated_tar=1)
  assert "00002.tar" in meta["skipped_where"]["truncated_tar"][0]     # which file to go and look at
  assert meta["splits"]["train"]["records"] == 11 and meta["raw_records"] == 12
  records = _records(out, meta)
  assert len(records) == 22
  tok = tiny_data["image_tokenizer"]
  for r in records:
    number = r["caption"].split()[-1]
    seed = int(number) if number.isdigit() else 99
    pixels = images.fit(images.decode(_png(seed)), tok.image_size, tok.channels, "resize")
    codes = tok.encode(pixels[None])[0]
    np.testing.assert_array_equal(r["codes"][0], codes)
  assert sorted({r["caption"] for r in records})[-1] == "random noise number 4"


def _chat_config(tiny_data, tmp_path, records):
  (tmp_path / "chat.jsonl").write_text("\n".join(json.dumps(r) for r in records))
  return _config(tiny_data, "chat", tmp_path / "chat.jsonl")


def test_chat_puts_loss_on_the_answers_only(tiny_data, tmp_path):
  (tmp_path / "a.png").write_bytes(_png(1))
  (tmp_path / "b.png").write_bytes(_png(2))
  conversation = {"images": ["a.png", "b.png"], "conversations": [
      {"from": "human", "value": "<image>\nand <image>\nwhat differs?"},
      {"from": "gpt", "value": "the colours of the noise"},
      {"from": "human", "value": "which is brighter?"},
      {"from": "gpt", "value": "the second one"}]}
  broken = {"image": "missing.png", "conversations": [
      {"from": "human", "value": "<image> what is it?"}, {"from": "gpt", "value": "nothing"}]}
  mismatch = {"image": "a.png", "conversations": [
      {"from": "human", "value": "no placeholder"}, {"from": "gpt", "value": "so skipped"}]}
  config = _chat_config(tiny_data, tmp_path, [conversation, broken, mismatch])
  out = str(tmp_path / "out")
  meta = prepare(config, out, tiny_data["image_tokenizer"])
  assert meta["skipped"] == dict(missing_file=1, image_count_mismatch=1)
  (record,) = _records(out, meta)
  assert record["task"] == TASK_IDS["chat"]
  tok = TextTokenizer.load(os.path.join(out, "tokenizer.model"), config.data.reserved_tokens)
  parts = record_parts(record)
  kinds = [IMAGE if hasattr(p, "codes") else TEXT for p in parts]
  # The newline after the last <|im_end|> encodes to nothing and adds no (empty) part.
  assert kinds == [TEXT, IMAGE, TEXT, IMAGE, TEXT, TEXT, TEXT, TEXT]
  assert all(len(p.tokens) for p in parts if not hasattr(p, "codes"))
  answers = [tok.decode(p.tokens) for p in parts if p.loss]
  assert answers == ["the colours of the noise<|im_end|>", "the second one<|im_end|>"]
  end = tok.encode("<|im_end|>")
  assert len(end) == 1 and all(list(p.tokens)[-1] == end[0] for p in parts if p.loss)
  assert not any(p.loss for p in parts if hasattr(p, "codes"))


def test_interleaved_document_loses_only_its_broken_image(tiny_data, tmp_path):
  (tmp_path / "a.png").write_bytes(_png(3))
  (tmp_path / "bad.png").write_bytes(b"not an image")
  docs = [{"texts": ["a page about noise", None, "then a broken picture", None],
           "images": [None, "a.png", None, "bad.png"]},
          {"texts": [None], "images": ["bad.png"]}]
  (tmp_path / "docs.jsonl").write_text("\n".join(json.dumps(d) for d in docs))
  config = _config(tiny_data, "interleaved", tmp_path / "docs.jsonl")
  out = str(tmp_path / "out")
  meta = prepare(config, out, tiny_data["image_tokenizer"])
  assert meta["dropped_images"] == dict(undecodable_image=1)
  assert meta["skipped"] == dict(missing_text=1)      # the second document has no text at all
  (record,) = _records(out, meta)
  assert record["task"] == TASK_IDS["interleaved"]
  assert list(record["kinds"]) == [TEXT, IMAGE, TEXT] and all(record["loss"])


def test_text_documents_are_all_loss(tiny_data, tmp_path):
  (tmp_path / "t.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in
                                              ["plain language data", "", "more plain text"]))
  out = str(tmp_path / "out")
  meta = prepare(_config(tiny_data, "text", tmp_path / "t.jsonl"), out, tiny_data["image_tokenizer"])
  assert meta["skipped"] == dict(missing_text=1) and meta["splits"]["train"]["tasks"]["text"] == 2
  records = _records(out, meta)
  tok = TextTokenizer.load(os.path.join(out, "tokenizer.model"), 8)
  assert [tok.decode(r["text"]) for r in records] == ["plain language data", "more plain text"]
  assert all(list(r["loss"]) == [1] and list(r["kinds"]) == [TEXT] for r in records)


def test_an_eval_path_gives_the_eval_split(tiny_data, tmp_path):
  for name, texts in (("train", ["one line", "two lines"]), ("eval", ["held out line"])):
    (tmp_path / f"{name}.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in texts))
  config = _config(tiny_data, "text", tmp_path / "train.jsonl", eval_path=str(tmp_path / "eval.jsonl"))
  meta = prepare(config, str(tmp_path / "out"), tiny_data["image_tokenizer"])
  assert meta["splits"]["train"]["examples"] == 2 and meta["splits"]["eval"]["examples"] == 1


def test_a_web_format_without_a_path_says_what_to_set(tiny_data, tmp_path):
  config = _config(tiny_data, "webdataset", "")
  config.data.path = None
  with pytest.raises(Exception, match="set config.data.path"):
    prepare(config, str(tmp_path), tiny_data["image_tokenizer"])
