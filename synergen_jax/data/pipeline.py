"""Prepared shards -> packed, batched model inputs, with Grain.

  ArrayRecord shards (prepare/writer.py; records decoded by data/records.py)
    -> drop or reject examples longer than a row or      (counted from the index, before any reading)
       alone over a per-row budget (data/budgets.py)
    -> seeded global shuffle, reshuffled every epoch
    -> logical data shard s of S (every S-th example)   S = config.data.shards (0: one per process)
    -> record -> model slots for the configured fold     (layout.layout_example; ids range-checked)
    -> first-fit packing into rows of seq_len slots      (whole examples only: an image span is never
                                                          split; segment ids and positions per example;
                                                          no row over a budget: text targets, image
                                                          slots, image-target windows)
    -> batch of batch_size / S rows per shard            (optionally in worker processes)
    -> this process's shards, concatenated in order      (process p of P owns shards [p S/P, (p+1) S/P))
    -> global jax.Arrays sharded on the mesh's batch axes

A mixture (config.data.mixture, data/mixture.py) replaces the first four stages of each logical shard:

  component c's shards -> too long dropped -> shuffle (its own seed), repeat -> shard s of S -> slots
      ... one such stream per component ...
    -> Grain IterDataset.mix by the weights, example by example  (the training stream never ends)
    -> packing, batching, processes as above; each example carries its component id through packing
       (a non-sequence meta feature), so each row counts its examples per component, and the
       iterator sums those counts on the host (`examples_seen`; never sent to the device)

A finite pass over a mixture (num_epochs set: the held-out split) is instead the union of the
components' splits, shuffled together: every example once per epoch, any prefix a fair sample of all.

A global batch is the shards' rows in shard order whatever the process count, so with a fixed S a
run on 2 processes x 4 devices sees exactly the batches of a run on 1 process x 8 devices. Every
stage is a Grain dataset, so `DataIterator.get_state()` is a small JSON-able dict per shard that
`set_state` restores exactly, workers included; a shard's state does not depend on which process
holds it, so a checkpoint resumes under any process count that divides S. Under a mixture a shard's
state also holds each component's position (Grain's mix state, keyed by component name), the
examples per component returned so far, and the mixture it was saved with (a different mixture is
refused on restore).
"""

from __future__ import annotations

import bisect
import dataclasses
import os
from typing import Any

import grain
import jax
import numpy as np
from absl import flags
from grain.experimental import FirstFitPackIterDataset

from synergen_jax.core import storage
from synergen_jax.core.batch import SLOT_FIELDS
from synergen_jax.core.config import CAPACITIES, ModelConfig, validate_config
from synergen_jax.data import budgets, layout, mixture
from synergen_jax.core.errors import DataError
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
  loss_text_len: np.ndarray     # per example: text tokens with loss
  n_loss_images: np.ndarray     # per example: images with loss

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
  meta = mixture.read_meta(directory)
  check_meta(meta, mc, directory)
  if split not in meta["splits"] or not meta["splits"][split]["examples"]:
    raise DataError(f"{directory} has no examples in split {split!r}: {list(meta['splits'])}")
  entry = meta["splits"][split]
  with storage.path(os.path.join(directory, f"{split}-index.npz")).open("rb") as f:
    index = dict(np.load(f))             # a bucket's file object: read every array while it is open
  return PreparedSplit(directory, split, meta, tuple(os.path.join(directory, f) for f in entry["shards"]),
                       tuple(entry["shard_sizes"]), index["text_len"], index["n_images"],
                       index["loss_text_len"], index["n_loss_images"])


def split_examples(config, split: str) -> int:
  """Examples in `split` of the prepared data a config reads (config.data.path, or the sum over the
  components of config.data.mixture): 0 when the split is missing, e.g. a stream prepared without a
  held-out part."""
  components = mixture.parse_mixture(config.data)
  folders = [c.path for c in components] or [config.data.path]
  metas = [mixture.read_meta(f) for f in folders]
  return sum(int(m.get("splits", {}).get(split, {}).get("examples", 0)) for m in metas)


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
  """(index, record bytes) -> per-slot arrays for the configured fold, with ids range-checked; under a
  mixture also the example's component id (COMPONENT), which packing keeps as a meta feature."""

  def __init__(self, split: PreparedSplit, mc: ModelConfig, component: int | None = None):
    self.split, self.mc, self.special = split, mc, split.special
    self.component = component

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
    example = add_budget_features(layout.layout_example(record_parts(record), self.mc.fold,
                                                        self.special))
    if self.component is not None:
      example[COMPONENT] = self.component
    return example


# Per example: its mixture component (an int, not a slot field). Per row and then per batch row:
# COMPONENT_EXAMPLES [C] int32, how many of the row's examples come from each component. A host-only
# field: DataIterator takes it out of the batch before anything goes to the device.
COMPONENT = "component"
COMPONENT_EXAMPLES = "component_examples"
# Per example: BUDGET_PREFIX + capacity name, an array with one entry per budgeted item (packing only).
BUDGET_PREFIX = "budget/"


def add_budget_features(example: dict) -> dict:
  """Adds one array per budget with one entry per budgeted item, so that the packer's per-feature
  lengths keep the row budgets (pack_rows)."""
  for name, count in budgets.slot_counts(example).items():
    example[BUDGET_PREFIX + name] = np.zeros(count, np.int8)
  return example


def _finish_row(row: dict) -> dict:
  """Keeps the packer's segment ids once (all fields share them) and drops its other bookkeeping."""
  out = {k: row[k] for k in SLOT_FIELDS}
  out["segment_ids"] = row["text_tokens_segment_ids"]
  return out


@dataclasses.dataclass(frozen=True)
class _FinishMixedRow:
  """_finish_row, plus the row's examples counted per component from the packer's list of the
  component ids of the examples it put in the row (one per segment)."""
  num_components: int

  def __call__(self, row: dict) -> dict:
    out = _finish_row(row)
    ids = np.asarray([int(c) for c in row[COMPONENT]], np.int64)
    out[COMPONENT_EXAMPLES] = np.bincount(ids, minlength=self.num_components).astype(np.int32)
    return out


def pack_rows(examples: grain.IterDataset, seq_len: int, bins: int, row_budgets: dict[str, int],
              num_components: int = 0) -> grain.IterDataset:
  """Laid-out examples -> rows of seq_len slots, first fit over `bins` open rows, no splitting, and
  no row over any of `row_budgets` (data/budgets.py): each budget is one more packed feature whose
  length is its count, so Grain's per-feature lengths keep it. num_components > 0: the examples
  carry COMPONENT and each row gets COMPONENT_EXAMPLES."""
  lengths = {k: seq_len for k in SLOT_FIELDS}
  lengths.update({BUDGET_PREFIX + name: budget for name, budget in row_budgets.items()})
  packed = FirstFitPackIterDataset(examples, length_struct=lengths,
                                   num_packing_bins=bins, shuffle_bins=False,
                                   meta_features=(COMPONENT,) if num_components else ())
  return packed.map(_FinishMixedRow(num_components) if num_components else _finish_row)


def kept_records(split: PreparedSplit, mc: ModelConfig, seq_len: int,
                 too_long: str) -> tuple[grain.MapDataset, int]:
  """(index, bytes) of the split's examples that fit a row, unshuffled, and how many do not: longer
  than seq_len, or alone over a per-row budget (data/budgets.py)."""
  slots = example_slots(split.text_len, split.n_images, mc)
  counts = budgets.index_counts(split, mc)
  over = budgets.over_budget(counts, mc, seq_len)
  too_long_mask = (slots > seq_len) | over
  if too_long_mask.any() and too_long == "error":
    first = int(np.argmax(too_long_mask))
    if slots[first] > seq_len:
      why = f"takes {int(slots[first])} slots at fold {mc.fold[0]}x{mc.fold[1]} but config.data.seq_len={seq_len}"
    else:
      row = budgets.row_budgets(mc, seq_len)
      name = next(n for n in row if counts[n][first] > row[n])
      why = (f"holds {int(counts[name][first])} {budgets.COUNTED[name]} but config.model.{name}="
             f"{row[name]}")
    raise DataError(f"{split.locate(first)} in {split.directory} {why} ({int(too_long_mask.sum())}"
                    " such examples); raise seq_len, the budget or the fold ratio, or set "
                    "config.data.too_long=skip")
  keep = np.flatnonzero(~too_long_mask)
  if not len(keep):
    raise DataError(f"every example of {split.directory}/{split.split} is longer than seq_len={seq_len}")
  return grain.MapDataset.source(_Kept(split, keep)), int(too_long_mask.sum())


def record_dataset(split: PreparedSplit, mc: ModelConfig, seq_len: int, *, seed: int,
                   too_long: str, shard_index: int, num_shards: int,
                   num_epochs: int | None = None) -> tuple[grain.MapDataset, int]:
  """Shuffled, repeated (index, bytes) dataset of one logical shard, and the too-long count."""
  ds, skipped = kept_records(split, mc, seq_len, too_long)
  ds = ds.shuffle(seed=seed).repeat(num_epochs)
  return ds[shard_index::num_shards], skipped


@dataclasses.dataclass
class DataIterator:
  """Host batches (numpy) or, with a mesh, global jax.Arrays; checkpointable via get/set_state.

  Holds this process's logical shards; a batch is their rows concatenated in shard order. A finite
  pass (num_epochs set: held-out data) ends when any shard ends, and under several processes when any
  process's does, so every process runs the same number of steps; the training stream repeats
  forever and skips that check (a collective per step).

  Under a mixture (`components` set) each shard's batches carry COMPONENT_EXAMPLES, which is summed
  into `consumed` here and removed: the counts are of examples in batches returned (not of examples
  read ahead into packing bins or prefetch buffers), and they are checkpointed with the shard.
  """
  shards: dict[int, Any]        # shard id -> Grain iterator of batches of rows_per_shard rows
  num_shards: int
  mesh: jax.sharding.Mesh | None
  too_long_skipped: int
  rows_per_process: int
  model_config: ModelConfig | None = None
  finite: bool = False
  last_local: dict | None = None
  components: tuple[mixture.Component, ...] = ()
  consumed: dict[int, np.ndarray] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    for shard in self.shards:
      self.consumed.setdefault(shard, np.zeros(len(self.components), np.int64))

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
    if self.components:
      for shard, part in zip(self.shards, parts):
        self.consumed[shard] += part.pop(COMPONENT_EXAMPLES).sum(axis=0)
    local = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    if self.model_config is not None:
      budgets.check_batch(local, self.model_config, local["modality"].shape[1], "packed batch")
    self.last_local = local        # this process's rows of the batch just returned (host numpy)
    return local if self.mesh is None else global_batch(local, self.mesh)

  def examples_seen(self) -> dict[str, int]:
    """This process's examples of each mixture component in the batches returned so far (a resumed
    iterator includes those before the checkpoint); {} without a mixture."""
    total = sum(self.consumed.values(), np.zeros(len(self.components), np.int64))
    return {c.name: int(n) for c, n in zip(self.components, total)}

  def _mixture_key(self) -> dict[str, float]:
    return {c.name: c.weight for c in self.components}

  def get_state(self) -> dict:
    shards = {str(i): it.get_state() for i, it in self.shards.items()}
    if self.components:
      shards = {str(i): {"mixture": self._mixture_key(),
                         "examples": dict(zip(self._mixture_key(), self.consumed[i].tolist())),
                         "grain": shards[str(i)]} for i in self.shards}
    return {"num_shards": self.num_shards, "shards": shards}

  def set_state(self, state: dict) -> None:
    if state.get("num_shards") != self.num_shards:
      raise DataError(f"the checkpointed data state has {state.get('num_shards')} logical shards but "
                      f"config.data.shards gives {self.num_shards}; resume with the original value")
    for i, it in self.shards.items():
      shard_state = state["shards"][str(i)]
      saved_mixture = shard_state.get("mixture") if "grain" in shard_state else None
      if saved_mixture != (self._mixture_key() or None):
        raise DataError(f"the checkpointed data state was saved reading "
                        f"{_describe_mixture(saved_mixture)} but this config reads "
                        f"{_describe_mixture(self._mixture_key())}; resume with the original "
                        "config.data.mixture / config.data.path, or start a new workdir")
      if self.components:
        it.set_state(shard_state["grain"])
        self.consumed[i] = np.asarray([shard_state["examples"][c.name] for c in self.components],
                                      np.int64)
      else:
        it.set_state(shard_state)


def _describe_mixture(weights: dict | None) -> str:
  if not weights:
    return "one prepared folder (config.data.path)"
  return "the mixture " + ", ".join(f"{name}: {w:g}" for name, w in weights.items())


def process_shards(num_shards: int, process_index: int, process_count: int) -> range:
  """The contiguous block of logical shards process `process_index` reads."""
  per = num_shards // process_count
  return range(process_index * per, (process_index + 1) * per)


# ---------------------------------------------------------------------------------------------------
# One logical shard's laid-out examples: from one prepared folder, or mixed from several.
# ---------------------------------------------------------------------------------------------------

def _single_examples(prepared: PreparedSplit, mc: ModelConfig, d, shard: int, num_shards: int,
                     num_epochs: int | None, read: grain.ReadOptions) -> tuple[grain.IterDataset, int]:
  ds, too_long = record_dataset(prepared, mc, d.seq_len, seed=d.seed, too_long=d.too_long,
                                shard_index=shard, num_shards=num_shards, num_epochs=num_epochs)
  return ds.map(ToSlots(prepared, mc)).to_iter_dataset(read), too_long


def _mixed_examples(splits, components, mc: ModelConfig, d, shard: int, num_shards: int,
                    read: grain.ReadOptions) -> tuple[grain.IterDataset, int]:
  """The training stream: each component shuffled with its own seed, repeated forever and cut to this
  logical shard, then mixed by the weights. Cutting before mixing keeps every shard's share equal to
  the weights (Grain's mix is a fixed interleaving: striding the mixed stream could alias with it)."""
  parents, weights, too_long = {}, {}, 0
  for c, comp in enumerate(components):
    split = splits[c]
    ds, skipped = record_dataset(split, mc, d.seq_len, seed=mixture.component_seed(d.seed, comp.name),
                                 too_long=d.too_long, shard_index=shard, num_shards=num_shards)
    parents[comp.name] = ds.map(ToSlots(split, mc, component=c)).to_iter_dataset(read)
    weights[comp.name] = comp.weight
    too_long += skipped
  # Keyed by name: Grain's mix state then holds each component's position under its name.
  return grain.IterDataset.mix(parents, weights), too_long


def _union_examples(splits, mc: ModelConfig, d, shard: int, num_shards: int, num_epochs: int,
                    read: grain.ReadOptions) -> tuple[grain.IterDataset, int]:
  """A finite pass over a mixture: the components' splits (index c: component id) concatenated and
  shuffled together, so each example comes once per epoch and a pass cut short (eval_batches) still
  samples every component; weights do not apply (proportions follow the splits' sizes)."""
  parts, too_long = [], 0
  for c, split in splits.items():
    ds, skipped = kept_records(split, mc, d.seq_len, d.too_long)
    parts.append(ds.map(ToSlots(split, mc, component=c)))
    too_long += skipped
  ds = grain.MapDataset.concatenate(parts).shuffle(seed=d.seed).repeat(num_epochs)
  return ds[shard::num_shards].to_iter_dataset(read), too_long


def _open_components(components, split: str, mc: ModelConfig, finite: bool) -> dict[int, PreparedSplit]:
  """Component id -> its opened split, after checking that the components agree with each other and
  with the model. A finite pass (the held-out split) leaves out components with no examples in it."""
  metas = [mixture.read_meta(c.path, f"config.data.mixture[{i}]") for i, c in enumerate(components)]
  mixture.check_shared(components, metas)
  present = {c: m for c, m in enumerate(metas)
             if m.get("splits", {}).get(split, {}).get("examples")}
  if finite and present:
    return {c: open_split(components[c].path, split, mc) for c in present}
  return {c: open_split(comp.path, split, mc) for c, comp in enumerate(components)}


# ---------------------------------------------------------------------------------------------------
# The iterator.
# ---------------------------------------------------------------------------------------------------

def make_iterator(config, directory: str | None = None, split: str = "train", *,
                  mesh: jax.sharding.Mesh | None = None, process_index: int | None = None,
                  process_count: int | None = None, num_epochs: int | None = None) -> DataIterator:
  """The training input pipeline for `config` over prepared data: `directory` if given, else the
  components of config.data.mixture, else config.data.path."""
  mc = validate_config(config)
  d = config.data
  components = () if directory else mixture.parse_mixture(d)
  directory = directory or d.path
  if not directory and not components:
    raise DataError("no prepared data: set config.data.path to a prepare output folder, or "
                    "config.data.mixture to ((folder, weight), ...)")
  process_index = jax.process_index() if process_index is None else process_index
  process_count = jax.process_count() if process_count is None else process_count
  num_shards = d.shards or process_count
  rows = config.train.batch_size
  if num_shards % process_count or rows % num_shards:
    raise DataError(f"config.data.shards={num_shards} logical data shards must be a multiple of the "
                    f"{process_count} processes and divide config.train.batch_size={rows}")
  rows_per_shard = rows // num_shards
  read = grain.ReadOptions(num_threads=0 if d.num_workers else 2,
                           prefetch_buffer_size=max(1, d.prefetch) * rows_per_shard)
  if components:
    splits = _open_components(components, split, mc, finite=num_epochs is not None)
  else:
    prepared = open_split(directory, split, mc)
  shards, too_long = {}, 0
  for shard in process_shards(num_shards, process_index, process_count):
    if not components:
      it, too_long = _single_examples(prepared, mc, d, shard, num_shards, num_epochs, read)
    elif num_epochs is None:
      it, too_long = _mixed_examples(splits, components, mc, d, shard, num_shards, read)
    else:
      it, too_long = _union_examples(splits, mc, d, shard, num_shards, num_epochs, read)
    it = pack_rows(it, d.seq_len, d.packing_bins or rows_per_shard,
                   budgets.row_budgets(mc, d.seq_len),
                   num_components=len(components)).batch(rows_per_shard, drop_remainder=True)
    if d.num_workers:
      if not flags.FLAGS.is_parsed():   # Grain's workers read absl flags; outside app.run use defaults
        flags.FLAGS.mark_as_parsed()
      it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=d.num_workers,
                                                       per_worker_buffer_size=max(1, d.prefetch)))
    shards[shard] = iter(it)
  return DataIterator(shards, num_shards, mesh, too_long, rows // process_count, model_config=mc,
                      finite=num_epochs is not None, components=components)


def global_batch(local: dict, mesh: jax.sharding.Mesh) -> dict:
  """Per-process rows -> global arrays; each process contributes its own rows."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in local.items()}


def resolve_budgets(config):
  """config.model's None budgets derived from the prepared training data (data/budgets.py): its
  folder (config.data.path), or every mixture component weighted by its mixture weight. Returns a
  copy; explicit budgets are kept. Logs what it chose."""
  mc = validate_config(config)
  missing = [name for name in CAPACITIES if getattr(mc, name) is None]
  components = mixture.parse_mixture(config.data)
  if not missing or not (components or config.data.path):
    return config
  if components:
    splits = [(open_split(c.path, "train", mc), c.weight) for c in components]
  else:
    splits = [(open_split(config.data.path, "train", mc), 1.0)]
  derived = budgets.derive([(budgets.index_counts(split, mc),
                             example_slots(split.text_len, split.n_images, mc), weight)
                            for split, weight in splits], config.data.seq_len,
                           budgets.floors_of(mc))
  config = config.copy_and_resolve_references()
  for name in missing:
    config.model[name] = derived[name]
  print("data: per-row budgets derived from the prepared data (seq_len "
        f"{config.data.seq_len}): " + ", ".join(f"{n}={derived[n]}" for n in missing))
  return config
