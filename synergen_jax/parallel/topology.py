"""The trainer's step compiled ahead of time for a TPU topology described by libtpu, or for GPUs
described to XLA's compile-only GPU client (parallel/gpu_targets.py): memory and FLOPs.

The CLI and its output: synergen_jax/aot.py.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re

import flax.linen as nn
import jax
import numpy as np

from synergen_jax.config import ConfigError, validate_config
from synergen_jax.data.synthetic import synthetic_batch
from synergen_jax.kernels.attention import auto_impl
from synergen_jax.model import accounting
from synergen_jax.parallel.gpu_targets import gpu_topology, is_gpu_target
from synergen_jax.parallel.mesh import AXES, make_mesh
from synergen_jax.parallel.sharding import LOGICAL_RULES
from synergen_jax.train.loop import build_train_step

# HBM per device (GiB) by device_kind (Cloud TPU system-architecture pages). libtpu describes a v4
# chip as two devices (one per TensorCore), so a v4 device has half the chip's 32 GiB.
HBM_GIB = {"TPU v4": 16, "TPU v5 lite": 16, "TPU v5e": 16, "TPU v5": 95, "TPU v5p": 95,
           "TPU v6 lite": 32, "TPU v6e": 32}
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

  @property
  def fits(self) -> bool:
    return self.total_bytes <= self.hbm_bytes


def topology_devices(topology: str):
  """(devices, HBM bytes per device or None) of a TPU slice (v5p:4x4x4) or a GPU target (h100:1x8)."""
  if is_gpu_target(topology):
    try:
      description, hbm = gpu_topology(topology)
    except ValueError as e:
      raise ConfigError(f"--topology={topology!r}: {e}") from None
    return description.devices, hbm
  # libtpu takes a machine-wide lock meant for real chips; compiling needs none, and without this a
  # second AOT process on the same host (a test, a sweep) is refused.
  os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
  try:
    from jax.experimental import topologies
    return topologies.get_topology_desc(topology, "tpu").devices, None
  except Exception as e:   # no libtpu, or a name libtpu does not know
    raise ConfigError(f"--topology={topology!r}: cannot describe it ({type(e).__name__}: {e}). Install "
                      "the tpu extra (pip install -e '.[tpu]') and name a slice as GEN:TOPOLOGY, "
                      "e.g. v5p:2x2x1, v4:2x2x2, v5e:4x4, or a GPU target such as h100:1x8 (cuda "
                      "extra)") from None


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
    if axis not in AXES or not size.lstrip("-").isdigit():
      raise ConfigError(f"--mesh item {item!r}: write AXIS=SIZE with AXIS in {AXES}, e.g. "
                        "--mesh data=1,fsdp=-1,tensor=1")
    config.mesh[axis] = int(size)


def compile_report(config, topology: str, hbm_gb: float | None = None) -> Report:
  import time
  mc = validate_config(config)                    # config errors before any compilation
  devices, target_hbm = topology_devices(topology)
  if config.model.attention_impl == "auto":       # "auto" means the target's choice, not this host's
    with config.unlocked():
      config.model.attention_impl = auto_impl("tpu" if is_tpu(devices[0]) else "gpu")
  if not config.model.new_tokens:                 # only their count shapes the parameters
    with config.unlocked():
      config.model.new_tokens = tuple(range(mc.text_vocab - 3, mc.text_vocab))
  mc = validate_config(config)
  mesh = make_mesh(config.mesh, devices)
  rows = mesh.shape["data"] * mesh.shape["fsdp"]
  if config.train.batch_size % rows:
    raise ConfigError(f"config.train.batch_size={config.train.batch_size} does not split over data x "
                      f"fsdp = {rows} devices of {topology}; use a multiple of {rows}")
  kind = devices[0].device_kind
  hbm = int(hbm_gb * 2**30) if hbm_gb else target_hbm or int(HBM_GIB.get(kind, 0) * 2**30)
  if not hbm:
    raise ConfigError(f"unknown HBM size for {kind!r}; pass --hbm_gb")
  with jax.set_mesh(mesh), nn.logical_axis_rules(LOGICAL_RULES):
    plan = build_train_step(config, mc, mesh, host_example=True)
    batch_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(("data", "fsdp")))
    state = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                         plan.abstract_state, plan.shardings)
    batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=batch_sharding)
             for k, v in plan.example.items()}
    lowered = plan.step_fn.lower(state, batch)
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
  batch_bytes = sum(math.prod(batch_sharding.shard_shape(v.shape)) * np.dtype(v.dtype).itemsize
                    for v in plan.example.values())
  if compiled is None:   # the compiler's own verdict: temporaries alone exceed the chip
    temp, xla_flops = int(float(oom.group(1)) * 2**30), 0.0
    total = params + optimizer + batch_bytes + temp
    hbm = min(hbm, int(float(oom.group(2)) * 2**30))
  else:
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
                xla_flops=xla_flops, compile_seconds=seconds)


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
      + (f"{r.xla_flops:.3e}" if r.xla_flops else "n/a (this compiler does not count them)")])
