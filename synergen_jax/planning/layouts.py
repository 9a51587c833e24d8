"""A layout: how one config runs on one target (mesh, remat policy, gradient accumulation, attention
kernel, unfold chunk), the candidates the planner weighs, and the config a layout compiles as.

Mesh: data x fsdp x tensor inside a slice or host (ICI / NVLink); on several GPU hosts, `dcn_data`
replicates across hosts (hybrid FSDP: parameters sharded inside a node, data parallel across), the
other GPU layouts shard over every GPU (FSDP across InfiniBand). Parameters and optimizer state are
sharded over fsdp x tensor and replicated over data and dcn_data.
"""

from __future__ import annotations

import dataclasses
import itertools

from synergen_jax.planning.targets import Target

TPU_ATTENTION = ("pallas_tpu", "xla")
GPU_ATTENTION = ("pallas_mgpu", "cudnn", "xla")
# Remat policies the planner searches. Not "none": the memory model is far under the compiles
# without remat (memory.ERROR_BOUND); a config that asks for it is still planned, as its own layout.
REMAT = ("full", "save_attention_out", "dots")
UNFOLD_CHUNKS = (128, 256, 512)


@dataclasses.dataclass(frozen=True)
class Layout:
  data: int               # data, fsdp, tensor: devices of one node (a TPU slice, a GPU host)
  fsdp: int
  tensor: int
  dcn_data: int = 1       # nodes the data axis spans (GPU hosts; one TPU slice is one node)
  dcn_fsdp: int = 1       # nodes the fsdp axis spans (its gathers cross InfiniBand)
  grad_accum: int = 1
  remat: str = "full"
  attention: str = "pallas_tpu"
  unfold_chunk: int = 256

  @property
  def replicas(self) -> int:      # ways the batch's rows are split
    return self.data * self.fsdp * self.dcn_data * self.dcn_fsdp

  @property
  def shards(self) -> int:        # ways the parameters are split
    return self.fsdp * self.dcn_fsdp * self.tensor

  def mesh_text(self) -> str:
    return (f"data={self.data},fsdp={self.fsdp},tensor={self.tensor},dcn_data={self.dcn_data},"
            f"dcn_fsdp={self.dcn_fsdp}")

  def describe(self) -> str:
    mesh = f"{self.data}x{self.fsdp}x{self.tensor}"
    if self.dcn_data * self.dcn_fsdp > 1:
      mesh += f" x nodes {self.dcn_data}x{self.dcn_fsdp}"
    return f"{mesh} {self.remat} accum {self.grad_accum} {self.attention} chunk {self.unfold_chunk}"


def _meshes(target: Target) -> list[tuple[int, int, int, int, int]]:
  """(data, fsdp, tensor, dcn_data, dcn_fsdp) covering the target's chips."""
  if target.platform == "gpu":
    node, nodes = target.chips_per_host, target.hosts
  else:
    node, nodes = target.chips, 1                   # one slice: ICI spans all its chips
  inner = {(1, node, 1)}                            # FSDP over the node
  for t in (2, 4, 8):                               # tensor parallel (inside a host on GPUs)
    if t <= target.chips_per_host and node % t == 0 and t < node:
      inner.add((1, node // t, t))
  for d in (2, 4, 8):                               # some data parallelism inside the node
    if node % d == 0 and d < node:
      inner.add((d, node // d, 1))
  inner.add((node, 1, 1))                           # pure data parallelism
  outer = {(nodes, 1)} | ({(1, nodes)} if nodes > 1 else set())   # hybrid, or FSDP across nodes
  return sorted((d, f, t, dd, df) for d, f, t in inner for dd, df in outer if not (f == 1 and df > 1))


def candidates(target: Target, batch_size: int, configured: Layout | None = None) -> list[Layout]:
  """Every layout the planner weighs on `target` for a global batch of `batch_size` rows: the rows
  split evenly over the replicas and the accumulation steps."""
  attention = TPU_ATTENTION if target.platform == "tpu" else GPU_ATTENTION
  out = []
  for mesh, remat, accum, attn, chunk in itertools.product(
      _meshes(target), REMAT, (1, 2, 4, 8, 16), attention, UNFOLD_CHUNKS):
    layout = Layout(*mesh, grad_accum=accum, remat=remat, attention=attn, unfold_chunk=chunk)
    if batch_size % (layout.replicas * accum) == 0:
      out.append(layout)
  if configured is not None and configured not in out:
    out.append(configured)
  return out


def _resolve(sizes: dict, total: int) -> dict:
  fixed = 1
  for v in sizes.values():
    fixed *= v if v > 0 else 1
  return {k: (max(1, total // fixed) if v <= 0 else v) for k, v in sizes.items()}


def configured_layout(config, target: Target, attention: str) -> Layout:
  """The layout the config itself asks for on `target`: its mesh with -1 resolved as
  parallel/mesh.py resolves it (per node on several GPU hosts), its remat, accumulation, chunk."""
  mesh = {k: int(config.mesh.get(k, d)) for k, d in (("data", -1), ("fsdp", 1), ("tensor", 1),
                                                     ("dcn_data", -1), ("dcn_fsdp", 1))}
  gpu_nodes = target.platform == "gpu" and target.hosts > 1
  node = target.chips_per_host if gpu_nodes else target.chips
  inner = _resolve({k: mesh[k] for k in ("data", "fsdp", "tensor")}, node)
  outer = (_resolve({k: mesh[k] for k in ("dcn_data", "dcn_fsdp")}, target.hosts) if gpu_nodes
           else {"dcn_data": 1, "dcn_fsdp": 1})
  return Layout(**inner, **outer, grad_accum=int(config.train.grad_accum),
                remat=config.model.remat_policy, attention=attention,
                unfold_chunk=int(config.model.unfold_chunk))


def apply(config, layout: Layout) -> None:
  """Writes `layout` into `config` (unlocked by the caller): what --verify compiles."""
  config.mesh.update(data=layout.data, fsdp=layout.fsdp, tensor=layout.tensor,
                     dcn_data=layout.dcn_data, dcn_fsdp=layout.dcn_fsdp)
  config.train.grad_accum = layout.grad_accum
  config.model.update(remat_policy=layout.remat, attention_impl=layout.attention,
                      unfold_chunk=layout.unfold_chunk)
