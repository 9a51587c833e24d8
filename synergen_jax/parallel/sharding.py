"""The logical-axis rules table: the one place that maps model axis names to mesh axes.

Parameters are named by what they index (`vocab`, `embed`, `heads`, `mlp`, `codebook`, ...);
activations use `batch`, `length` and `act_*` names so that activation and parameter sharding can be
chosen independently (e.g. FSDP shards the `embed` of parameters, never of activations).
Mesh axes: `data`, `fsdp`, `tensor` (parallel/mesh.py).
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax

LOGICAL_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    # activations
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_kv_heads", "tensor"),
    ("act_vocab", "tensor"),
    # parameters
    ("layers", None),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("mlp", "tensor"),
    ("expert", None),
    ("codebook", "tensor"),
    ("code_embed", "fsdp"),
    ("grid", None),
    ("fold_in", "fsdp"),
    ("unfold_embed", "fsdp"),
)

RULE_NAMES = frozenset(name for name, _ in LOGICAL_RULES)


def logical_names(boxed_params) -> dict[str, tuple]:
  """{"path/to/param": logical names} for a tree of nn.LogicallyPartitioned leaves."""
  out = {}
  leaves = jax.tree_util.tree_flatten_with_path(
      boxed_params, is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))[0]
  for path, leaf in leaves:
    names = leaf.names if isinstance(leaf, nn.LogicallyPartitioned) else None
    out[jax.tree_util.keystr(path, simple=True, separator="/")] = names
  return out


def _divisible(spec: jax.sharding.PartitionSpec, shape, mesh) -> jax.sharding.PartitionSpec:
  """Drops mesh axes from dimensions they do not divide (e.g. 1 kv head over tensor=2)."""
  out = []
  for dim, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec))):
    names = (axes,) if isinstance(axes, str) else tuple(axes or ())
    size = 1
    for name in names:
      size *= mesh.shape[name]
    out.append(axes if dim % size == 0 else None)
  return jax.sharding.PartitionSpec(*out)


def mesh_shardings(boxed_params, mesh: jax.sharding.Mesh):
  """NamedShardings for a boxed parameter tree (arrays or ShapeDtypeStructs) under LOGICAL_RULES.

  A mesh axis that does not divide a dimension leaves that dimension unsharded, so every valid
  mesh works for every config; the bytes this replicates are what the trainer's guard measures.
  """
  specs = nn.logical_to_mesh(nn.get_partition_spec(boxed_params), LOGICAL_RULES)
  shapes = jax.tree.map(lambda x: x.value if isinstance(x, nn.Partitioned) else x, boxed_params,
                        is_leaf=lambda x: isinstance(x, nn.Partitioned))   # no constraints applied
  return jax.tree.map(
      lambda spec, x: jax.sharding.NamedSharding(mesh, _divisible(spec, x.shape, mesh)),
      specs, shapes, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))


def batch_sharding(mesh: jax.sharding.Mesh) -> jax.sharding.NamedSharding:
  """A batch's rows over the mesh axes the rules give `batch`; everything else replicated."""
  axes = tuple(a for a in dict(LOGICAL_RULES)["batch"] if a in mesh.axis_names)
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(axes))


def per_batch_shard(fn, batched, params=(), param_names=None):
  """fn(*batched, *params) on each device's rows under the current mesh (`shard_map`).

  batched: arrays whose leading axis is rows, split like the `batch` activation axis; fn's outputs
  are per-row arrays split the same way, so whatever fn does along rows (sorting, chunked loops)
  stays on the device. params: arrays every device needs whole. With `param_names` (their logical
  axis names) they enter as their shards and are all-gathered inside: exactly FSDP's parameter
  gather, and the transpose makes their gradients a reduce-scatter back to the shards. Without
  names they enter whole (their gradients are then summed over all devices). Outside a mesh, on
  one device, or with rows that do not split evenly (a decoding batch), fn runs as it is.
  """
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or mesh.size == 1:
    return fn(*batched, *params)
  axes = tuple(a for a in dict(LOGICAL_RULES)["batch"] if a in mesh.axis_names)
  shards = math.prod(mesh.shape[a] for a in axes)
  if any(x.shape[0] % shards for x in batched):
    return fn(*batched, *params)
  whole = jax.sharding.PartitionSpec()
  if param_names is None:
    specs = [whole] * len(params)
  else:
    specs = [_divisible(nn.logical_to_mesh_axes(names, LOGICAL_RULES), p.shape, mesh)
             for p, names in zip(params, param_names)]

  def run(*args):
    xs, ps = args[:len(batched)], list(args[len(batched):])
    for i, spec in enumerate(specs):
      for dim, names in enumerate(spec):
        if names:
          ps[i] = jax.lax.all_gather(ps[i], names, axis=dim, tiled=True)
    return fn(*xs, *ps)

  rows = jax.sharding.PartitionSpec(axes)
  return jax.shard_map(run, in_specs=(rows,) * len(batched) + tuple(specs), out_specs=rows,
                       check_vma=False)(*batched, *params)


def spec_table(shardings) -> dict[str, str]:
  """{"path/to/leaf": "PartitionSpec(...)"} of a tree of NamedShardings (golden sharding tests)."""
  return {jax.tree_util.keystr(path, simple=True, separator="/"): str(s.spec)
          for path, s in jax.tree_util.tree_flatten_with_path(shardings)[0]}
