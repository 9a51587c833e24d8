"""Orbax checkpoints of the train state with the data-iterator state beside it.

`DIR/checkpoints/<step>/{state,data}` (data: one JSON per logical data shard): async saves; the last `keep_checkpoints` are kept plus every
`keep_period`-th step. Orbax writes into a temporary folder and renames it when complete, so a save
cut off halfway is never listed and `latest_step` is always restorable. `DIR/config.json` records
the model section a workdir was made with: resuming under a different model is an error.

A workdir written by `convert.hf_import` also holds IMPORT_RECORD (source family, its config.json,
what was copied) and HF_FILES/ (tokenizer and remote-code files of the HF folder).
"""

from __future__ import annotations

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import orbax.checkpoint as ocp
from etils import epath

from synergen_jax.core import batch as batch_lib
from synergen_jax.core import keys, storage
from synergen_jax.core.errors import ConfigError
from synergen_jax.model.synergen_vl import SynerGenVL
from synergen_jax.parallel.distributed import barrier
from synergen_jax.train.data_state import DataStateRestore, DataStateSave

HF_FILES = "hf_files"             # tokenizer and remote-code files copied from the HF folder
IMPORT_RECORD = "hf_import.json"  # source family, its config.json, what was copied


def workdir_path(workdir: str) -> epath.Path:
  """A local directory made absolute (Orbax wants absolute paths), or a bucket path (gs://bucket/run)
  untouched: Orbax writes it through tensorstore's own GCS driver."""
  return storage.absolute(workdir, "--workdir")


def manager(workdir: str, train_config) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
      max_to_keep=train_config.keep_checkpoints,
      keep_period=train_config.keep_period or None,
      enable_async_checkpointing=True)
  return ocp.CheckpointManager(workdir_path(workdir) / "checkpoints",
                               options=options, item_names=("state", "data"))


def save(mngr: ocp.CheckpointManager, step: int, state, data_state: dict, force=False) -> None:
  """Every process calls this: Orbax writes each process's parameter shards, and each process its
  own logical data shards' iterator states (train/data_state.py)."""
  mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                          data=DataStateSave(data_state)), force=force)


def restore(mngr: ocp.CheckpointManager, step: int, abstract_state, data_shards: dict):
  """abstract_state: ShapeDtypeStructs with shardings; data_shards: {"num_shards", "shards"} of this
  process's iterator. Returns (state, data_state)."""
  out = mngr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state),
      data=DataStateRestore(data_shards["num_shards"], list(data_shards["shards"]))))
  return out["state"], out["data"]


# Parameters the first training run after an HF import creates (their ids come from the tokenizer):
# init_from may lack them, and then they keep their fresh initialisation.
MAY_BE_FRESH = ("new_token_embed", "new_token_head")


def restore_params(workdir: str, abstract_params, role: str = "config.train.init_from", fresh=None):
  """Parameters of a run's latest checkpoint (init_from: stage 2 starts from stage 1; inference).
  `role` names the flag or key that pointed here, for the error messages. With `fresh` (initialised
  parameters), the MAY_BE_FRESH ones the checkpoint lacks are taken from it."""
  path = workdir_path(workdir) / "checkpoints"
  with ocp.CheckpointManager(path, item_names=("state", "data")) as other:
    step = other.latest_step()
    if step is None:
      raise ConfigError(f"{role}={workdir}: no complete checkpoint under {path}")
    saved = ocp.PyTreeCheckpointHandler().metadata(path / str(step) / "state").tree
    absent = [k for k in MAY_BE_FRESH
              if fresh is not None and k in abstract_params["params"] and k not in saved["params"]["params"]]
    wanted = {"params": {k: v for k, v in abstract_params["params"].items() if k not in absent}}
    _check_same_params(saved["params"], wanted, f"{role}={workdir}")
    # Only the parameters, straight into the target shardings: no optimizer state is read, and the
    # checkpoint may come from another device count (8 training devices, 1 inference device).
    item = {"params": wanted}
    restored = other.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
        item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item),
        partial_restore=True)))
  params = restored["state"]["params"]
  if absent:
    params = {"params": {**params["params"], **{k: fresh["params"][k] for k in absent}}}
    print(f"{role}={workdir} has no {absent}: they keep their initialisation", flush=True)
  return params, step


def _check_same_params(saved, abstract, where: str) -> None:
  shapes = lambda tree: {jax.tree_util.keystr(p): tuple(x.shape)
                         for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}
  have, want = shapes(saved), shapes(abstract)
  if have != want:
    diff = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
    raise ConfigError(f"{where}: its parameters do not match this model's (different config.model); "
                      f"first differences: " + ", ".join(f"{k} {have.get(k)} vs {want.get(k)}"
                                                         for k in diff[:3]))


# Model fields that change the numbers without changing any parameter shape: the shape check of
# restore_params cannot catch a mismatch, so init_from compares them with the source's config.json.
SHAPELESS_MODEL_FIELDS = ("norm_eps", "rope_theta", "tie_embeddings", "qkv_bias")
# text_vocab too: an HF import sizes its vocabulary from the release's tokenizer, which a config file
# cannot know; compared by name, the error says which number to set (the shape check would list shapes).
INIT_FROM_MODEL_FIELDS = ("text_vocab",) + SHAPELESS_MODEL_FIELDS


def check_init_from_config(init_from: str, config) -> None:
  path = workdir_path(init_from) / "config.json"
  if not path.exists():
    return
  source = json.loads(path.read_text()).get("model", {})
  for key in INIT_FROM_MODEL_FIELDS:
    if key in source and source[key] != config.model[key]:
      raise ConfigError(f"config.model.{key}={config.model[key]!r}, but config.train.init_from="
                        f"{init_from} was made with {source[key]!r}; set --config.model.{key}="
                        f"{source[key]!r}")


def check_workdir_config(workdir: str, config) -> None:
  """Writes config.json on first use; later runs must have the same model section.

  Under several processes every process reads it between two barriers, while nobody writes, so all
  of them see the same file and raise alike; then process 0 replaces it whole (core/storage.py), so no
  reader ever sees a half-written file."""
  path = workdir_path(workdir) / "config.json"
  model = json.loads(config.model.to_json_best_effort())
  barrier("synergen_jax: before reading config.json")
  if path.exists():
    saved = json.loads(path.read_text())
    if saved.get("model") != model and (workdir_path(workdir) / "checkpoints").exists():
      diff = sorted(k for k in set(model) | set(saved.get("model", {}))
                    if model.get(k) != saved.get("model", {}).get(k))
      raise ConfigError(f"{workdir} holds checkpoints of a different model (config.model keys differ: "
                        f"{diff}); use a new --workdir or the original config")
  barrier("synergen_jax: config.json read")
  if jax.process_index() == 0:
    storage.write_text(path, config.to_json_best_effort(indent=1))


def read_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a workdir was trained (or imported) with."""
  path = workdir_path(workdir) / "config.json"
  if not path.exists():
    raise ConfigError(f"{workdir} is not a training workdir (no config.json); give the --workdir of "
                      "a train run")
  saved = json.loads(path.read_text())
  _fill_defaults(saved, keys.defaults(keys.ExperimentKeys))
  return ml_collections.ConfigDict(saved)


def _fill_defaults(values: dict, defaults: dict) -> None:
  """Keys declared after a workdir was written take their defaults (a newer framework reads an
  older run); every key the run recorded keeps its value."""
  for k, v in defaults.items():
    if k not in values:
      values[k] = v
    elif isinstance(v, dict) and isinstance(values[k], dict):
      _fill_defaults(values[k], v)


def restore_on_device(workdir: str, mc, device=None) -> tuple[dict, int]:
  """The latest parameters of workdir on one device (default: the first): inference, export."""
  model = SynerGenVL(mc)
  example = batch_lib.zeros(1, 8, mc.fold_ratio, jnp)
  device = jax.sharding.SingleDeviceSharding(device or jax.devices()[0])
  shapes = jax.eval_shape(lambda: nn.unbox(model.init(jax.random.key(0), example)))
  abstract = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=device), shapes)
  return restore_params(workdir, abstract, role="--workdir")
