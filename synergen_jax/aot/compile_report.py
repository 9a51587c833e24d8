"""The trainer's step compiled ahead of time for a TPU slice or GPU hosts (aot/targets.py): memory
per device, whether it fits, model and XLA FLOPs, its collectives and, on several GPU hosts or TPU
slices, which of them cross nodes (aot/hlo_groups.py). The CLI is aot/__main__.py.
"""

from __future__ import annotations

import dataclasses
import math
import re
import time

import flax.linen as nn
import jax
import numpy as np

from synergen_jax.aot.hlo_groups import COLLECTIVE, OP_NAME, SHAPE, SINGLETON_GROUPS, crossing_nodes
from synergen_jax.aot.targets import topology_devices
from synergen_jax.core.config import CAPACITIES, validate_config
from synergen_jax.core.errors import ConfigError
from synergen_jax.data.synthetic import synthetic_batch, with_synthetic_budgets
from synergen_jax.kernels.attention import auto_impl
from synergen_jax.model import accounting
from synergen_jax.parallel.mesh import AXES, DCN_KEYS, make_mesh, node_of, nodes
from synergen_jax.parallel.sharding import LOGICAL_RULES, batch_sharding
from synergen_jax.train.state import build_train_step

def collectives(hlo_text: str) -> list[tuple[str, tuple[int, ...], str]]:
  """(op, result shape, the JAX op it came from) of every collective in a compiled module's HLO
  text (one entry per array of a tuple result). Collectives over one-device groups (a size-1 mesh
  axis) move nothing and are left out."""
  out = []
  for line in hlo_text.splitlines():
    match = COLLECTIVE.search(line)
    if match and not SINGLETON_GROUPS.search(line):
      name = OP_NAME.search(line)
      for dims in SHAPE.findall(match.group(1)):
        out.append((match.group(2), tuple(int(d) for d in dims.split(",") if d),
                    name.group(1) if name else ""))
  return out


# The TPU compiler refuses a program that cannot fit; its message carries the sizes.
OOM_MESSAGE = re.compile(r"HLO temporaries \(([\d.]+)G\) exceeds available HBM \(([\d.]+)G\)")


@dataclasses.dataclass
class Report:
  topology: str
  device_kind: str
  devices: int
  mesh: dict
  params_bytes: int           # per device
  optimizer_bytes: int        # per device
  batch_bytes: int            # per device
  temp_bytes: int             # per device: XLA temporaries
  total_bytes: int            # per device: arguments + outputs - donated + temporaries
  hbm_bytes: int
  model_flops: float          # per step, whole slice
  xla_flops: float            # per device, XLA's count
  compile_seconds: float
  budgets: dict = dataclasses.field(default_factory=dict)       # the per-row budgets compiled
  collectives: dict = dataclasses.field(default_factory=dict)   # op -> [count, elements per device]
  nodes: int = 1              # GPU hosts (processes) or TPU slices the devices span
  cross_node: dict = dataclasses.field(default_factory=dict)    # op -> collectives spanning nodes

  @property
  def fits(self) -> bool:
    return self.total_bytes <= self.hbm_bytes


def is_tpu(device) -> bool:
  return "tpu" in device.platform.lower() or device.device_kind.startswith("TPU")


def _per_device_bytes(abstract, shardings) -> int:
  total = 0
  for a, s in zip(jax.tree.leaves(abstract), jax.tree.leaves(shardings)):
    total += math.prod(s.shard_shape(a.shape)) * np.dtype(a.dtype).itemsize
  return total


def parse_mesh(text: str | None, config) -> None:
  if not text:
    return
  for item in text.split(","):
    axis, _, size = item.partition("=")
    if axis not in AXES + DCN_KEYS or not size.lstrip("-").isdigit():
      raise ConfigError(f"--mesh item {item!r}: write AXIS=SIZE with AXIS in {AXES + DCN_KEYS}, e.g. "
                        "--mesh data=1,fsdp=-1,tensor=1")
    config.mesh[axis] = int(size)


def for_target(config, devices):
  """The config as it would run on `devices` (no prepared data at hand): attention "auto" resolved
  for their platform, not this host's, three new-token ids (only their count shapes the
  parameters) where the config leaves them to the prepared tokenizer, and the per-row budgets it
  leaves None derived from the synthetic generation/captioning mix (data/synthetic.py) as the
  trainer derives them from prepared data. Returns the ModelConfig."""
  mc = validate_config(config)
  resolved = with_synthetic_budgets(mc, config.data.seq_len)
  with config.unlocked():
    for name in CAPACITIES:
      config.model[name] = getattr(resolved, name)
    if config.model.attention_impl == "auto":
      config.model.attention_impl = auto_impl("tpu" if is_tpu(devices[0]) else "gpu")
    if not config.model.new_tokens:
      config.model.new_tokens = tuple(range(mc.text_vocab - 3, mc.text_vocab))
  return validate_config(config)


def _lower(config, mc, mesh):
  """(plan, batch sharding, lowered step) with abstract state and batch; under jax.set_mesh(mesh)
  and the logical axis rules."""
  plan = build_train_step(config, mc, mesh, host_example=True)
  rows_sharding = batch_sharding(mesh)
  state = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                       plan.abstract_state, plan.shardings)
  batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=rows_sharding)
           for k, v in plan.example.items()}
  return plan, rows_sharding, plan.step_fn.lower(state, batch)


def step_hlo(config, mesh) -> str:
  """The HLO text of the trainer's step compiled for `mesh` (this host's devices or a target's)."""
  mc = for_target(config, list(mesh.devices.flat))
  with jax.set_mesh(mesh), nn.logical_axis_rules(LOGICAL_RULES):
    return _lower(config, mc, mesh)[2].compile().as_text()


def cross_node_counts(hlo_text: str, mesh, node_of=node_of) -> dict[str, int]:
  """op -> how many of the program's collectives span devices of more than one node."""
  counts: dict[str, int] = {}
  for op, _, _ in crossing_nodes(hlo_text, [node_of(d) for d in mesh.devices.flat]):
    counts[op] = counts.get(op, 0) + 1
  return counts


def compile_report(config, topology: str, hbm_gb: float | None = None,
                   hlo_path: str | None = None) -> Report:
  validate_config(config)                         # config errors before any compilation
  devices, target_hbm = topology_devices(topology)
  mc = for_target(config, devices)
  mesh = make_mesh(config.mesh, devices)
  node_count = len(nodes(devices))
  rows = mesh.shape["data"] * mesh.shape["fsdp"]
  if config.train.batch_size % rows:
    raise ConfigError(f"config.train.batch_size={config.train.batch_size} does not split over data x "
                      f"fsdp = {rows} devices of {topology}; use a multiple of {rows}")
  kind = devices[0].device_kind
  hbm = int(hbm_gb * 2**30) if hbm_gb else target_hbm
  if not hbm:
    raise ConfigError(f"unknown HBM size for {kind!r}; pass --hbm_gb")
  with jax.set_mesh(mesh), nn.logical_axis_rules(LOGICAL_RULES):
    plan, rows_sharding, lowered = _lower(config, mc, mesh)
    t0 = time.perf_counter()
    try:
      compiled = lowered.compile()
    except jax.errors.JaxRuntimeError as e:
      oom = OOM_MESSAGE.search(str(e))
      if not oom:
        raise
      compiled = None
    seconds = time.perf_counter() - t0
  host_batch = synthetic_batch(mc, config.train.batch_size, config.data.seq_len)
  params = _per_device_bytes(plan.abstract_state["params"], plan.shardings["params"])
  optimizer = _per_device_bytes(plan.abstract_state["opt_state"], plan.shardings["opt_state"])
  batch_bytes = sum(math.prod(rows_sharding.shard_shape(v.shape)) * np.dtype(v.dtype).itemsize
                    for v in plan.example.values())
  if compiled is None:   # the compiler's own verdict: temporaries alone exceed the chip
    temp, xla_flops = int(float(oom.group(1)) * 2**30), 0.0
    total = params + optimizer + batch_bytes + temp
    hbm = min(hbm, int(float(oom.group(2)) * 2**30))
  else:
    hlo = compiled.as_text()
    if hlo_path:
      with open(hlo_path, "w") as f:
        f.write(hlo)
    found = collectives(hlo)
    crossing = cross_node_counts(hlo, mesh) if node_count > 1 else {}
    moved = {}
    for op, shape, _ in found:
      count, size = moved.get(op, (0, 0))
      moved[op] = (count + 1, size + math.prod(shape))
    memory = compiled.memory_analysis()
    cost = compiled.cost_analysis()
    cost = (cost[0] if isinstance(cost, (list, tuple)) else cost) or {}   # None from GPU AOT
    temp, xla_flops = memory.temp_size_in_bytes, float(cost.get("flops", 0.0))
    total = (memory.argument_size_in_bytes + memory.output_size_in_bytes
             - memory.alias_size_in_bytes + temp)
  return Report(topology=topology, device_kind=kind, devices=len(devices), mesh=dict(mesh.shape),
                params_bytes=params, optimizer_bytes=optimizer, batch_bytes=batch_bytes,
                temp_bytes=temp, total_bytes=total, hbm_bytes=hbm,
                model_flops=float(accounting.batch_train_flops(mc, host_batch)),
                xla_flops=xla_flops, compile_seconds=seconds,
                budgets={name: getattr(mc, name) for name in CAPACITIES},
                collectives={} if compiled is None else {op: list(v) for op, v in moved.items()},
                nodes=node_count, cross_node={} if compiled is None else crossing)


def format_report(r: Report) -> str:
  gib = lambda b: f"{b / 2**30:.2f} GiB" if b >= 2**28 else f"{b / 2**20:.1f} MiB"
  return "\n".join([
      f"aot: {r.topology} ({r.devices} x {r.device_kind}), mesh {r.mesh}, compiled in "
      f"{r.compile_seconds:.0f} s",
      f"  per device: parameters {gib(r.params_bytes)}, optimizer {gib(r.optimizer_bytes)}, batch "
      f"{gib(r.batch_bytes)}, XLA temporaries {gib(r.temp_bytes)}",
      f"  per device total {gib(r.total_bytes)} of {gib(r.hbm_bytes)} HBM: "
      + ("fits" if r.fits else "DOES NOT FIT"),
      f"  model FLOPs per step {r.model_flops:.3e} (slice), XLA FLOPs per device "
      + (f"{r.xla_flops:.3e}" if r.xla_flops else "n/a (this compiler does not count them)")
      + (f" = {r.xla_flops * r.devices / r.model_flops:.2f}x model FLOPs" if r.xla_flops else ""),
      "  per-row budgets: " + ", ".join(f"{k}={v}" for k, v in r.budgets.items()),
      "  collectives: " + (", ".join(f"{op} x{n} ({e / 1e6:.1f}M elements)"
                                     for op, (n, e) in sorted(r.collectives.items())) or "none")]
      + _cross_node_lines(r))


def _cross_node_lines(r: Report) -> list[str]:
  """On several nodes: the collective instructions whose device groups span nodes (the slow links)."""
  if r.nodes == 1 or not r.collectives:        # one node, or the compiler refused the program
    return []
  crossing = ", ".join(f"{op} x{n}" for op, n in sorted(r.cross_node.items())) or "none"
  return [f"  across the {r.nodes} nodes: {crossing} (instructions; the others stay inside a node)"]
