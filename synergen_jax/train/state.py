"""Train state (a plain dict), its shardings on the mesh, and the jitted train step.

`build_train_step` puts them together for the loop and for AOT compilation (`synergen_jax.aot`).

  state = {"step": int32, "params": ..., "opt_state": ..., "nonfinite": int32 (skipped updates)}

Parameters are sharded by the logical-axis rules (parallel/sharding.py); optimizer-state leaves take
the sharding of the parameter whose path they end with (Adam's mu/nu), scalars are replicated.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from synergen_jax.core import batch as batch_lib
from synergen_jax.core.errors import ConfigError
from synergen_jax.model.losses import synergen_loss
from synergen_jax.model.synergen_vl import SynerGenVL
from synergen_jax.parallel.sharding import batch_sharding, mesh_shardings
from synergen_jax.train.optimizer import make_optimizer, trainable_mask


def strip_boxes(tree):
  """Boxed -> plain leaves without applying sharding constraints (safe on ShapeDtypeStructs)."""
  return jax.tree.map(lambda x: x.value if isinstance(x, nn.Partitioned) else x, tree,
                      is_leaf=lambda x: isinstance(x, nn.Partitioned))


def abstract_params(model: SynerGenVL, example_batch):
  """Boxed (logically partitioned) parameter shapes, without allocating anything."""
  # The key is made inside the trace: under an AOT mesh of device descriptions nothing can be placed.
  return jax.eval_shape(lambda batch: model.init(jax.random.key(0), batch), example_batch)


def state_shardings(boxed_params, abstract_state, mesh):
  param_sh = mesh_shardings(boxed_params, mesh)
  shapes = strip_boxes(boxed_params)
  by_path = {jax.tree_util.keystr(p, simple=True, separator="/"): (s, x.shape) for (p, s), x in
             zip(jax.tree_util.tree_flatten_with_path(param_sh)[0], jax.tree.leaves(shapes))}
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())

  def pick(path, leaf):
    key = jax.tree_util.keystr(path, simple=True, separator="/")
    for param_path, (sharding, shape) in by_path.items():
      # Whole path components only: ".../layer_10/..." must not match "layer_0/...".
      if (key == param_path or key.endswith("/" + param_path)) and tuple(leaf.shape) == tuple(shape):
        return sharding
    return replicated
  return jax.tree_util.tree_map_with_path(pick, abstract_state)


def replicated_fraction(abstract_params_unboxed, shardings) -> float:
  """Share of parameter bytes that every device holds in full (the guard's number)."""
  total = replicated = 0
  for x, s in zip(jax.tree.leaves(abstract_params_unboxed), jax.tree.leaves(shardings)):
    n = int(np.prod(x.shape)) * jnp.dtype(x.dtype).itemsize
    total += n
    if s.is_fully_replicated:
      replicated += n
  return replicated / max(total, 1)


def init_state(model, tx, example_batch, seed: int):
  params = nn.unbox(model.init(jax.random.key(seed), example_batch))
  return dict(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
              nonfinite=jnp.zeros((), jnp.int32))


def make_train_step(model, tx, schedule, trainable, image_weight: float, grad_accum: int = 1):
  """(state, batch) -> (state, metrics). Gradients are averaged over `grad_accum` row micro-batches;
  grad_norm is over the `trainable` parameters (a bool pytree), before clipping.

  A non-finite loss or gradient leaves the state unchanged (the step counter still advances) and
  increments state["nonfinite"]; the loop decides whether to go on.
  """
  def loss_fn(params, batch):
    loss, metrics = synergen_loss(model.apply(params, batch), image_weight)
    return loss, metrics

  grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

  def compute_grads(params, batch):
    if grad_accum == 1:
      return grad_fn(params, batch)
    # Micro-batch i takes rows i, i + grad_accum, i + 2 grad_accum, ...: each device then holds
    # its share of every micro-batch, so taking one moves nothing (a [grad_accum, rows / grad_accum]
    # split would put each micro-batch on a fraction of the devices and reshard it every step).
    micro = jax.tree.map(lambda x: x.reshape((x.shape[0] // grad_accum, grad_accum) + x.shape[1:])
                         .swapaxes(0, 1), batch)

    def body(carry, mb):
      (loss, metrics), grads = grad_fn(params, mb)
      acc = jax.tree.map(jnp.add, carry, ((loss, metrics), grads))
      return acc, None
    zeros = jax.tree.map(jnp.zeros_like, jax.eval_shape(grad_fn, params,
                                                        jax.tree.map(lambda x: x[0], micro)))
    total, _ = jax.lax.scan(body, zeros, micro)
    return jax.tree.map(lambda x: x / grad_accum, total)

  def train_step(state, batch):
    params = state["params"]
    (loss, metrics), grads = compute_grads(params, batch)
    updates, opt_state = tx.update(grads, state["opt_state"], params)
    grad_norm = jnp.sqrt(sum(jnp.sum(jnp.square(g.astype(jnp.float32)))
                             for g, t in zip(jax.tree.leaves(grads), jax.tree.leaves(trainable)) if t))
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    new_params = jax.tree.map(lambda p, u: (p + u).astype(p.dtype), params, updates)
    keep = lambda new, old: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new, old)
    state = dict(step=state["step"] + 1, params=keep(new_params, params),
                 opt_state=keep(opt_state, state["opt_state"]),
                 nonfinite=state["nonfinite"] + (~finite).astype(jnp.int32))
    seg = batch["segment_ids"]
    metrics = dict(metrics, grad_norm=grad_norm, lr=schedule(state["step"] - 1),
                   finite=finite.astype(jnp.int32),
                   nonpad_slots=jnp.sum(seg > 0).astype(jnp.float32),
                   examples=jnp.sum(jnp.max(seg, axis=1)).astype(jnp.float32),
                   slots=jnp.asarray(seg.size, jnp.float32))
    return state, metrics
  return train_step



# libtpu's while-loop all-reduce code motion fails a RET_CHECK ("user->opcode() == kAdd",
# while_loop_all_reduce_code_motion.cc) on the unfold head's chunk loop, whose FSDP parameter
# gradients are reduced inside the loop. The pass only moves such reductions of accumulated values
# out of loops; without it they run per iteration (per chunk of windows).
TPU_COMPILER_OPTIONS = {"xla_disable_hlo_passes": "while-loop-all-reduce-code-motion"}


def compiler_options(mesh) -> dict | None:
  return TPU_COMPILER_OPTIONS if mesh.devices.flat[0].platform == "tpu" else None


@dataclasses.dataclass
class StepPlan:
  model: SynerGenVL
  example: dict                 # a zero batch of the training shape
  tx: object
  abstract_state: dict          # ShapeDtypeStructs of the train state
  shardings: dict               # NamedShardings of the train state
  step_fn: object               # jitted (state, batch) -> (state, metrics), state donated


def build_train_step(config, mc, mesh, host_example: bool = False) -> StepPlan:
  """Model, optimizer, state shardings and the jitted step; call under the mesh and logical rules.
  Raises ConfigError when more parameter bytes would be replicated than the config allows.
  host_example: the zero batch as numpy (AOT: the mesh's devices are descriptions, nothing can be
  placed on them)."""
  t_cfg = config.train
  model = SynerGenVL(mc)
  example = batch_lib.zeros(t_cfg.batch_size, config.data.seq_len, mc.fold_ratio,
                            np if host_example else jnp)
  boxed = abstract_params(model, example)
  params_shape = strip_boxes(boxed)
  tx, schedule = make_optimizer(config, params_shape)
  abstract_state = jax.eval_shape(lambda: init_state(model, tx, example, t_cfg.seed))
  shardings = state_shardings(boxed, abstract_state, mesh)
  share = replicated_fraction(params_shape, shardings["params"])
  if share > t_cfg.max_replicated_fraction:
    raise ConfigError(f"{share:.0%} of parameter bytes would be replicated on mesh "
                      f"{dict(mesh.shape)}, above config.train.max_replicated_fraction="
                      f"{t_cfg.max_replicated_fraction}; shard more (fsdp/tensor) or raise the limit")
  trainable = trainable_mask(params_shape, config.stage)
  step_fn = jax.jit(
      make_train_step(model, tx, schedule, trainable, config.loss.image_weight, t_cfg.grad_accum),
      in_shardings=(shardings, batch_sharding(mesh)), out_shardings=(shardings, None),
      donate_argnums=0, compiler_options=compiler_options(mesh))
  return StepPlan(model, example, tx, abstract_state, shardings, step_fn)
