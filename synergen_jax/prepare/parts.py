"""Output parts of a prepared set and the merge that makes them one set.

Every input shard (data/inputs.py) becomes one part under `<out>/parts/`:

  {split}-{name}.array_record    the part's records (data/records.py)
  {split}-{name}-index.npz       per record: text length, image count, the same with loss, task
  {split}-{name}.json            its counts (records, examples, skipped and dropped by reason, the
                                 first skipped records by name, tasks)
                                 and the `key` of the settings it was written with

Each file is written under a temporary name and then made whole at once (renamed on a disk, uploaded
in one piece to a bucket, where an object appears only when its upload completes), the .json last,
so a part whose .json exists is complete, and a killed `prepare` leaves at most the parts it had in
flight unfinished; rerunning the same command writes only those. A part written with other settings (another tokenizer,
task mix, image size) is refused, not mixed in.

`merge` reads every part's .json and index and writes `meta.json` and one `{split}-index.npz` per
split over all of them: the one prepared set the trainer reads (data/pipeline.py), whatever number
of processes or hosts wrote the parts.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import tempfile
from typing import Sequence

import numpy as np

from synergen_jax.core import storage
from synergen_jax.core.errors import DataError
from synergen_jax.data.documents import InputShard
from synergen_jax.data.records import TASK_IDS

PARTS = "parts"
SUFFIXES = (".array_record", "-index.npz", ".json")
# Per record: text tokens, images, text tokens with loss, images with loss (the packer's budgets), task.
INDEX_FIELDS = ("text_len", "n_images", "loss_text_len", "n_loss_images", "task")
WHERE_PER_REASON = 5      # skipped records named (file, record) per reason, in a part and in meta


def part_name(shard: InputShard, suffix: str) -> str:
  """The part's file name relative to the output folder (what meta.json lists)."""
  return f"{PARTS}/{shard.split}-{shard.name}{suffix}"


def part_path(out_dir: str, shard: InputShard, suffix: str) -> str:
  return os.path.join(out_dir, part_name(shard, suffix))     # joins gs:// paths as well


class Staged:
  """A file written at `local` (always a local path: ArrayRecord and numpy write local files) and
  made `path` whole by `commit`: renamed on a disk, uploaded once to a bucket. A killed writer
  leaves `path` untouched (the local name is `<path>.tmp<pid>` on a disk, removed by the next run
  of the same part; a temporary folder for a bucket)."""

  def __init__(self, path: str):
    self.path = path
    self._dir = tempfile.mkdtemp(prefix="synergen_part_") if storage.is_remote(path) else None
    self.local = (os.path.join(self._dir, os.path.basename(path)) if self._dir
                  else f"{path}.tmp{os.getpid()}")

  def commit(self) -> None:
    if self._dir is None:
      os.replace(self.local, self.path)
      return
    try:
      storage.upload(self.local, self.path)
    finally:
      shutil.rmtree(self._dir, ignore_errors=True)


def write_atomic(path: str, write) -> None:
  """`write(local temporary path)`, then that file becomes `path`: readers see all of it or none."""
  staged = Staged(path)
  write(staged.local)
  staged.commit()


def write_json(path: str, value) -> None:
  def write(tmp):
    with open(tmp, "w") as f:
      json.dump(value, f, indent=1)
  write_atomic(path, write)


def read_part(out_dir: str, shard: InputShard, key: str) -> dict | None:
  """The finished part's counts, None when it is not finished; a part of other settings is an error."""
  path = storage.path(part_path(out_dir, shard, ".json"))
  if not path.exists():
    return None
  part = json.loads(path.read_text())
  if part["key"] != key:
    raise DataError(f"{path} was written with other prepare settings (key {part['key']} != {key}): "
                    f"prepare into a new --out folder, or delete {out_dir}/{PARTS} to start over")
  return part


def merge(out_dir: str, shards: Sequence[InputShard], key: str, meta: dict) -> dict:
  """Writes meta.json (`meta` + per-split entries + counts) and the split indices over all parts."""
  parts = {s: read_part(out_dir, s, key) for s in shards}
  missing = [f"{s.split}-{s.name}" for s, p in parts.items() if p is None]
  if missing:
    raise DataError(f"{out_dir}: {len(missing)} of {len(shards)} parts are not written yet "
                    f"({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}); run prepare "
                    "for their shards (or wait for the processes writing them), then merge")
  splits, skipped, dropped = {}, collections.Counter(), collections.Counter()
  where = collections.defaultdict(list)     # a few skipped records by name, to go and look at
  raw, tiles = 0, collections.Counter()
  for split in ("train", "eval"):
    mine = [s for s in shards if s.split == split]
    index = collections.defaultdict(list)
    entry = dict(examples=0, shards=[], shard_sizes=[], records=0,
                 tasks={name: 0 for name in TASK_IDS})
    for shard in mine:
      part = parts[shard]
      skipped.update(part["skipped"]); dropped.update(part["dropped_images"])
      for reason, names in part.get("skipped_where", {}).items():
        where[reason] += names[:max(0, WHERE_PER_REASON - len(where[reason]))]
      raw += part["raw_items"]
      tiles.update(encoded=part.get("tiles_encoded", 0), reused=part.get("tiles_reused", 0))
      entry["records"] += part["records"]
      for task, n in part["tasks"].items():
        entry["tasks"][task] += n
      if not part["examples"]:
        continue        # an empty ArrayRecord file is not worth a reader
      entry["examples"] += part["examples"]
      entry["shards"].append(part_name(shard, ".array_record"))
      entry["shard_sizes"].append(part["examples"])
      with storage.path(part_path(out_dir, shard, "-index.npz")).open("rb") as f, np.load(f) as z:
        for field in INDEX_FIELDS:
          index[field].append(z[field])
    dtypes = {f: np.int8 if f == "task" else np.int32 for f in INDEX_FIELDS}
    arrays = {f: np.concatenate(index[f]) if index[f] else np.zeros(0, t) for f, t in dtypes.items()}
    write_npz(os.path.join(out_dir, f"{split}-index.npz"), arrays)
    splits[split] = entry
  meta = dict(meta, splits=splits, skipped=dict(sorted(skipped.items())),
              skipped_total=int(sum(skipped.values())), skipped_where=dict(sorted(where.items())),
              dropped_images=dict(sorted(dropped.items())),
              parts=len(shards), prepare_key=key,
              tiles={"encoded": tiles["encoded"], "reused": tiles["reused"]})
  meta["raw_records"] = meta.get("raw_records") or raw
  write_json(os.path.join(out_dir, "meta.json"), meta)
  return meta


def write_npz(path: str, arrays: dict) -> None:
  def write(tmp):
    with open(tmp, "wb") as f:     # a file object: np.savez would append .npz to a temporary name
      np.savez(f, **arrays)
  write_atomic(path, write)
