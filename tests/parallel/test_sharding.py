"""Every parameter carries logical names the rules table knows; a sharded forward and backward on 8
fake devices gives the single-device loss and gradients; the expert FFN's compiled program has no
collective over activations."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import config_path, random_batch, tiny
from synergen_jax.core import batch as batch_lib
from synergen_jax.core.config import load_config, validate_config
from synergen_jax.parallel.mesh import make_mesh
from synergen_jax.train.state import abstract_params, replicated_fraction, strip_boxes
from synergen_jax.model.losses import synergen_loss
from synergen_jax.model.synergen_vl import SynerGenVL
from synergen_jax.aot.compile_report import collectives
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
  loss_fn = lambda p, b: synergen_loss(model.apply(p, b), 2.0)[0]
  expected, expected_grads = jax.jit(jax.value_and_grad(loss_fn))(nn.unbox(boxed), batch)

  mesh = jax.make_mesh(mesh_shape, ("data", "fsdp", "tensor"),
                       axis_types=(jax.sharding.AxisType.Auto,) * 3)
  shardings = mesh_shardings(boxed, mesh)
  params = jax.device_put(nn.unbox(boxed), shardings)
  batch_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(("data", "fsdp")))
  sharded_batch = jax.device_put(batch, batch_sharding)
  with jax.set_mesh(mesh), nn.logical_axis_rules(LOGICAL_RULES):
    got, grads = jax.jit(jax.value_and_grad(loss_fn))(params, sharded_batch)
  np.testing.assert_allclose(got, expected, rtol=2e-5)
  # Gradients too: the per-shard heads and expert FFNs sum their parameters' gradients over devices.
  for (path, want), g in zip(jax.tree_util.tree_flatten_with_path(expected_grads)[0],
                             jax.tree.leaves(grads)):
    np.testing.assert_allclose(g, want, atol=2e-6, rtol=1e-4, err_msg=jax.tree_util.keystr(path))
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


def _collective_dims(fn, *args):
  """Every dimension of every collective's result in fn's compiled HLO."""
  hlo = jax.jit(fn).lower(*args).compile().as_text()
  return {(op, shape) for op, shape, _ in collectives(hlo)}


def test_expert_ffn_runs_per_shard_without_activation_collectives():
  """Under FSDP (data=2, fsdp=4) the routed FFN's forward and backward move only parameters: no
  collective result has a token dimension (T, or rows x T). The global sort it replaces does."""
  from synergen_jax.model.experts import ExpertFFN, routed_ffn
  _, mc = tiny()
  b, t, d = 8, 24, mc.llm.d_model
  x = jax.random.normal(jax.random.key(0), (b, t, d))
  modality = jax.random.bernoulli(jax.random.key(1), 0.5, (b, t)).astype(jnp.int32)
  ffn = ExpertFFN(mc.llm)
  boxed = ffn.init(jax.random.key(2), x, modality)
  mesh = jax.make_mesh((2, 4, 1), ("data", "fsdp", "tensor"),
                       axis_types=(jax.sharding.AxisType.Auto,) * 3)
  params = jax.device_put(nn.unbox(boxed), mesh_shardings(boxed, mesh))
  rows = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(("data", "fsdp")))
  x, modality = jax.device_put(x, rows), jax.device_put(modality, rows)
  token_dims = {t, b * t, b * t // 8, b * t // 2}
  assert not token_dims & {mc.llm.mlp_dim, d, 2}, "test sizes must tell tokens from weights apart"

  def grads(apply):
    return jax.grad(lambda p, x: jnp.sum(apply(p, x) ** 2), argnums=(0, 1))

  def per_shard(p, x):
    return ffn.apply(p, x, modality)

  def global_sort(p, x):
    w = p["params"]
    stack = lambda kind: jnp.stack([w[f"text_{kind}"], w[f"vision_{kind}"]])
    return routed_ffn(x, modality, stack("gate"), stack("up"), stack("down"))

  with jax.set_mesh(mesh), nn.logical_axis_rules(LOGICAL_RULES):
    mine = _collective_dims(grads(per_shard), params, x)
    before = _collective_dims(grads(global_sort), params, x)
    np.testing.assert_allclose(jax.jit(per_shard)(params, x), jax.jit(global_sort)(params, x),
                               atol=1e-5)
  assert mine, "FSDP must gather the FFN's kernels"
  moving_tokens = lambda found: [(op, s) for op, s in found if token_dims & set(s)]
  assert not moving_tokens(mine), moving_tokens(mine)
  assert moving_tokens(before), "the global sort should move tokens across devices"
