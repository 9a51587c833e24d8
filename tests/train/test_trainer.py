"""The trainer: learning, stage freezing, exact resume, mesh invariance, clear errors."""

import json
import os

import jax
import numpy as np
import pytest

from synergen_jax.core.errors import ConfigError
from synergen_jax.train.loop import train
from synergen_jax.train.optimizer import trainable_mask


def _config(tiny_data, **train):
  config = tiny_data["config"].copy_and_resolve_references()
  config.train.update(log_every=1, checkpoint_every=1000, batch_size=8)
  config.train.update(**train)
  config.optim.update(warmup_steps=5, learning_rate=3e-3)
  return config


def _leaves(tree):
  return jax.tree_util.tree_flatten_with_path(jax.device_get(tree))[0]


def test_tiny_trains_and_loss_falls(tiny_data, tmp_path):
  config = _config(tiny_data, steps=30)
  config.stage = "sft"
  losses = train(config, str(tmp_path))["losses"]
  first, last = np.mean([losses[s] for s in (1, 2, 3)]), np.mean([losses[s] for s in (28, 29, 30)])
  assert last < 0.8 * first, (first, last)
  rows = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  heldout = [r for r in rows if "eval/loss/text" in r]
  rows = [r for r in rows if "loss" in r]
  assert [r["step"] for r in rows] == list(range(1, 31))
  assert [r["step"] for r in heldout] == [30] and heldout[0]["eval/examples"] > 0
  for key in ("loss", "loss/text", "loss/image", "lr", "grad_norm", "tokens_per_sec",
              "examples_per_sec", "padding_fraction", "data_wait_fraction", "mfu"):
    assert key in rows[-1]
  assert rows[-1]["mfu"] is None                     # no peak for CPU
  assert 0 <= rows[-1]["padding_fraction"] < 1 and rows[-1]["tokens_per_sec"] > 0


def test_stage1_leaves_frozen_parameters_bit_identical(tiny_data, tmp_path):
  config = _config(tiny_data, steps=4)
  config.stage = "1"
  init = train(_config(tiny_data, steps=0), str(tmp_path / "init"))["state"]["params"]
  after = train(config, str(tmp_path / "run"))["state"]
  mask = trainable_mask(init, "1")
  moved = frozen = 0
  for (path, a), (_, b), (_, t) in zip(_leaves(init), _leaves(after["params"]), _leaves(mask)):
    name = jax.tree_util.keystr(path)
    if t:
      moved += not np.array_equal(a, b)
    else:
      np.testing.assert_array_equal(a, b, err_msg=name)
      frozen += 1
    assert t == any(k in name for k in ("fold_embed", "vision_", "unfold_head", "new_token")), name
  assert moved > 0 and frozen > 0
  # Frozen parameters hold no optimizer state: Adam's moments exist only for the trainable ones.
  n_trainable = sum(bool(t) for _, t in _leaves(mask))
  mu_leaves = [x for p, x in _leaves(after["opt_state"]) if "mu" in jax.tree_util.keystr(p)]
  assert len(mu_leaves) == n_trainable


def test_resume_is_bitwise_identical(tiny_data, tmp_path):
  config = _config(tiny_data, steps=6, checkpoint_every=3)
  straight = train(config, str(tmp_path / "a"))
  first = train(config, str(tmp_path / "b"), stop_after=3)
  second = train(config, str(tmp_path / "b"))
  assert {**first["losses"], **second["losses"]} == straight["losses"]
  for (p, a), (_, b) in zip(_leaves(straight["state"]["params"]), _leaves(second["state"]["params"])):
    np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(p))


def test_same_losses_on_every_mesh(tiny_data, tmp_path):
  losses = {}
  # Pure data parallelism over 8 is the default mesh of every other trainer test.
  for shape in ((1, 1, 1), (2, 4, 1), (2, 2, 2)):
    config = _config(tiny_data, steps=3)
    config.stage = "sft"
    config.mesh.update(data=shape[0], fsdp=shape[1], tensor=shape[2])
    devices = jax.devices()[:1] if shape == (1, 1, 1) else None
    losses[shape] = train(config, str(tmp_path / "x".join(map(str, shape))), devices=devices)["losses"]
  for shape, got in losses.items():
    np.testing.assert_allclose([got[s] for s in (1, 2, 3)], [losses[(1, 1, 1)][s] for s in (1, 2, 3)],
                               rtol=2e-5, err_msg=str(shape))


def test_bad_mesh_and_incompatible_workdir_fail_before_training(tiny_data, tmp_path):
  config = _config(tiny_data, steps=1)
  config.mesh.update(data=3, fsdp=1, tensor=1)
  with pytest.raises(ConfigError, match="needs 3 devices but 8 are visible"):
    train(config, str(tmp_path / "mesh"))
  config = _config(tiny_data, steps=1, batch_size=4)
  with pytest.raises(ConfigError, match="batch_size=4 does not split over the mesh's data x fsdp = 8"):
    train(config, str(tmp_path / "rows"))
  train(_config(tiny_data, steps=1), str(tmp_path / "w"))
  other = _config(tiny_data, steps=2)
  other.model.mlp_dim = 96
  with pytest.raises(ConfigError, match=r"different model .*'mlp_dim'"):
    train(other, str(tmp_path / "w"))


def test_heldout_metrics_weight_batches_by_their_targets(tiny_data, tmp_path):
  """Two held-out batches: the pass equals the target-weighted mean of per-batch metrics."""
  from synergen_jax.data.pipeline import make_iterator
  from synergen_jax.model.losses import synergen_loss
  from synergen_jax.model.synergen_vl import SynerGenVL
  from synergen_jax.train.heldout import heldout_metrics
  from synergen_jax.prepare.cache import with_prepared_data

  config = with_prepared_data(_config(tiny_data, steps=2))
  params = train(config, str(tmp_path))["state"]["params"]
  from synergen_jax.core.config import validate_config
  model = SynerGenVL(validate_config(config))
  got = heldout_metrics(config, model, params, mesh=None, max_batches=2)
  it = make_iterator(config, split="eval", num_epochs=1)
  per = [synergen_loss(model.apply(params, b), config.loss.image_weight)[1] for b in (next(it), next(it))]
  t = [float(m["tokens/text"]) for m in per]
  want = sum(float(m["loss/text"]) * w for m, w in zip(per, t)) / sum(t)
  np.testing.assert_allclose(got["eval/loss/text"], want, rtol=1e-5)
  i = [float(m["tokens/image"]) for m in per]
  want = sum(float(m["accuracy/image"]) * w for m, w in zip(per, i)) / sum(i)
  np.testing.assert_allclose(got["eval/accuracy/image"], want, rtol=1e-5)


_DIE_DURING_SAVE = """
import json, os, sys
import ml_collections
from synergen_jax.train import checkpoint, loop
config_file, workdir, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
real_save = checkpoint.save

def save_then_die(mngr, step, *args, **kwargs):
  real_save(mngr, step, *args, **kwargs)     # async: the write goes on in a background thread
  if step == kill_at:
    os._exit(9)                              # the process dies before the save can finish

checkpoint.save = save_then_die
loop.train(ml_collections.ConfigDict(json.load(open(config_file))), workdir)
"""


def test_killed_during_async_save_resumes_from_last_complete_checkpoint(tiny_data, tmp_path):
  import subprocess
  import sys
  config = _config(tiny_data, steps=8, checkpoint_every=2)
  straight = train(config, str(tmp_path / "straight"))
  (tmp_path / "config.json").write_text(config.to_json())
  workdir = tmp_path / "killed"
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  proc = subprocess.run([sys.executable, "-c", _DIE_DURING_SAVE, str(tmp_path / "config.json"),
                         str(workdir), "6"], capture_output=True, text=True, timeout=600,
                        env=dict(os.environ, PYTHONPATH=root))
  assert proc.returncode == 9, proc.stderr[-2000:]
  left = os.listdir(workdir / "checkpoints")
  assert "4" in left and "6" not in left, left            # step 6 never became a checkpoint
  resumed = train(config, str(workdir))
  assert resumed["losses"] == {s: straight["losses"][s] for s in (5, 6, 7, 8)}
  for (p, a), (_, b) in zip(_leaves(straight["state"]["params"]), _leaves(resumed["state"]["params"])):
    np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(p))


def test_gradient_accumulation_averages_strided_micro_batches():
  """grad_accum=2: the loss and the gradient norm are those of the mean over micro-batches of rows
  0, 2, 4, ... and 1, 3, 5, ...; under 8 devices taking a micro-batch gathers no batch rows."""
  import flax.linen as nn
  import jax.numpy as jnp
  import optax
  from helpers import random_batch, tiny
  from synergen_jax.aot.compile_report import collectives
  from synergen_jax.model.losses import synergen_loss
  from synergen_jax.parallel.sharding import LOGICAL_RULES
  from synergen_jax.model.synergen_vl import SynerGenVL
  from synergen_jax.train.state import make_train_step
  _, mc = tiny()
  batch = random_batch(mc, rows=16, seq_len=32, seed=12)
  model = SynerGenVL(mc)
  params = nn.unbox(jax.jit(model.init)(jax.random.key(0), batch))
  tx = optax.sgd(0.0)
  trainable = jax.tree.map(lambda _: True, params)
  step = make_train_step(model, tx, optax.constant_schedule(0.0), trainable, 2.0, grad_accum=2)
  state = dict(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
               nonfinite=jnp.zeros((), jnp.int32))
  _, metrics = jax.jit(step)(state, batch)
  grad_fn = jax.value_and_grad(lambda p, b: synergen_loss(model.apply(p, b), 2.0)[0])
  parts = [grad_fn(params, {k: v[i::2] for k, v in batch.items()}) for i in (0, 1)]
  mean_grads = jax.tree.map(lambda a, b: (a + b) / 2, parts[0][1], parts[1][1])
  norm = jnp.sqrt(sum(jnp.sum(g ** 2) for g in jax.tree.leaves(mean_grads)))
  np.testing.assert_allclose(metrics["loss"], (parts[0][0] + parts[1][0]) / 2, rtol=1e-5)
  np.testing.assert_allclose(metrics["grad_norm"], norm, rtol=1e-4)

  mesh = jax.make_mesh((8, 1, 1), ("data", "fsdp", "tensor"),
                       axis_types=(jax.sharding.AxisType.Auto,) * 3)
  rows = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(("data", "fsdp")))
  with jax.set_mesh(mesh), nn.logical_axis_rules(LOGICAL_RULES):
    hlo = jax.jit(step).lower(state, jax.device_put(batch, rows)).compile().as_text()
  # Data parallel: the gradients' all-reduce is the only collective a step needs.
  moved = [(op, shape) for op, shape, _ in collectives(hlo) if op != "all-reduce"]
  assert not moved, moved


def _without_eval_split(tiny_data, folder) -> str:
  """tiny_data's prepared folder as a stream prepared with no held-out part: meta.json lists no
  'eval' split (the shards themselves are shared by symlink)."""
  src = tiny_data["config"].data.path
  os.makedirs(folder)
  for name in os.listdir(src):
    if name != "meta.json":
      os.symlink(os.path.join(src, name), os.path.join(folder, name))
  meta = json.load(open(os.path.join(src, "meta.json")))
  del meta["splits"]["eval"]
  json.dump(meta, open(os.path.join(folder, "meta.json"), "w"))
  return str(folder)


def test_data_without_a_heldout_split_trains_to_its_final_checkpoint(tiny_data, tmp_path, capsys):
  config = _config(tiny_data, steps=3, eval_every=1, preview_images=2)
  config.data.path = _without_eval_split(tiny_data, tmp_path / "stream")
  result = train(config, str(tmp_path / "run"))
  assert result["step"] == 3 and result["heldout"] == {}
  assert "held-out metrics and previews are off" in capsys.readouterr().out
  rows = [json.loads(l) for l in open(tmp_path / "run" / "metrics.jsonl")]
  assert not [r for r in rows if "eval/loss/text" in r]
  assert "3" in os.listdir(tmp_path / "run" / "checkpoints")


def test_an_error_in_the_final_heldout_pass_keeps_the_final_checkpoint(tiny_data, tmp_path,
                                                                      monkeypatch):
  from synergen_jax.train import checkpoint, loop

  def broken(*args, **kwargs):
    raise RuntimeError("held-out pass broke")
  monkeypatch.setattr(loop, "heldout_metrics", broken)
  config = _config(tiny_data, steps=2, checkpoint_every=1000)
  with pytest.raises(RuntimeError, match="held-out pass broke"):
    train(config, str(tmp_path))
  mngr = checkpoint.manager(str(tmp_path), config.train)
  assert mngr.latest_step() == 2
  mngr.close()


def test_a_workdir_written_before_newer_keys_loads_with_their_defaults(tiny_data, tmp_path):
  """config.json of an older run lacks keys declared since (data.code_cache, data.components):
  inference and export still read it, each missing key at its default, every recorded value kept."""
  from synergen_jax.core.config import validate_config
  from synergen_jax.train import checkpoint

  config = _config(tiny_data, steps=0)
  config.data.seq_len = 48
  saved = json.loads(config.to_json_best_effort())
  del saved["data"]["code_cache"], saved["data"]["components"], saved["train"]["events_every_secs"]
  (tmp_path / "config.json").write_text(json.dumps(saved))
  loaded = checkpoint.read_config(str(tmp_path))
  assert loaded.data.code_cache is None and tuple(loaded.data.components) == ()
  assert loaded.train.events_every_secs == 60.0 and loaded.data.seq_len == 48
  validate_config(loaded)
