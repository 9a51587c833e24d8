"""What the planner plans for: a named slice or cluster, its chips, their memory, peak FLOP/s and
links (core/hardware.py), and the name `python -m synergen_jax.aot` compiles it under (--verify).

Names: gcloud accelerator types (v5p-128 = 64 chips, v5litepod-256 or v5e-256 = 256 chips, v6e-64,
v4-32), a TPU GEN:TOPOLOGY (v5p:4x4x4), or GPU hosts GPU[:HOSTSxDEVICES] (h100:8x8 = 8 hosts of 8).
"""

from __future__ import annotations

import dataclasses
import math
import re

from synergen_jax.core import hardware
from synergen_jax.core.errors import ConfigError

# generation -> (device kind as libtpu names it, chips per host, counts TensorCores in gcloud names)
TPU_GENERATIONS = {"v4": ("TPU v4", 4, True), "v5p": ("TPU v5", 4, True),
                   "v5e": ("TPU v5 lite", 4, False), "v6e": ("TPU v6 lite", 4, False)}
_GCLOUD = re.compile(r"^(?P<gen>v4|v5p|v5e|v5litepod|v6e)-(?P<n>\d+)$")
_TOPOLOGY = re.compile(r"^(?P<gen>v4|v5p|v5e|v6e):(?P<grid>\d+(?:x\d+){1,2})$")
_GPU = re.compile(r"^(?P<gpu>[a-z0-9]+)(?::(?P<hosts>\d+)x(?P<devices>\d+))?$")
KNOWN = ("v5p-N (gcloud: N TensorCores = N/2 chips), v5litepod-N or v5e-N (N chips), v6e-N, v4-N, "
         "GEN:TOPOLOGY (v5p:4x4x4, v5e:16x16), " + ", ".join(
             f"{g}[:HOSTSxGPUS]" for g in sorted(hardware.GPU_TARGETS)) + " (h100:8x8 = 8 hosts of 8)")


@dataclasses.dataclass(frozen=True)
class Target:
  name: str               # as given
  platform: str           # tpu | gpu
  family: str             # v5p, v5e, v6e, v4, h100, h200: the key of prices and efficiency ceilings
  device_kind: str
  chips: int
  chips_per_host: int     # the fast domain: a TPU VM host (ICI spans the slice anyway) or a GPU node
  hbm_bytes: int
  peak_flops: float
  hbm_bandwidth: float
  intra_bandwidth: float  # ICI / NVLink, bytes/s per device and direction
  inter_bandwidth: float  # DCN / InfiniBand
  aot_topology: str       # what `python -m synergen_jax.aot --topology` takes

  @property
  def hosts(self) -> int:
    return max(1, self.chips // self.chips_per_host)


def _tpu(name: str, gen: str, chips: int, grid: str) -> Target:
  kind, per_host, _ = TPU_GENERATIONS[gen]
  intra, inter = hardware.link_bandwidths(kind)
  return Target(name=name, platform="tpu", family=gen, device_kind=kind, chips=chips,
                chips_per_host=min(per_host, chips), hbm_bytes=hardware.tpu_hbm_bytes(kind) or 0,
                peak_flops=hardware.peak_flops(kind), hbm_bandwidth=hardware.hbm_bandwidth(kind),
                intra_bandwidth=intra, inter_bandwidth=inter, aot_topology=f"{gen}:{grid}")


def parse_target(name: str) -> Target:
  """A Target from its name; an unknown name is a ConfigError that lists the known forms."""
  text = name.strip().lower()
  if m := _GCLOUD.match(text):
    gen = "v5e" if m.group("gen") == "v5litepod" else m.group("gen")
    n = int(m.group("n"))
    chips = n // 2 if TPU_GENERATIONS[gen][2] else n
    from synergen_jax.aot.targets import tpu_topology_of
    gcloud = f"{'v5litepod' if gen == 'v5e' else gen}-{n}"
    try:
      grid = tpu_topology_of(gcloud).split(":")[1]
    except ConfigError:
      raise ConfigError(f"--targets: {name!r} has no default chip grid; known targets: {KNOWN}") from None
    return _tpu(name, gen, chips, grid)
  if m := _TOPOLOGY.match(text):
    return _tpu(name, m.group("gen"), math.prod(int(x) for x in m.group("grid").split("x")),
                m.group("grid"))
  m = _GPU.match(text)
  if m and m.group("gpu") in hardware.GPU_TARGETS:
    hosts, per_host = int(m.group("hosts") or 1), int(m.group("devices") or 1)
    _, hbm = hardware.GPU_TARGETS[m.group("gpu")]
    kind = m.group("gpu").upper()
    intra, inter = hardware.link_bandwidths(kind)
    return Target(name=name, platform="gpu", family=m.group("gpu"), device_kind=kind,
                  chips=hosts * per_host, chips_per_host=per_host, hbm_bytes=hbm,
                  peak_flops=hardware.peak_flops(kind), hbm_bandwidth=hardware.hbm_bandwidth(kind),
                  intra_bandwidth=intra, inter_bandwidth=inter, aot_topology=f"{m.group('gpu')}:{hosts}x{per_host}")
  raise ConfigError(f"--targets: unknown target {name!r}; known targets: {KNOWN}")


def parse_targets(text: str) -> list[Target]:
  names = [t for t in (text or "").split(",") if t.strip()]
  if not names:
    raise ConfigError(f"--targets is empty; name one or more of: {KNOWN}")
  return [parse_target(t) for t in names]
