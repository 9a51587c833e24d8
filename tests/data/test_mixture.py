"""Dataset mixtures: weights per example, determinism, exact resume, process shards, the held-out
union, components that disagree, bad configs, and per-component counts in metrics.jsonl.

The components are cut from the session's tiny prepared data by task, so an example's content says
which component it came from: captioning (one image, no image loss), generation (one image with
loss) and a small interleaved one (two images, 24 examples: it repeats many times over).
"""

from __future__ import annotations

import json
import os
import shutil

import grain
import numpy as np
import pytest
from array_record.python import array_record_module

from synergen_jax.core.errors import ConfigError, DataError
from synergen_jax.data import layout, mixture, pipeline
from synergen_jax.prepare import cache
from synergen_jax.data.records import TASK_IDS, decode_record

CAPTION, GENERATION, INTERLEAVED = TASK_IDS["caption"], TASK_IDS["generation"], TASK_IDS["interleaved"]
ALL = 10 ** 9


def _subset(tiny_data, out, quota: dict) -> str:
  """A prepared folder with the first quota[split][task] examples of each task of tiny_data's split
  (records copied byte for byte, index and meta.json cut to match)."""
  src, mc = tiny_data["data_dir"], tiny_data["mc"]
  os.makedirs(out)
  meta = mixture.read_meta(src)
  for split in ("train", "eval"):
    prepared = pipeline.open_split(src, split, mc)
    reader = grain.sources.ArrayRecordDataSource(list(prepared.files))
    left, chosen = dict(quota.get(split, {})), []
    for i in range(len(reader)):
      if not any(left.values()):
        break
      task = int(decode_record(reader[i])["task"])
      if left.get(task, 0) > 0:
        left[task] -= 1
        chosen.append(i)
    name = f"{split}-00000-of-00001.array_record"
    if chosen:
      writer = array_record_module.ArrayRecordWriter(os.path.join(out, name), "group_size:1")
      for i in chosen:
        writer.write(reader[i])
      writer.close()
    np.savez(os.path.join(out, f"{split}-index.npz"),
             **{f: getattr(prepared, f)[chosen]
                for f in ("text_len", "n_images", "loss_text_len", "n_loss_images")})
    meta["splits"][split] = dict(examples=len(chosen), shards=[name] if chosen else [],
                                 shard_sizes=[len(chosen)] if chosen else [], tasks={})
  with open(os.path.join(out, "meta.json"), "w") as f:
    json.dump(meta, f)
  return str(out)


@pytest.fixture(scope="module")
def folders(tiny_data, tmp_path_factory):
  """Three components; the first two share a basename ("data"), so their names take a parent."""
  root = tmp_path_factory.mktemp("mixture")
  return dict(
      caption=_subset(tiny_data, root / "caption" / "data",
                      {"train": {CAPTION: 500}, "eval": {CAPTION: ALL}}),
      generation=_subset(tiny_data, root / "generation" / "data",
                         {"train": {GENERATION: 300}, "eval": {GENERATION: ALL}}),
      small=_subset(tiny_data, root / "small", {"train": {INTERLEAVED: 24}}))


NAMES = ("caption/data", "generation/data", "small")
TASK_OF = {"caption/data": CAPTION, "generation/data": GENERATION, "small": INTERLEAVED}


def _config(tiny_data, folders, weights=(3.0, 1.0, 1.0), **data):
  config = tiny_data["config"].copy_and_resolve_references()
  config.data.update(path=None, seq_len=64,
                     mixture=tuple((folders[k], w) for k, w in zip(("caption", "generation", "small"),
                                                                  weights) if w))
  config.data.update(**data)
  config.train.batch_size = 8
  return config


def _take(it, n):
  return [next(it) for _ in range(n)]


def _assert_same(a, b):
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def _segments(batch, special):
  """(task read off the content, content key) of every example in a host batch."""
  out = []
  for r in range(batch["segment_ids"].shape[0]):
    seg = batch["segment_ids"][r]
    for s in range(1, int(seg.max()) + 1):
      where = seg == s
      tok, mod = batch["text_tokens"][r][where], batch["modality"][r][where]
      n_images = int(np.sum((tok == special.boi) & (mod == layout.TEXT)))
      image_loss = bool(batch["image_weights"][r][where].any())
      task = INTERLEAVED if n_images == 2 else GENERATION if image_loss else CAPTION
      out.append((task, tuple(tok) + tuple(batch["image_codes"][r][where].ravel())))
  return out


def _special(tiny_data):
  return layout.SpecialTokens(**tiny_data["meta"]["special"])


def test_examples_follow_the_weights_and_each_carries_its_component(tiny_data, folders):
  """Weights 3:1:1 over a few hundred examples on 2 logical shards; every batch's per-component
  counts agree with what its examples are, and the 24-example component repeats."""
  it = pipeline.make_iterator(_config(tiny_data, folders, shards=2))
  assert tuple(c.name for c in it.components) == NAMES
  before, small = dict.fromkeys(NAMES, 0), []
  while sum(before.values()) < 400:
    batch = next(it)
    assert pipeline.COMPONENT_EXAMPLES not in batch           # host-only: never reaches the model
    seen = it.examples_seen()
    segments = _segments(batch, _special(tiny_data))
    for name in NAMES:
      assert seen[name] - before[name] == sum(t == TASK_OF[name] for t, _ in segments), name
    small += [key for t, key in segments if t == INTERLEAVED]
    before = seen
  total = sum(before.values())
  # Grain's mix is a fixed interleaving by the weights, so each shard is within an example or two of
  # its share: far inside a sampling tolerance (3 sigma of a binomial is ~30 examples here).
  for name, p in zip(NAMES, (0.6, 0.2, 0.2)):
    assert abs(before[name] - p * total) <= 4, (name, before, total)
  assert len(small) > 2 * 24 and len(set(small)) <= 24


def test_same_config_same_batches_and_a_one_component_mixture_is_its_folder(tiny_data, folders):
  a = _take(pipeline.make_iterator(_config(tiny_data, folders)), 3)
  b = _take(pipeline.make_iterator(_config(tiny_data, folders)), 3)
  for x, y in zip(a, b):
    _assert_same(x, y)
  other = next(pipeline.make_iterator(_config(tiny_data, folders, seed=1)))
  assert not np.array_equal(other["text_tokens"], a[0]["text_tokens"])
  # Alone, a component is its folder read with its own seed: mixing adds nothing but the counts.
  one = _config(tiny_data, folders, weights=(2.0, 0, 0))
  seed = mixture.component_seed(one.data.seed, mixture.parse_mixture(one.data)[0].name)
  single = _config(tiny_data, folders, mixture=(), path=folders["caption"], seed=seed)
  for x, y in zip(_take(pipeline.make_iterator(one), 3), _take(pipeline.make_iterator(single), 3)):
    _assert_same(x, y)


@pytest.mark.parametrize("workers", [0, 1])
def test_restored_mixture_continues_exactly(tiny_data, folders, workers):
  config = _config(tiny_data, folders, num_workers=workers)
  it = pipeline.make_iterator(config)
  _take(it, 3)
  state = json.loads(json.dumps(it.get_state()))        # checkpointable as plain JSON
  if not workers:   # Grain's mix state: each component's position, by name
    grain_state = json.dumps(state["shards"]["0"]["grain"])
    assert all(f'"{name}": {{"next_index"' in grain_state for name in NAMES), grain_state
  expected = _take(it, 4)
  restored = pipeline.make_iterator(config)
  restored.set_state(state)
  assert restored.examples_seen() == state["shards"]["0"]["examples"]
  for want, got in zip(expected, _take(restored, 4)):
    _assert_same(want, got)
  assert restored.examples_seen() == it.examples_seen()


def test_mixture_batches_do_not_depend_on_the_process_count(tiny_data, folders):
  config = _config(tiny_data, folders, shards=4)
  one = pipeline.make_iterator(config)
  two = [pipeline.make_iterator(config, process_index=p, process_count=2) for p in range(2)]
  for _ in range(3):
    whole, halves = next(one), [next(it) for it in two]
    _assert_same(whole, {k: np.concatenate([h[k] for h in halves]) for k in whole})
  counts = [it.examples_seen() for it in two]
  assert one.examples_seen() == {n: counts[0][n] + counts[1][n] for n in NAMES}
  resumed = [pipeline.make_iterator(config, process_index=p, process_count=2) for p in range(2)]
  for it in resumed:
    it.set_state(one.get_state())
  whole, halves = next(one), [next(it) for it in resumed]
  _assert_same(whole, {k: np.concatenate([h[k] for h in halves]) for k in whole})


def test_changed_mixture_or_source_is_refused_on_restore(tiny_data, folders):
  state = pipeline.make_iterator(_config(tiny_data, folders)).get_state()
  with pytest.raises(DataError, match=r"saved reading the mixture caption/data: 3, generation/data: "
                                      r"1, small: 1 but this config reads the mixture .*small: 2"):
    pipeline.make_iterator(_config(tiny_data, folders, weights=(3.0, 1.0, 2.0))).set_state(state)
  single = _config(tiny_data, folders, mixture=(), path=folders["caption"])
  with pytest.raises(DataError, match=r"reads one prepared folder \(config.data.path\); resume"):
    pipeline.make_iterator(single).set_state(state)
  with pytest.raises(DataError, match=r"saved reading one prepared folder"):
    pipeline.make_iterator(_config(tiny_data, folders)).set_state(
        pipeline.make_iterator(single).get_state())


def test_heldout_pass_is_the_union_of_the_components_eval_splits(tiny_data, folders):
  """Every eval example of each component exactly once (the small one has none and is left out),
  shuffled together so both components run through the whole pass. One row per batch: no partial
  batch is dropped at the end."""
  config = _config(tiny_data, folders)
  config.train.batch_size = 1
  it = pipeline.make_iterator(config, split="eval", num_epochs=1)
  segments = [s for batch in it for s in _segments(batch, _special(tiny_data))]
  keys = [key for _, key in segments]
  assert len(keys) == len(set(keys))
  sizes = {n: mixture.read_meta(folders[k])["splits"]["eval"]["examples"]
           for n, k in zip(NAMES, ("caption", "generation", "small"))}
  seen = it.examples_seen()
  assert seen["small"] == sizes["small"] == 0
  for name in NAMES[:2]:
    assert seen[name] == sizes[name] == sum(t == TASK_OF[name] for t, _ in segments) > 50
  first_half = [t for t, _ in segments[:len(segments) // 2]]
  assert min(first_half.count(CAPTION), first_half.count(GENERATION)) > 0.3 * len(first_half)


@pytest.mark.parametrize("field, value", [
    ("text_tokenizer", "sha256:0000000000000000"),
    ("special", {"pad": 0, "bos": 1, "eos": 2, "boi": 7, "eoi": 4, "uncond": 5}),
    ("image_tokenizer", "sha256:1111111111111111"),
    ("code_grid", [8, 8]),
])
def test_components_that_disagree_name_both_folders_and_the_field(tiny_data, folders, tmp_path,
                                                                  field, value):
  other = tmp_path / "other"
  shutil.copytree(folders["generation"], other)
  meta = json.loads((other / "meta.json").read_text())
  meta[field] = value
  (other / "meta.json").write_text(json.dumps(meta))
  config = _config(tiny_data, folders, weights=(1.0, 0, 0))
  config.data.mixture = (*config.data.mixture, (str(other), 1.0))
  message = f"mixture components {folders['caption']} and {other} differ in meta.json {field}"
  with pytest.raises(DataError, match=message):
    pipeline.make_iterator(config)
  with pytest.raises(DataError, match=message):      # the trainer's first data step, before devices
    cache.with_prepared_data(config)


def test_a_component_without_prepared_data_says_how_to_prepare_it(tiny_data, folders, tmp_path):
  config = _config(tiny_data, folders, weights=(1.0, 0, 0))
  config.data.mixture = (*config.data.mixture, (str(tmp_path), 1.0))
  with pytest.raises(DataError, match=f"{tmp_path} holds no prepared data .* --out {tmp_path}"):
    cache.with_prepared_data(config)


@pytest.mark.parametrize("value, path, message", [
    ((("", 1.0),), None, r"mixture\[0\]=\('', 1.0\): the path must be a non-empty string"),
    ((("a", 0.0),), None, r"mixture\[0\]=\('a', 0.0\): the weight must be a positive number"),
    ((("a", 1.0), ("b", -2)), None, r"mixture\[1\]=\('b', -2\): the weight must be a positive"),
    ((("a", float("nan")),), None, r"the weight must be a positive number"),
    ((("a", True),), None, r"the weight must be a positive number"),
    ((("a", "2"),), None, r"the weight must be a positive number"),
    ((("a",),), None, r"mixture\[0\]=\('a',\) is not a \(prepared path, weight\) pair"),
    (("a", "b"), None, r"mixture\[0\]='a' is not a \(prepared path, weight\) pair"),
    ((("a", 1.0), ("./a/", 2.0)), None, r"lists './a/' twice \(entries 0 and 1\); give it one entry"),
    ((("a", 1.0),), "prepared", r"config.data.path='prepared' and config.data.mixture are both set"),
])
def test_bad_mixture_configs_fail_before_any_data_is_read(tiny_data, value, path, message):
  config = tiny_data["config"].copy_and_resolve_references()
  config.data.update(mixture=value, path=path)
  with pytest.raises(ConfigError, match=message):
    pipeline.make_iterator(config)
  with pytest.raises(ConfigError, match=message):
    cache.with_prepared_data(config)


def test_component_names_are_basenames_lengthened_where_equal():
  assert mixture.component_names(["x/a/data", "y/a/data/", "z/b", "gs://bucket/c"]) == [
      "x/a/data", "y/a/data", "b", "c"]
  assert mixture.component_names(["data", "q/data"]) == ["data", "q/data"]


def test_trainer_logs_examples_per_component(tiny_data, folders, tmp_path):
  """Two logged steps of a short run (stopped before its final held-out pass and checkpoint, which
  cost compiles): metrics.jsonl has each component's examples so far, exactly the pipeline's."""
  from synergen_jax.train.loop import train

  config = _config(tiny_data, folders)
  config.train.update(steps=3, log_every=1, checkpoint_every=1000)
  config.optim.update(warmup_steps=1)
  assert cache.ensure_prepared(config) is None                # a mixture prepares nothing
  built = cache.with_prepared_data(config)
  meta = mixture.read_meta(folders["caption"])
  assert built.data.path is None
  assert tuple(built.model.new_tokens) == tuple(meta["special"][k] for k in ("boi", "eoi", "uncond"))
  train(config, str(tmp_path), stop_after=2)
  logged = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  assert [r["step"] for r in logged] == [1, 2]
  fresh = pipeline.make_iterator(built)
  for row in logged:
    next(fresh)
    assert {k[len("data/examples/"):]: v for k, v in row.items()
            if k.startswith("data/examples/")} == fresh.examples_seen()
  assert all(v > 0 for v in fresh.examples_seen().values())


def test_checkpointed_counts_survive_the_data_state_handler(tiny_data, folders, tmp_path):
  """The trainer's Orbax handler writes one JSON per logical shard: a mixture state goes through it
  unchanged, and restores under two processes' shard lists."""
  from etils import epath
  from synergen_jax.train.data_state import DataStateHandler, DataStateRestore, DataStateSave

  it = pipeline.make_iterator(_config(tiny_data, folders, shards=2))
  _take(it, 2)
  state = it.get_state()
  DataStateHandler().save(epath.Path(tmp_path), DataStateSave(state))
  halves = [DataStateHandler().restore(epath.Path(tmp_path), DataStateRestore(2, [p])) for p in (0, 1)]
  assert {**halves[0]["shards"], **halves[1]["shards"]} == json.loads(json.dumps(state["shards"]))
  resumed = pipeline.make_iterator(_config(tiny_data, folders, shards=2), process_index=1,
                                   process_count=2)
  resumed.set_state(halves[1])
  assert resumed.examples_seen() == dict(state["shards"]["1"]["examples"])
