"""config.data -> the input shards `prepare` writes, one output part each.

  web-scale formats (data/formats.py)   one shard per input file of config.data.path (train) and of
                                        config.data.eval_path (eval; none when unset)
  random-access sources (sources.py)    the seeded train/eval split (the one train_vq holds out), cut
                                        into runs of config.data.records_per_shard source indices

Shard names are stable, so a rerun finds the parts it already wrote. `assigned` deals the shards out
to the processes that prepare together: shard j goes to process j mod n.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

from synergen_jax.core import storage
from synergen_jax.data import formats
from synergen_jax.data.documents import InputShard, Skipped
from synergen_jax.core.errors import BadRecord, DataError
from synergen_jax.data.sources import Source, open_source, split_indices


@dataclasses.dataclass(frozen=True)
class Inputs:
  name: str                        # the source's name, recorded in meta.json
  shards: tuple[InputShard, ...]
  raw_records: int | None          # known up front for random-access sources only
  class_names: tuple[str, ...] = ()
  background: int = 255


def _read_indices(source: Source, indices):
  for i in indices:
    try:
      yield source[int(i)]
    except BadRecord as e:
      yield Skipped(e.reason, f"{source.name}[{i}]: {e}")


def _index_shards(source: Source, split: str, indices, per_shard: int) -> list[InputShard]:
  runs = [indices[k:k + per_shard] for k in range(0, len(indices), per_shard)]
  return [InputShard(f"{k:05d}", split, lambda run=run: _read_indices(source, run),
                     tuple(int(i) for i in run)) for k, run in enumerate(runs)]


def check_input_paths(data_config) -> None:
  """Each path config.data names, local or on a bucket: a malformed bucket path, a missing bucket,
  missing credentials or a refused permission is one ConfigError naming the key, before any file is
  listed (a bucket client's own error would name neither)."""
  for key in ("path", "eval_path", "image_root"):
    value = data_config.get(key)
    if value:
      storage.check_reachable(value, f"config.data.{key}")


def open_inputs(data_config) -> Inputs:
  d = data_config
  if d.name in formats.FORMATS:
    if not d.path:
      raise DataError(f"config.data.name={d.name!r} reads files: set config.data.path to them "
                      "(globs and brace ranges such as shards/{00000..00099}.tar)")
    check_input_paths(d)
    shards = formats.format_shards(d.name, d.path, "train", d)
    if d.get("eval_path"):
      shards += formats.format_shards(d.name, d.eval_path, "eval", d)
    return Inputs(d.name, tuple(shards), None)
  source = open_source(d)
  train_idx, eval_idx = split_indices(len(source), d.eval_count, d.seed)
  shards = (_index_shards(source, "train", train_idx, d.records_per_shard) +
            _index_shards(source, "eval", eval_idx, d.records_per_shard))
  return Inputs(source.name, tuple(shards), len(source), tuple(source.class_names), source.background)


def assigned(shards: Sequence[InputShard], num_shards: int, shard_index: int) -> list[InputShard]:
  """The shards process `shard_index` of `num_shards` writes."""
  if not (num_shards >= 1 and 0 <= shard_index < num_shards):
    raise DataError(f"--shard_index={shard_index} must be in [0, --num_shards={num_shards})")
  return [s for j, s in enumerate(shards) if j % num_shards == shard_index]


# (count, index) variables launchers set, first match wins: ours (launch/local_multiprocess.sh),
# Slurm's tasks, Cloud TPU VM workers (one process per host).
LAUNCHER_ENV = (("SYNERGEN_NUM_PROCESSES", "SYNERGEN_PROCESS_ID"), ("SLURM_NTASKS", "SLURM_PROCID"),
                ("TPU_WORKER_HOSTNAMES", "TPU_WORKER_ID"))


def launcher_shard(env=os.environ) -> tuple[int, int]:
  """(num_shards, shard_index) from the launcher's environment; (1, 0) outside one. prepare needs no
  jax.distributed: its processes share nothing but the output folder."""
  for count, index in LAUNCHER_ENV:
    if count in env and index in env:
      n = len(env[count].split(",")) if count == "TPU_WORKER_HOSTNAMES" else int(env[count])
      return n, int(env[index])
  return 1, 0
