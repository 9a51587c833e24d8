"""prepare: records hold what the sources said, bad input is counted by reason, meta is complete."""

import collections
import io
import json

import numpy as np
import pytest
from PIL import Image as PILImage

from synergen_jax.data import images
from synergen_jax.core.errors import DataError
from synergen_jax.data.records import TASK_IDS, decode_record
from synergen_jax.prepare.writer import prepare
from synergen_jax.data.sources import mnist5k
from synergen_jax.data.tokenizers import TextTokenizer
from grain.sources import ArrayRecordDataSource


def _records(directory, meta, split):
  source = ArrayRecordDataSource([f"{directory}/{f}" for f in meta["splits"][split]["shards"]])
  return [decode_record(source[i]) for i in range(len(source))]


def test_records_carry_the_source_captions_and_labels(tiny_data):
  meta, directory, config = tiny_data["meta"], tiny_data["data_dir"], tiny_data["config"]
  tok = TextTokenizer.load(f"{directory}/tokenizer.model", config.data.reserved_tokens)
  assert tok.fingerprint == meta["text_tokenizer"]
  assert meta["image_tokenizer"] == tiny_data["image_tokenizer"].fingerprint
  records = _records(directory, meta, "eval")
  assert len(records) == meta["splits"]["eval"]["examples"]
  src = mnist5k()
  by_task = collections.Counter(int(r["task"]) for r in records)
  assert by_task[TASK_IDS["caption"]] == by_task[TASK_IDS["generation"]] == 100
  prompt = tok.encode(config.data.generation_prompt)
  uncond = 0
  for r in records:
    raw = src[int(r["source_index"])]
    assert r["caption"] == raw.text and int(r["label"]) == raw.label
    caption_ids = tok.encode(raw.text)
    if r["task"] == TASK_IDS["caption"]:
      assert list(r["kinds"]) == [1, 0, 0] and list(r["loss"]) == [0, 0, 1]
      assert list(r["text"][-len(caption_ids):]) == caption_ids
    elif r["task"] == TASK_IDS["generation"]:
      assert list(r["kinds"]) == [0, 1] and list(r["loss"]) == [0, 1]
      if tok.special.uncond in r["text"]:
        uncond += 1
      else:
        assert list(r["text"]) == prompt + caption_ids
    else:
      assert list(r["kinds"]) == [1, 0, 1, 0] and all(r["loss"])
  assert 0 < uncond < 40            # p_uncond = 0.1 of 100 generation examples


def test_index_matches_records(tiny_data):
  meta, directory = tiny_data["meta"], tiny_data["data_dir"]
  index = np.load(f"{directory}/eval-index.npz")
  for i, r in enumerate(_records(directory, meta, "eval")):
    assert index["text_len"][i] == len(r["text"]) and index["n_images"][i] == len(r["codes"])


def _png_bytes(value, size=(28, 28)):
  buf = io.BytesIO()
  PILImage.fromarray(np.full(size + (3,), value, np.uint8)).save(buf, format="PNG")
  return buf.getvalue()


def test_bad_records_are_skipped_and_counted_by_reason(tiny_data, tmp_path):
  """A JSONL dataset salted with every kind of bad record."""
  good = 12
  lines = []
  for i in range(good):
    (tmp_path / f"ok{i}.png").write_bytes(_png_bytes(20 * i))
    lines.append(json.dumps({"image": f"ok{i}.png", "text": f"a square of shade {i}"}))
  (tmp_path / "truncated.png").write_bytes(_png_bytes(9)[:40])
  (tmp_path / "garbage.png").write_bytes(b"\x00" * 100)
  (tmp_path / "tiny.png").write_bytes(_png_bytes(1, size=(2, 2)))
  lines += [json.dumps({"image": "truncated.png", "text": "cut"}),
            json.dumps({"image": "garbage.png", "text": "junk"}),
            json.dumps({"image": "missing.png", "text": "gone"}),
            json.dumps({"image": "tiny.png", "text": "two pixels"}),
            json.dumps({"image": "ok0.png", "text": "   "}),
            "{broken"]
  (tmp_path / "data.jsonl").write_text("\n".join(lines))
  config = tiny_data["config"].copy_and_resolve_references()
  config.data.update(name="jsonl", path=str(tmp_path / "data.jsonl"), eval_count=2)
  config.data.tasks.interleaved = 0.0
  meta = prepare(config, str(tmp_path / "out"), tiny_data["image_tokenizer"])
  assert meta["skipped"] == dict(bad_json=1, empty_text=1, missing_file=1, too_small=1,
                                 undecodable_image=2)
  assert meta["skipped_total"] == 6
  kept = meta["splits"]["train"]["records"] + meta["splits"]["eval"]["records"]
  assert kept == good
  assert meta["splits"]["train"]["examples"] == 2 * meta["splits"]["train"]["records"]
  assert json.load(open(tmp_path / "out" / "meta.json")) == meta


def test_wrong_size_is_skipped_under_exact_fit(tiny_data, tmp_path):
  for i, size in enumerate([(16, 16), (16, 16), (16, 16), (20, 16)]):
    (tmp_path / f"{i}.png").write_bytes(_png_bytes(40 * i, size))
    (tmp_path / f"{i}.txt").write_text(f"picture {i}")
  config = tiny_data["config"].copy_and_resolve_references()
  config.data.update(name="folder", path=str(tmp_path), eval_count=1, image_fit="exact")
  config.data.tasks.interleaved = 0.0
  meta = prepare(config, str(tmp_path / "out"), tiny_data["image_tokenizer"])
  assert meta["skipped"] == dict(wrong_size=1)


def test_tokenizer_that_does_not_fit_the_vocab_is_an_error(tiny_data, tmp_path):
  config = tiny_data["config"].copy_and_resolve_references()
  config.data.tokenizer = f"{tiny_data['data_dir']}/tokenizer.model"
  config.model.text_vocab = 20
  with pytest.raises(DataError, match="raise text_vocab to at least"):
    prepare(config, str(tmp_path), tiny_data["image_tokenizer"])


def test_tokenizer_grid_must_match_the_model(tiny_data, tmp_path):
  config = tiny_data["config"].copy_and_resolve_references()
  config.model.codebook_size = 64
  with pytest.raises(DataError, match="codebook_size=64"):
    prepare(config, str(tmp_path), tiny_data["image_tokenizer"])


def test_dynamic_resolution_gives_each_tile_its_own_image_span(tiny_data, tmp_path):
  """A 2:1 image with max_tiles=4 -> a 2x1 grid + thumbnail: three <boi>..<eoi> spans to caption."""
  rng = np.random.default_rng(0)
  for i in range(4):
    PILImage.fromarray(rng.integers(0, 256, (40, 80, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    (tmp_path / f"{i}.txt").write_text(f"wide picture {i}")
  config = tiny_data["config"].copy_and_resolve_references()
  config.data.update(name="folder", path=str(tmp_path), eval_count=1, max_tiles=4, thumbnail=True)
  config.data.tasks.update(generation=0.0, interleaved=0.0)
  meta = prepare(config, str(tmp_path / "out"), tiny_data["image_tokenizer"])
  records = _records(str(tmp_path / "out"), meta, "train")
  assert len(records) == 3
  tok = tiny_data["image_tokenizer"]
  for r in records:
    assert list(r["kinds"]) == [1, 1, 1, 0, 0]
    path = tmp_path / f"{int(r['source_index'])}.png"
    pixels = images.decode(str(path))
    tiles = [images.fit(t, 16, 1, "exact") for t in images.dynamic_tiles(pixels, 16, 4, True)]
    np.testing.assert_array_equal(r["codes"], tok.encode(np.stack(tiles)))
