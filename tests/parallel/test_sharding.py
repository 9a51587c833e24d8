"""Every parameter carries logical names the rules table knows; a sharded forward on 8 fake devices
gives the single-device loss."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import config_path, random_batch, tiny
from synergen_jax import batch as batch_lib
from synergen_jax.config import load_config, validate_config
from synergen_jax.parallel.mesh import make_mesh
from synergen_jax.train.state import abstract_params, replicated_fraction, strip_boxes
from synergen_jax.model.losses import synergen_loss
from synergen_jax.model.synergen_vl import SynerGenVL
from synergen_jax.parallel.sharding import LOGICAL_RULES, RULE_NAMES, logical_names, mesh_shardings


@pytest.mark.parametrize("arg", ["", "scan=true"])
def test_every_parameter_has_known_logical_names(arg):
  _, mc = tiny(arg)
  batch = random_batch(mc, rows=1, seq_len=32)
  boxed = jax.eval_shape(SynerGenVL(mc).init, jax.random.key(0), batch)
  shapes = {k: v.value.shape for k, v in zip(logical_names(boxed), jax.tree.leaves(
      boxed, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned)))}
  for path, names in logical_names(boxed).items():
    assert names is not None, f"{path} has no logical axis names"
    assert len(names) == len(shapes[path]), f"{path}: names {names} vs shape {shapes[path]}"
    unknown = [n for n in names if n is not None and n not in RULE_NAMES]
    assert not unknown, f"{path}: {unknown} missing from LOGICAL_RULES"


@pytest.mark.parametrize("mesh_shape", [(8, 1, 1), (2, 2, 2), (1, 4, 2)])
def test_sharded_loss_equals_single_device(mesh_shape):
  _, mc = tiny()
  batch = random_batch(mc, rows=8, seq_len=32, seed=3)
  model = SynerGenVL(mc)
  boxed = jax.jit(model.init)(jax.random.key(0), batch)
  loss_fn = lambda p, b: synergen_loss(model.apply(p, b), b, 2.0)[0]
  expected = jax.jit(loss_fn)(nn.unbox(boxed), batch)

  mesh = jax.make_mesh(mesh_shape, ("data", "fsdp", "tensor"),
                       axis_types=(jax.sharding.AxisType.Auto,) * 3)
  shardings = mesh_shardings(boxed, mesh)
  params = jax.device_put(nn.unbox(boxed), shardings)
  batch_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(("data", "fsdp")))
  sharded_batch = jax.device_put(batch, batch_sharding)
  with jax.set_mesh(mesh), nn.logical_axis_rules(LOGICAL_RULES):
    got = jax.jit(loss_fn)(params, sharded_batch)
  np.testing.assert_allclose(got, expected, rtol=2e-5)
  # the embedding really is split over the tensor axis when there is one
  emb = params["params"]["text_embed"]["embedding"]
  assert emb.sharding.shard_shape(emb.shape)[0] == emb.shape[0] // mesh_shape[2]


@pytest.mark.parametrize("name", ["synergen_vl_2b.py", "qwen2_0p5b_ablation.py"])
def test_paper_configs_shard_parameters_by_default(name):
  """Their default mesh is FSDP over every device: under 1% of parameter bytes replicated (the
  configs' guard), where pure data parallelism would replicate all of them."""
  config = load_config(config_path(name))
  mc = validate_config(config)
  assert config.train.max_replicated_fraction <= 0.01
  boxed = abstract_params(SynerGenVL(mc), batch_lib.zeros(8, 64, mc.fold_ratio, jnp))
  shares = {}
  for mesh_config in (config.mesh, dict(data=-1, fsdp=1, tensor=1)):
    mesh = make_mesh(mesh_config, jax.devices())
    with nn.logical_axis_rules(LOGICAL_RULES):
      shares[mesh_config["data"]] = replicated_fraction(strip_boxes(boxed), mesh_shardings(boxed, mesh))
  assert shares[1] < config.train.max_replicated_fraction < shares[-1] == 1.0
