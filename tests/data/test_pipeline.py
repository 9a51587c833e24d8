"""The Grain pipeline: packing invariants, exact resume, process shards, seeds, bad shards."""

import json
import os
import shutil

import grain
import hypothesis
import hypothesis.strategies as st
import jax
import numpy as np
import pytest
from array_record.python import array_record_module

from helpers import tiny
from synergen_jax.core.config import CAPACITIES
from synergen_jax.data import budgets, layout, pipeline
from synergen_jax.core.errors import DataError
from synergen_jax.data.records import TASK_NAMES, decode_record, encode_record, record_parts


def _config(tiny_data, **data):
  config = tiny_data["config"].copy_and_resolve_references()
  config.data.update(**data)
  return config


def _take(it, n):
  return [next(it) for _ in range(n)]


def _assert_rows_well_formed(batch, mc, special):
  """Each segment is contiguous, positions restart at 0, every <boi> is followed by exactly one
  image's windows (in order) and an <eoi> inside the same segment; padding carries no loss."""
  w = mc.windows_per_image
  for r in range(batch["segment_ids"].shape[0]):
    seg, pos = batch["segment_ids"][r], batch["positions"][r]
    tok, mod, win = batch["text_tokens"][r], batch["modality"][r], batch["window_ids"][r]
    ids = [s for s in seg if s]
    assert ids == sorted(ids) and set(ids) == set(range(1, max(ids) + 1))
    for s in set(ids):
      where = np.flatnonzero(seg == s)
      assert np.array_equal(where, np.arange(where[0], where[-1] + 1))
      np.testing.assert_array_equal(pos[where], np.arange(len(where)))
      assert tok[where[0]] == special.bos and tok[where[-1]] == special.eos
    for t in np.flatnonzero((tok == special.boi) & (mod == layout.TEXT)):
      span = slice(t + 1, t + 1 + w)
      assert np.all(mod[span] == layout.IMAGE) and np.all(seg[span] == seg[t])
      np.testing.assert_array_equal(win[span], np.arange(w))
      assert tok[t + 1 + w] == special.eoi and seg[t + 1 + w] == seg[t]
    pad = seg == 0
    assert not batch["text_weights"][r][pad].any() and not batch["image_weights"][r][pad].any()


@pytest.mark.parametrize("fold", ["1x1", "2x2", "2x4", "4x4"])
def test_real_batches_are_well_formed_for_every_fold(tiny_data, fold):
  config, mc = tiny(f"fold={fold}")
  config.data.update(path=tiny_data["data_dir"], eval_count=100, seq_len=64)
  config.data.tasks.interleaved = 0.25
  it = pipeline.make_iterator(config)
  for batch in _take(it, 3):
    _assert_rows_well_formed(batch, mc, layout.SpecialTokens(**tiny_data["meta"]["special"]))
    assert batch["image_codes"].shape[-1] == mc.fold_ratio


@hypothesis.settings(max_examples=25, deadline=None)
@hypothesis.given(st.lists(st.tuples(st.integers(1, 6), st.integers(0, 2), st.booleans(),
                                     st.booleans()), min_size=1, max_size=30),
                  st.sampled_from([(1, 1), (2, 2), (1, 4)]), st.integers(1, 4),
                  st.tuples(st.integers(4, 40), st.integers(4, 40), st.integers(4, 40)))
def test_packing_never_splits_or_loses_an_example(shapes, fold, bins, limits):
  """Random text lengths, image counts and loss flags through the pipeline's packing stage, under
  random per-row budgets: no row exceeds one, and every example that fits them comes out whole."""
  _, mc = tiny("fold=%dx%d" % fold)
  seq_len = 40
  row_budgets = dict(zip(CAPACITIES, limits))
  rng = np.random.default_rng(len(shapes))
  examples = []
  for n_text, n_images, text_loss, image_loss in shapes:
    parts = [layout.Text(rng.integers(10, 60, n_text), text_loss)]
    parts += [layout.Image(rng.integers(0, 32, (4, 4)), image_loss) for _ in range(n_images)]
    ex = layout.layout_example(parts, fold)
    counts = budgets.slot_counts(ex)
    if len(ex["text_tokens"]) <= seq_len and all(counts[k] <= row_budgets[k] for k in counts):
      examples.append(pipeline.add_budget_features(ex))
  hypothesis.assume(examples)
  rows = list(pipeline.pack_rows(grain.MapDataset.source(examples).to_iter_dataset(), seq_len, bins,
                                 row_budgets))
  batch = {k: np.stack([r[k] for r in rows]) for k in rows[0]}
  _assert_rows_well_formed(batch, mc, layout.SpecialTokens())
  for row in rows:
    for name, count in budgets.slot_counts(row).items():
      assert count <= row_budgets[name], (name, count, row_budgets[name])
  # Every example comes out whole, exactly once, in some row.
  seen = []
  for row in rows:
    for s in range(1, row["segment_ids"].max() + 1):
      where = row["segment_ids"] == s
      seen.append(tuple(row["text_tokens"][where]) + tuple(row["image_codes"][where].ravel()))
  want = [tuple(e["text_tokens"]) + tuple(e["image_codes"].ravel()) for e in examples]
  assert sorted(seen) == sorted(want)


@pytest.mark.parametrize("workers", [0, 1])
def test_restored_iterator_continues_exactly(tiny_data, workers):
  config = _config(tiny_data, num_workers=workers)
  it = pipeline.make_iterator(config)
  _take(it, 3)
  state = it.get_state()
  json.dumps(state)                                # checkpointable as plain JSON
  expected = _take(it, 4)
  restored = pipeline.make_iterator(config)
  restored.set_state(state)
  for want, got in zip(expected, _take(restored, 4)):
    for k in want:
      np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def test_same_seed_same_batches_other_seed_other_batches(tiny_data):
  a = _take(pipeline.make_iterator(_config(tiny_data)), 2)
  b = _take(pipeline.make_iterator(_config(tiny_data)), 2)
  c = _take(pipeline.make_iterator(_config(tiny_data, seed=1)), 2)
  for x, y in zip(a, b):
    for k in x:
      np.testing.assert_array_equal(x[k], y[k])
  assert not np.array_equal(a[0]["text_tokens"], c[0]["text_tokens"])


def test_processes_see_disjoint_shards_covering_the_split(tiny_data):
  mc = tiny_data["mc"]
  split = pipeline.open_split(tiny_data["data_dir"], "train", mc)
  seen = []
  for p in range(2):
    ds, _ = pipeline.record_dataset(split, mc, 1000, seed=0, too_long="skip", shard_index=p,
                                    num_shards=2, num_epochs=1)
    seen.append({int(index) for index, _ in ds})
  assert not seen[0] & seen[1]
  assert seen[0] | seen[1] == set(range(len(split.text_len)))
  assert abs(len(seen[0]) - len(seen[1])) <= 1


def test_epochs_are_reshuffled(tiny_data):
  mc = tiny_data["mc"]
  split = pipeline.open_split(tiny_data["data_dir"], "eval", mc)
  ds, _ = pipeline.record_dataset(split, mc, 1000, seed=0, too_long="skip", shard_index=0,
                                  num_shards=1, num_epochs=2)
  order = [int(i) for i, _ in ds]
  n = len(split.text_len)
  assert sorted(order[:n]) == sorted(order[n:]) == list(range(n)) and order[:n] != order[n:]


def test_too_long_examples_are_counted_or_rejected(tiny_data):
  # fold 1x1 on a 4x4 grid: an image takes 18 slots, so interleaved pairs exceed seq_len 48.
  config, mc = tiny("fold=1x1")
  config.data.update(path=tiny_data["data_dir"], eval_count=100, seq_len=48)
  split = pipeline.open_split(tiny_data["data_dir"], "train", mc)
  reader = grain.sources.ArrayRecordDataSource(list(split.files))
  special = split.special
  lengths = np.asarray([len(layout.layout_example(
      record_parts(decode_record(reader[i])), mc.fold, special)["text_tokens"])
      for i in range(0, len(reader), 97)])
  np.testing.assert_array_equal(lengths, pipeline.example_slots(split.text_len, split.n_images, mc)[::97])
  it = pipeline.make_iterator(config)
  assert it.too_long_skipped == int(np.sum(pipeline.example_slots(split.text_len, split.n_images, mc) > 48))
  assert it.too_long_skipped > 0
  config.data.too_long = "error"
  with pytest.raises(DataError, match=r"train-\d{5}.array_record record \d+ .* takes \d+ slots"):
    pipeline.make_iterator(config)


def test_global_batch_on_the_mesh(tiny_data):
  config = _config(tiny_data)
  config.train.batch_size = 8
  mesh = jax.make_mesh((4, 2, 1), ("data", "fsdp", "tensor"),
                       axis_types=(jax.sharding.AxisType.Auto,) * 3)
  host = next(pipeline.make_iterator(config))
  on_mesh = next(pipeline.make_iterator(config, mesh=mesh))
  for k, v in host.items():
    assert on_mesh[k].sharding.spec == jax.sharding.PartitionSpec(("data", "fsdp"))
    np.testing.assert_array_equal(np.asarray(on_mesh[k]), v)
  with pytest.raises(DataError, match="shards=3 logical data shards must be a multiple of the 3 "
                                     "processes and divide config.train.batch_size=8"):
    pipeline.make_iterator(config, process_index=0, process_count=3)


def test_logical_shards_make_batches_independent_of_the_process_count(tiny_data):
  """With config.data.shards fixed, the processes' rows concatenated are the one-process batch, and
  a state saved by one process restores into two (each taking its own shards)."""
  config = _config(tiny_data)
  config.train.batch_size = 8
  config.data.shards = 4
  one = pipeline.make_iterator(config)
  two = [pipeline.make_iterator(config, process_index=p, process_count=2) for p in range(2)]
  for _ in range(3):
    whole = next(one)
    halves = [next(it) for it in two]
    for k in whole:
      np.testing.assert_array_equal(whole[k], np.concatenate([h[k] for h in halves]))
  state = one.get_state()
  assert sorted(state["shards"]) == ["0", "1", "2", "3"] and state["num_shards"] == 4
  resumed = [pipeline.make_iterator(config, process_index=p, process_count=2) for p in range(2)]
  for it in resumed:
    it.set_state(state)
  whole = next(one)
  halves = [next(it) for it in resumed]
  for k in whole:
    np.testing.assert_array_equal(whole[k], np.concatenate([h[k] for h in halves]))
  # Shard 0's rows are not shard 1's: the shards really are different slices of the data.
  assert not np.array_equal(halves[0]["text_tokens"][:2], halves[0]["text_tokens"][2:4])
  config.data.shards = 2
  with pytest.raises(DataError, match="has 4 logical shards but config.data.shards gives 2"):
    pipeline.make_iterator(config).set_state(state)


def _copy_prepared(tiny_data, tmp_path):
  out = tmp_path / "prepared"
  shutil.copytree(tiny_data["data_dir"], out)
  return out


def test_meta_that_contradicts_the_config_is_an_error(tiny_data, tmp_path):
  config = _config(tiny_data)
  config.model.codebook_size = 16
  with pytest.raises(DataError, match=r"codebook_size 32 != config.model.codebook_size 16"):
    pipeline.make_iterator(config)
  out = _copy_prepared(tiny_data, tmp_path)
  meta = json.loads((out / "meta.json").read_text())
  meta["code_grid"] = [8, 8]
  (out / "meta.json").write_text(json.dumps(meta))
  with pytest.raises(DataError, match=r"code_grid \(8, 8\) != config.model.code_grid \(4, 4\)"):
    pipeline.make_iterator(_config(tiny_data, path=str(out)))
  with pytest.raises(DataError, match="no meta.json"):
    pipeline.make_iterator(_config(tiny_data, path=str(tmp_path)))


@pytest.mark.parametrize("field, value, message", [
    ("codes", 32, r"image code 32 outside \[0, config.model.codebook_size=32\)"),
    ("text", 64, r"text id 64 outside \[0, config.model.text_vocab=64\)"),
    ("text", -1, r"text id -1 outside"),
])
def test_out_of_range_ids_in_a_shard_name_the_record(tiny_data, tmp_path, field, value, message):
  out = _copy_prepared(tiny_data, tmp_path)
  meta = json.loads((out / "meta.json").read_text())
  shard = out / meta["splits"]["eval"]["shards"][0]
  reader = array_record_module.ArrayRecordReader(str(shard))
  records = [decode_record(r) for r in reader.read_all()]
  reader.close()
  # The shortest record: it fits the tiny config's 32 slots (most captioning records do not).
  bad = int(np.argmin([len(r["text"]) + 8 * len(r["codes"]) for r in records]))
  records[bad][field] = records[bad][field].copy()
  records[bad][field].reshape(-1)[0] = value
  os.remove(shard)
  writer = array_record_module.ArrayRecordWriter(str(shard), "group_size:1")
  for r in records:
    writer.write(encode_record(record_parts(r), label=int(r["label"]),
                               source_index=int(r["source_index"]), task=TASK_NAMES[int(r["task"])],
                               caption=r["caption"]))
  writer.close()
  config = _config(tiny_data, path=str(out))
  config.train.batch_size = 64
  it = pipeline.make_iterator(config, split="eval")
  with pytest.raises(DataError, match=message + ".*") as e:
    _take(it, 20)
  assert f"eval-00000.array_record record {bad}" in str(e.value)
