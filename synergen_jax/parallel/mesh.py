"""The device mesh from `config.mesh`: axes data, fsdp, tensor.

On one node (one process, or one TPU slice however many hosts it has) data, fsdp and tensor are the
whole mesh: devices per axis, -1 = the devices left over.

Across several nodes the links between them (InfiniBand between GPU hosts, DCN between TPU slices)
carry an order of magnitude less than the links inside one (NVLink, ICI). FSDP gathers every layer's
parameters in the forward and the backward pass, so it belongs inside a node; data parallelism
reduces the gradients once per step, so it may cross nodes. The mesh is then hybrid: data, fsdp and
tensor size one node's devices, `dcn_data` and `dcn_fsdp` say how many nodes the data and fsdp axes
span, and each mesh axis is the product (with the defaults dcn_data=-1, dcn_fsdp=1: FSDP and tensor
parallelism in each node, data parallelism across all of them). A node here is a granule: a TPU
slice on TPU, a process elsewhere (the GPU launchers start one process per node, driving all its
GPUs).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import jax
import numpy as np

from synergen_jax.core.errors import ConfigError
from synergen_jax.core.keys import MeshKeys

AXES = ("data", "fsdp", "tensor")
DCN_KEYS = ("dcn_data", "dcn_fsdp")      # tensor parallelism never crosses nodes: no dcn_tensor
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(MeshKeys)}


def _value(mesh_config, name: str) -> int:
  """A mesh key from a ConfigDict or a plain dict (callers may give only the axes)."""
  return int(mesh_config[name]) if name in mesh_config else int(_DEFAULTS[name])


def _resolve(named: dict, count: int, what: str) -> tuple[int, ...]:
  """Sizes with their one -1 resolved so that they multiply to `count` `what`."""
  sizes = list(named.values())
  if sum(s == -1 for s in sizes) > 1:
    raise ConfigError(f"config.mesh={named}: at most one axis may be -1")
  if any(s == 0 or s < -1 for s in sizes):
    raise ConfigError(f"config.mesh={named}: sizes must be positive or -1")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if count % known:
      raise ConfigError(f"config.mesh={named}: {count} {what} do not divide by the fixed axes' "
                        f"product {known}")
    sizes[sizes.index(-1)] = count // known
  if math.prod(sizes) != count:
    raise ConfigError(f"config.mesh={named} needs {math.prod(sizes)} {what} but {count} are visible; "
                      "set one axis to -1 to take the rest")
  return tuple(sizes)


def mesh_shape(mesh_config, device_count: int, what: str = "devices") -> tuple[int, ...]:
  """(data, fsdp, tensor) over `device_count` devices (one node's, when the mesh is hybrid)."""
  return _resolve({a: _value(mesh_config, a) for a in AXES}, device_count, what)


def dcn_shape(mesh_config, node_count: int) -> tuple[int, ...]:
  """Nodes along (data, fsdp, tensor); tensor always 1."""
  return _resolve({k: _value(mesh_config, k) for k in DCN_KEYS}, node_count, "nodes (or TPU slices)") + (1,)


def is_tpu(device) -> bool:
  return "tpu" in device.platform.lower() or device.device_kind.startswith("TPU")


def node_of(device) -> int:
  """The granule a device belongs to: its slice on TPU (ICI spans a slice's hosts), its process
  elsewhere (a GPU host's GPUs share NVLink, and the launchers run one process per host)."""
  return getattr(device, "slice_index", 0) if is_tpu(device) else device.process_index


def nodes(devices: Sequence, node_of: Callable = node_of) -> list[list]:
  """The devices grouped by node, nodes in index order, each in the order given."""
  groups: dict[int, list] = {}
  for d in devices:
    groups.setdefault(node_of(d), []).append(d)
  sizes = {k: len(v) for k, v in sorted(groups.items())}
  if len(set(sizes.values())) > 1:
    raise ConfigError(f"nodes with different device counts {sizes} (node: devices): a mesh needs the "
                      "same count on each; give every process the same number of devices "
                      "(JAX_LOCAL_DEVICE_IDS, GPUS_PER_NODE)")
  return [groups[k] for k in sorted(groups)]


def hybrid_device_array(groups: Sequence[Sequence], ici: tuple[int, ...], dcn: tuple[int, ...]) -> np.ndarray:
  """Node g's devices, shaped `ici`, become block number g (row-major) of a `dcn` grid of blocks: the
  index along mesh axis i is (the node's block coordinate) * ici[i] + (the device's coordinate in
  its node), so a group of devices varying along an axis of dcn size 1 lies in one node."""
  if len(groups) != math.prod(dcn) or any(len(g) != math.prod(ici) for g in groups):
    raise ValueError(f"{len(groups)} nodes of {[len(g) for g in groups]} devices do not make a "
                     f"{dcn} grid of {ici} blocks")
  stacked = np.empty(len(groups) * math.prod(ici), dtype=object)
  stacked[:] = [d for g in groups for d in g]          # object slots: no array-of-arrays surprises
  n = len(ici)
  interleaved = [k for i in range(n) for k in (i, n + i)]    # (dcn0, ici0, dcn1, ici1, ...)
  return stacked.reshape(*dcn, *ici).transpose(interleaved).reshape([a * b for a, b in zip(dcn, ici)])


def device_array(mesh_config, devices: Sequence, node_of: Callable = node_of) -> np.ndarray:
  """The devices arranged as the (data, fsdp, tensor) mesh: on one node as given (row-major), across
  nodes hybrid (see the module docstring)."""
  groups = nodes(devices, node_of)
  if len(groups) == 1:
    return np.asarray(devices).reshape(mesh_shape(mesh_config, len(devices)))
  per_node = len(groups[0])
  ici = mesh_shape(mesh_config, per_node,
                   f"devices per node (on {len(groups)} nodes, config.mesh.data, fsdp and tensor "
                   f"size one node of {per_node} devices; dcn_data and dcn_fsdp the nodes)")
  return hybrid_device_array(groups, ici, dcn_shape(mesh_config, len(groups)))


def make_mesh(mesh_config, devices=None, node_of: Callable = node_of) -> jax.sharding.Mesh:
  devices = list(devices if devices is not None else jax.devices())
  return jax.sharding.Mesh(device_array(mesh_config, devices, node_of), AXES,
                           axis_types=(jax.sharding.AxisType.Auto,) * len(AXES))
