"""Orbax checkpoints of the train state with the data-iterator state beside it.

`DIR/checkpoints/<step>/{state,data}`: async saves; the last `keep_checkpoints` are kept plus every
`keep_period`-th step. Orbax writes into a temporary folder and renames it when complete, so a save
cut off halfway is never listed and `latest_step` is always restorable. `DIR/config.json` records
the model section a workdir was made with: resuming under a different model is an error.
"""

from __future__ import annotations

import json
import os

import jax
import orbax.checkpoint as ocp

from synergen_jax.config import ConfigError


def manager(workdir: str, train_config) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
      max_to_keep=train_config.keep_checkpoints,
      keep_period=train_config.keep_period or None,
      enable_async_checkpointing=True)
  return ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), "checkpoints"),
                               options=options, item_names=("state", "data"))


def save(mngr: ocp.CheckpointManager, step: int, state, data_state: dict, force=False) -> None:
  mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                          data=ocp.args.JsonSave(data_state)), force=force)


def restore(mngr: ocp.CheckpointManager, step: int, abstract_state):
  """abstract_state: ShapeDtypeStructs with shardings; returns (state, data_state)."""
  out = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                                   data=ocp.args.JsonRestore()))
  return out["state"], out["data"]


def restore_params(workdir: str, abstract_params):
  """Parameters of another run's latest checkpoint (init_from: stage 2 starts from stage 1)."""
  path = os.path.join(os.path.abspath(workdir), "checkpoints")
  with ocp.CheckpointManager(path, item_names=("state", "data")) as other:
    step = other.latest_step()
    if step is None:
      raise ConfigError(f"config.train.init_from={workdir}: no complete checkpoint under {path}")
    restored = other.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  params = restored["state"]["params"]
  want = jax.tree_util.tree_structure(abstract_params)
  if jax.tree_util.tree_structure(params) != want or any(
      tuple(a.shape) != tuple(b.shape)
      for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(abstract_params))):
    raise ConfigError(f"config.train.init_from={workdir}: its parameters do not match this model's "
                      "(different config.model); start from a run of the same model")
  return jax.tree.map(lambda x, a: jax.device_put(x, a.sharding), params, abstract_params), step


def check_workdir_config(workdir: str, config) -> None:
  """Writes config.json on first use; later runs must have the same model section."""
  path = os.path.join(workdir, "config.json")
  model = json.loads(config.model.to_json_best_effort())
  if os.path.exists(path):
    with open(path) as f:
      saved = json.load(f)
    if saved.get("model") != model and os.path.isdir(os.path.join(workdir, "checkpoints")):
      diff = sorted(k for k in set(model) | set(saved.get("model", {}))
                    if model.get(k) != saved.get("model", {}).get(k))
      raise ConfigError(f"{workdir} holds checkpoints of a different model (config.model keys differ: "
                        f"{diff}); use a new --workdir or the original config")
  if jax.process_index() == 0:
    with open(path, "w") as f:
      f.write(config.to_json_best_effort(indent=1))
