"""The mesh across several nodes (parallel/mesh.py): FSDP and tensor parallelism inside a node, data
parallelism across nodes, and one node's mesh exactly as before.

Nodes are simulated two ways: stand-in devices carrying the process_index / slice_index a real
multi-host run gives them (the arrangement itself, up to 8 GPU nodes x 8), and this host's 8 CPU
devices split into 2 nodes of 4 through make_mesh's node_of (programs XLA really compiles, whose
collectives' device groups are read back from the HLO). The compile for 8 nodes x 8 H100s needs jax's
CUDA plugin (the cuda extra) and skips without it."""

import importlib.util
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from helpers import tiny
from synergen_jax.aot.compile_report import compile_report, cross_node_counts, step_hlo
from synergen_jax.aot.hlo_groups import collective_groups, device_groups
from synergen_jax.core.errors import ConfigError
from synergen_jax.parallel.mesh import AXES, device_array, make_mesh

HAS_CUDA_PLUGIN = any(importlib.util.find_spec(m) for m in ("jax_cuda13_plugin", "jax_cuda12_plugin"))


def _gpu_nodes(nodes, per_node):
  return [SimpleNamespace(id=n * per_node + i, process_index=n, platform="gpu",
                          device_kind="NVIDIA H100 80GB HBM3") for n in range(nodes) for i in range(per_node)]


def _tpu_slices(slices, hosts, chips):
  return [SimpleNamespace(id=(s * hosts + h) * chips + c, process_index=s * hosts + h, slice_index=s,
                          platform="tpu", device_kind="TPU v5")
          for s in range(slices) for h in range(hosts) for c in range(chips)]


def _attr(array, name):
  return np.vectorize(lambda d: getattr(d, name), otypes=[int])(array)


def _mesh(**sizes):
  return dict(dict(data=-1, fsdp=1, tensor=1), **sizes)


@pytest.mark.parametrize("sizes", [dict(data=-1), dict(data=1, fsdp=-1), dict(data=2, fsdp=2, tensor=2),
                                   dict(data=1, fsdp=4, tensor=2)])
def test_one_node_is_the_devices_in_order_as_before(sizes):
  devices = jax.devices()
  mesh = make_mesh(_mesh(**sizes), devices)
  assert (mesh.devices == np.asarray(devices).reshape(mesh.devices.shape)).all()
  assert mesh.axis_names == AXES
  # One TPU slice over 2 hosts is one node too: ICI spans its hosts, FSDP may span them.
  ids = _attr(device_array(_mesh(**sizes), _tpu_slices(1, 2, 4)), "id")
  np.testing.assert_array_equal(ids, np.arange(8).reshape(mesh.devices.shape))


def test_fsdp_stays_in_each_of_8_gpu_nodes_and_data_parallelism_crosses_them():
  devices = _gpu_nodes(8, 8)
  paper = device_array(_mesh(data=1, fsdp=-1), devices)          # the paper configs' mesh keys
  nodes = _attr(paper, "process_index")
  assert paper.shape == (8, 8, 1)
  assert all(set(nodes[i, :, 0]) == {i} for i in range(8))        # an FSDP group: one node's GPUs
  assert all(set(nodes[:, j, 0]) == set(range(8)) for j in range(8))   # a data group: every node
  tensor = _attr(device_array(_mesh(data=1, fsdp=-1, tensor=2), devices), "process_index")
  assert tensor.shape == (8, 4, 2) and all(set(tensor[i].flat) == {i} for i in range(8))
  # FSDP over all 64 GPUs, as a flat mesh had it: nodes in order, each node's GPUs in order.
  flat = device_array(_mesh(data=1, fsdp=-1, dcn_data=1, dcn_fsdp=-1), devices)
  np.testing.assert_array_equal(_attr(flat, "id"), np.arange(64).reshape(1, 64, 1))
  # FSDP over pairs of nodes, 4 pairs data-parallel.
  pairs = _attr(device_array(_mesh(data=1, fsdp=-1, dcn_data=4, dcn_fsdp=-1), devices), "process_index")
  assert pairs.shape == (4, 16, 1) and all(set(pairs[i, :, 0]) == {2 * i, 2 * i + 1} for i in range(4))


def test_tpu_slices_are_the_nodes_not_their_hosts():
  mesh = device_array(_mesh(data=1, fsdp=-1), _tpu_slices(2, 2, 4))
  assert mesh.shape == (2, 8, 1)
  assert [set(_attr(mesh[i], "slice_index").flat) for i in range(2)] == [{0}, {1}]
  assert set(_attr(mesh[0], "process_index").flat) == {0, 1}        # FSDP spans the slice's 2 hosts


def test_meshes_that_do_not_fit_the_nodes_are_refused_naming_the_keys():
  with pytest.raises(ConfigError, match=r"needs 8 devices per node \(on 2 nodes, config.mesh.data, fsdp "
                                        r"and tensor size one node of 4 devices; dcn_data and dcn_fsdp"):
    device_array(_mesh(data=2, fsdp=4), _gpu_nodes(2, 4))
  with pytest.raises(ConfigError, match=r"config.mesh=\{'dcn_data': 3, 'dcn_fsdp': -1\}: 8 nodes \(or TPU "
                                        r"slices\) do not divide by the fixed axes' product 3"):
    device_array(_mesh(dcn_data=3, dcn_fsdp=-1), _gpu_nodes(8, 2))
  with pytest.raises(ConfigError, match=r"different device counts \{0: 2, 1: 1\}.*JAX_LOCAL_DEVICE_IDS"):
    device_array(_mesh(), _gpu_nodes(2, 2)[:3])


def test_the_forms_xla_prints_device_groups_in():
  explicit = "x = f32[4] all-reduce(y), replica_groups={{0,1},{2,3}}, to_apply=add"
  assert device_groups(explicit, 4) == [[0, 1], [2, 3]]
  assert device_groups("x = f32[4] all-reduce(y), replica_groups={}, to_apply=add", 3) == [[0, 1, 2]]
  assert device_groups("replica_groups=[2,4]<=[4,2]T(1,0), dimensions={0}", 8) == [[0, 2, 4, 6], [1, 3, 5, 7]]
  # From the 8 x 8 H100 step: a mesh of the ids, listed transposed, grouped along axis_0.
  groups = device_groups("replica_groups=mesh['axis_0'=8,'axis_1'=1,'axis_2'=8], device_ids=([8,8]T(1,0)) "
                         "{'axis_0'}, use_global_device_ids=true", 64)
  assert groups == [list(range(8 * j, 8 * j + 8)) for j in range(8)]
  permute = "x = f32[4] collective-permute(y), source_target_pairs={{0,1},{1,0}}"
  assert device_groups(permute, 2) == [[0, 1], [1, 0]]
  assert device_groups("x = f32[4] add(y, z)", 2) is None
  with pytest.raises(ValueError, match="a form this reader does not know"):
    device_groups("replica_groups=<<new>>", 2)


def test_device_groups_read_from_hlo_are_the_mesh_axes():
  """A psum over each set of axes of a (2, 2, 2) mesh of permuted devices, compiled by XLA: the groups
  read from its HLO, as devices, are exactly the mesh's slices along those axes."""
  devices = np.asarray(jax.devices())[[3, 6, 0, 5, 2, 7, 1, 4]].reshape(2, 2, 2)
  mesh = jax.sharding.Mesh(devices, AXES)
  x = jnp.zeros((8, 4))
  for axes in (("data",), ("fsdp",), ("tensor",), ("data", "tensor"), ("fsdp", "tensor")):
    fn = jax.shard_map(lambda a, axes=axes: jax.lax.psum(a, axes), mesh=mesh, in_specs=P(AXES),
                       out_specs=P(AXES))
    hlo = jax.jit(fn).lower(x).compile().as_text()
    ((op, _, _, groups),) = list(collective_groups(hlo, 8))
    read = {frozenset(mesh.devices.flat[i].id for i in g) for g in groups}
    moved = [AXES.index(a) for a in axes]
    kept = [i for i in range(3) if i not in moved]
    along = np.moveaxis(devices, kept + moved, list(range(3))).reshape(-1, 2 ** len(moved))
    assert op == "all-reduce" and read == {frozenset(d.id for d in row) for row in along}, axes


def test_no_parameter_gather_of_the_train_step_crosses_a_node():
  """The tiny train step compiled for 2 nodes x 4 CPU devices: with fsdp=-1 the gathers and the
  gradient reduce-scatters stay in a node and only all-reduces cross; FSDP over both nodes
  (dcn_fsdp=-1) gathers across them, so the check would see a crossing."""
  config, _ = tiny()
  node = lambda d: d.id // 4
  config.mesh.update(data=1, fsdp=-1, tensor=1)
  mesh = make_mesh(config.mesh, jax.devices(), node_of=node)
  assert dict(mesh.shape) == {"data": 2, "fsdp": 4, "tensor": 1}
  hybrid = cross_node_counts(step_hlo(config, mesh), mesh, node)
  assert set(hybrid) == {"all-reduce"}, hybrid
  config.mesh.update(dcn_data=1, dcn_fsdp=-1)
  flat = make_mesh(config.mesh, jax.devices(), node_of=node)
  assert dict(flat.shape) == {"data": 1, "fsdp": 8, "tensor": 1}
  assert cross_node_counts(step_hlo(config, flat), flat, node).get("all-gather", 0) > 0


@pytest.mark.skipif(not HAS_CUDA_PLUGIN, reason="needs the cuda extra: pip install -e '.[cuda]'")
def test_8_nodes_of_8_h100s_gather_parameters_inside_each_node():
  config, _ = tiny()
  config.mesh.update(data=1, fsdp=-1, tensor=1)
  config.train.batch_size = 64
  report = compile_report(config, "h100:8x8")
  assert report.nodes == 8 and report.mesh == {"data": 8, "fsdp": 8, "tensor": 1}
  assert "all-gather" in report.collectives and "reduce-scatter" in report.collectives
  assert set(report.cross_node) == {"all-reduce"}, report.cross_node
