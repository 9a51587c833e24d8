"""Orbax handler for the input pipeline's state: one JSON file per logical data shard.

Each process writes the states of the shards it reads (`shard_<i>-of-<S>.json`) into the step's
`data` item, so nothing has to be gathered onto one host, and a restore reads the shards the
restoring process owns, whatever the process count was at save time (grain's own handler keys its
files by process, which would tie a checkpoint to one process count).

A shard's file is its Grain iterator state; under config.data.mixture it is
{"mixture": {name: weight}, "examples": {name: count}, "grain": state}, whose Grain state holds each
component's position by name (data/pipeline.py's DataIterator writes and checks it).
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import orbax.checkpoint as ocp
from etils import epath

from synergen_jax.core.errors import DataError


class DataStateHandler:
  def save(self, directory: epath.Path, args: "DataStateSave") -> None:
    state = args.state
    for shard, shard_state in state["shards"].items():
      (directory / f"shard_{shard}-of-{state['num_shards']}.json").write_text(json.dumps(shard_state))

  def restore(self, directory: epath.Path, args: "DataStateRestore") -> dict:
    shards = {}
    for shard in args.shards:
      path = directory / f"shard_{shard}-of-{args.num_shards}.json"
      if not path.exists():
        found = sorted(p.name for p in directory.glob("shard_*.json"))[:3]
        raise DataError(f"{path} is missing: this checkpoint's data state was saved with other "
                        f"logical shards ({found} ...); resume with the original config.data.shards")
      shards[str(shard)] = json.loads(path.read_text())
    return {"num_shards": args.num_shards, "shards": shards}

  def structure(self, directory: epath.Path) -> Any:
    del directory

  def metadata(self, directory: epath.Path) -> Any:
    del directory

  def finalize(self, directory: epath.Path) -> None:
    del directory

  def close(self) -> None:
    pass

  @classmethod
  def typestr(cls) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


@ocp.args.register_with_handler(DataStateHandler, for_save=True)
@dataclasses.dataclass
class DataStateSave(ocp.args.CheckpointArgs):
  state: dict          # DataIterator.get_state(): {"num_shards": S, "shards": {"i": shard state}}


@ocp.args.register_with_handler(DataStateHandler, for_restore=True)
@dataclasses.dataclass
class DataStateRestore(ocp.args.CheckpointArgs):
  num_shards: int
  shards: list         # this process's logical shard ids
