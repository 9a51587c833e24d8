"""Prepared shards -> packed, batched model inputs, with Grain.

  ArrayRecord shards (data/writer.py; records decoded by data/records.py)
    -> drop or reject examples longer than a row        (counted from the index, before any reading)
    -> seeded global shuffle, reshuffled every epoch
    -> logical data shard s of S (every S-th example)   S = config.data.shards (0: one per process)
    -> record -> model slots for the configured fold     (layout.layout_example; ids range-checked)
    -> first-fit packing into rows of seq_len slots      (whole examples only: an image span is never
                                                          split; segment ids and positions per example)
    -> batch of batch_size / S rows per shard            (optionally in worker processes)
    -> this process's shards, concatenated in order      (process p of P owns shards [p S/P, (p+1) S/P))
    -> global jax.Arrays sharded on the mesh's batch axes

A global batch is the shards' rows in shard order whatever the process count, so with a fixed S a
run on 2 processes x 4 devices sees exactly the batches of a run on 1 process x 8 devices. Every
stage is a Grain dataset, so `DataIterator.get_state()` is a small JSON-able dict per shard that
`set_state` restores exactly, workers included; a shard's state does not depend on which process
holds it, so a checkpoint resumes under any process count that divides S.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import os
from typing import Any

import grain
import jax
import numpy as np
from absl import flags
from grain.experimental import FirstFitPackIterDataset

from synergen_jax.batch import SLOT_FIELDS
from synergen_jax.config import ModelConfig, validate_config
from synergen_jax.data import layout
from synergen_jax.data.errors import DataError
from synergen_jax.data.records import FORMAT_VERSION, decode_record, record_parts
from synergen_jax.parallel.sharding import batch_sharding


# ---------------------------------------------------------------------------------------------------
# Opening a prepared split and checking it against the model config.
# ---------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class PreparedSplit:
  directory: str
  split: str
  meta: dict
  files: tuple[str, ...]
  shard_sizes: tuple[int, ...]
  text_len: np.ndarray          # per example
  n_images: np.ndarray          # per example

  @property
  def special(self) -> layout.SpecialTokens:
    return layout.SpecialTokens(**self.meta["special"])

  def locate(self, index: int) -> str:
    """'train-00001-of-00003.array_record record 17' for a split-global record index."""
    bounds = np.cumsum(self.shard_sizes)
    shard = bisect.bisect_right(bounds, index)
    first = 0 if shard == 0 else int(bounds[shard - 1])
    return f"{os.path.basename(self.files[shard])} record {index - first}"


def check_meta(meta: dict, mc: ModelConfig, where: str) -> None:
  """A prepared dataset must match the model it feeds; each mismatch names both values and the fix."""
  problems = []
  if meta.get("format_version") != FORMAT_VERSION:
    problems.append(f"format_version {meta.get('format_version')} != {FORMAT_VERSION} (re-run prepare)")
  if tuple(meta["code_grid"]) != tuple(mc.code_grid):
    problems.append(f"code_grid {tuple(meta['code_grid'])} != config.model.code_grid {mc.code_grid}")
  if meta["codebook_size"] != mc.codebook_size:
    problems.append(f"codebook_size {meta['codebook_size']} != config.model.codebook_size "
                    f"{mc.codebook_size}")
  if meta["text_vocab"] > mc.text_vocab:
    problems.append(f"text_vocab {meta['text_vocab']} > config.model.text_vocab {mc.text_vocab}")
  if problems:
    raise DataError(f"{where}/meta.json does not match the config: " + "; ".join(problems) +
                    ". Re-run prepare with this config or point config.data.path at matching data.")


def open_split(directory: str, split: str, mc: ModelConfig) -> PreparedSplit:
  meta_file = os.path.join(directory, "meta.json")
  if not os.path.exists(meta_file):
    raise DataError(f"{directory} holds no prepared data (no meta.json); run python -m "
                    "synergen_jax.prepare --config ... --out " + directory)
  with open(meta_file) as f:
    meta = json.load(f)
  check_meta(meta, mc, directory)
  if split not in meta["splits"] or not meta["splits"][split]["examples"]:
    raise DataError(f"{directory} has no examples in split {split!r}: {list(meta['splits'])}")
  entry = meta["splits"][split]
  index = np.load(os.path.join(directory, f"{split}-index.npz"))
  return PreparedSplit(directory, split, meta, tuple(os.path.join(directory, f) for f in entry["shards"]),
                       tuple(entry["shard_sizes"]), index["text_len"], index["n_images"])


def example_slots(text_len, n_images, mc: ModelConfig):
  """Slots an example takes: <s> + text + per image (<boi> + windows + <eoi>) + </s>."""
  return 2 + np.asarray(text_len) + np.asarray(n_images) * (mc.windows_per_image + 2)


# ---------------------------------------------------------------------------------------------------
# Grain stages.
# ---------------------------------------------------------------------------------------------------

class _Kept:
  """Random access to the kept records of a split: item i -> (split-global index, record bytes)."""

  def __init__(self, split: PreparedSplit, keep: np.ndarray):
    self._paths, self._keep = split.files, keep
    self._source = None

  def __len__(self):
    return len(self._keep)

  def __getitem__(self, i):
    if self._source is None:   # opened lazily: worker processes each open their own readers
      self._source = grain.sources.ArrayRecordDataSource(list(self._paths))
    index = int(self._keep[i])
    return index, self._source[index]

  def __getstate__(self):
    return dict(_paths=self._paths, _keep=self._keep, _source=None)


class ToSlots(grain.transforms.Map):
  """(index, record bytes) -> per-slot arrays for the configured fold, with ids range-checked."""

  def __init__(self, split: PreparedSplit, mc: ModelConfig):
    self.split, self.mc, self.special = split, mc, split.special

  def map(self, element):
    index, data = element
    record = decode_record(data)
    text, codes = record["text"], record["codes"]
    if text.size and (text.min() < 0 or text.max() >= self.mc.text_vocab):
      raise DataError(f"{self.split.locate(index)} in {self.split.directory}: text id "
                      f"{int(text.min() if text.min() < 0 else text.max())} outside "
                      f"[0, config.model.text_vocab={self.mc.text_vocab})")
    if codes.size and (codes.min() < 0 or codes.max() >= self.mc.codebook_size):
      raise DataError(f"{self.split.locate(index)} in {self.split.directory}: image code "
                      f"{int(codes.min() if codes.min() < 0 else codes.max())} outside "
                      f"[0, config.model.codebook_size={self.mc.codebook_size})")
    return layout.layout_example(record_parts(record), self.mc.fold, self.special)


def _finish_row(row: dict) -> dict:
  """Keeps the packer's segment ids once (all fields share them) and drops its other bookkeeping."""
  out = {k: row[k] for k in SLOT_FIELDS}
  out["segment_ids"] = row["text_tokens_segment_ids"]
  return out


def pack_rows(examples: grain.IterDataset, seq_len: int, bins: int) -> grain.IterDataset:
  """Laid-out examples -> rows of seq_len slots, first fit over `bins` open rows, no splitting."""
  packed = FirstFitPackIterDataset(examples, length_struct={k: seq_len for k in SLOT_FIELDS},
                                   num_packing_bins=bins, shuffle_bins=False)
  return packed.map(_finish_row)


def record_dataset(split: PreparedSplit, mc: ModelConfig, seq_len: int, *, seed: int,
                   too_long: str, shard_index: int, num_shards: int,
                   num_epochs: int | None = None) -> tuple[grain.MapDataset, int]:
  """Shuffled, repeated (index, bytes) dataset of one logical shard, and the too-long count."""
  slots = example_slots(split.text_len, split.n_images, mc)
  too_long_mask = slots > seq_len
  if too_long_mask.any() and too_long == "error":
    first = int(np.argmax(too_long_mask))
    raise DataError(f"{split.locate(first)} in {split.directory} takes {int(slots[first])} slots at fold "
                    f"{mc.fold[0]}x{mc.fold[1]} but config.data.seq_len={seq_len} ({int(too_long_mask.sum())}"
                    " such examples); raise seq_len or the fold ratio, or set config.data.too_long=skip")
  keep = np.flatnonzero(~too_long_mask)
  if not len(keep):
    raise DataError(f"every example of {split.directory}/{split.split} is longer than seq_len={seq_len}")
  ds = grain.MapDataset.source(_Kept(split, keep)).shuffle(seed=seed).repeat(num_epochs)
  return ds[shard_index::num_shards], int(too_long_mask.sum())


@dataclasses.dataclass
class DataIterator:
  """Host batches (numpy) or, with a mesh, global jax.Arrays; checkpointable via get/set_state.

  Holds this process's logical shards; a batch is their rows concatenated in shard order. A finite
  pass (num_epochs set: held-out data) ends when any shard ends, and under several processes when any
  process's does, so every process runs the same number of steps; the training stream repeats
  forever and skips that check (a collective per step).
  """
  shards: dict[int, Any]        # shard id -> Grain iterator of batches of rows_per_shard rows
  num_shards: int
  mesh: jax.sharding.Mesh | None
  too_long_skipped: int
  rows_per_process: int
  finite: bool = False
  last_local: dict | None = None

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    parts = []
    for it in self.shards.values():
      try:
        parts.append(next(it))
      except StopIteration:
        break
    if self.finite and jax.process_count() > 1 and self.mesh is not None:
      from jax.experimental import multihost_utils
      done = multihost_utils.process_allgather(np.int32(len(parts) < len(self.shards)))
      if np.any(done):
        raise StopIteration
    elif len(parts) < len(self.shards):
      raise StopIteration
    local = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    self.last_local = local        # this process's rows of the batch just returned (host numpy)
    return local if self.mesh is None else global_batch(local, self.mesh)

  def get_state(self) -> dict:
    return {"num_shards": self.num_shards,
            "shards": {str(i): it.get_state() for i, it in self.shards.items()}}

  def set_state(self, state: dict) -> None:
    if state.get("num_shards") != self.num_shards:
      raise DataError(f"the checkpointed data state has {state.get('num_shards')} logical shards but "
                      f"config.data.shards gives {self.num_shards}; resume with the original value")
    for i, it in self.shards.items():
      it.set_state(state["shards"][str(i)])


def process_shards(num_shards: int, process_index: int, process_count: int) -> range:
  """The contiguous block of logical shards process `process_index` reads."""
  per = num_shards // process_count
  return range(process_index * per, (process_index + 1) * per)


def make_iterator(config, directory: str | None = None, split: str = "train", *,
                  mesh: jax.sharding.Mesh | None = None, process_index: int | None = None,
                  process_count: int | None = None, num_epochs: int | None = None) -> DataIterator:
  """The training input pipeline for `config` over prepared data in `directory` (else data.path)."""
  mc = validate_config(config)
  d = config.data
  directory = directory or d.path
  if not directory:
    raise DataError("no prepared data: set config.data.path to a prepare output folder")
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  num_shards = d.shards or process_count
  rows = config.train.batch_size
  if num_shards % process_count or rows % num_shards:
    raise DataError(f"config.data.shards={num_shards} logical data shards must be a multiple of the "
                    f"{process_count} processes and divide config.train.batch_size={rows}")
  rows_per_shard = rows // num_shards
  prepared = open_split(directory, split, mc)
  shards, too_long = {}, 0
  for shard in process_shards(num_shards, process_index, process_count):
    ds, too_long = record_dataset(prepared, mc, d.seq_len, seed=d.seed, too_long=d.too_long,
                                  shard_index=shard, num_shards=num_shards, num_epochs=num_epochs)
    ds = ds.map(ToSlots(prepared, mc))
    it = ds.to_iter_dataset(grain.ReadOptions(num_threads=0 if d.num_workers else 2,
                                              prefetch_buffer_size=max(1, d.prefetch) * rows_per_shard))
    it = pack_rows(it, d.seq_len, d.packing_bins or rows_per_shard).batch(rows_per_shard,
                                                                          drop_remainder=True)
    if d.num_workers:
      if not flags.FLAGS.is_parsed():   # Grain's workers read absl flags; outside app.run use defaults
        flags.FLAGS.mark_as_parsed()
      it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=d.num_workers,
                                                       per_worker_buffer_size=max(1, d.prefetch)))
    shards[shard] = iter(it)
  return DataIterator(shards, num_shards, mesh, too_long, rows // process_count,
                      finite=num_epochs is not None)


def global_batch(local: dict, mesh: jax.sharding.Mesh) -> dict:
  """Per-process rows -> global arrays; each process contributes its own rows."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}
