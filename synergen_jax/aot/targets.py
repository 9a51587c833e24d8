"""Devices to compile for without having them: TPU slices described by libtpu, GPUs described to
XLA's compile-only client (once jax's CUDA plugin is installed: the `cuda` extra), down to ptxas.

A TPU target is GEN:TOPOLOGY (`v5p:4x4x4`, `v5e:8x8`); a GPU target GPU[:HOSTSxDEVICES] (`h100`,
`h100:1x8` = one 8-GPU host, `h200:2x8`) with GPU a key of `hardware.GPU_TARGETS`. Used by
`python -m synergen_jax.aot` and `bench/gpu_compile.py`.
"""

from __future__ import annotations

import os
import re

from synergen_jax.core.errors import ConfigError
from synergen_jax.core.hardware import GPU_TARGETS, tpu_hbm_bytes

_NAME = re.compile(r"^(?P<gpu>[a-z0-9]+)(?::(?P<hosts>\d+)x(?P<devices>\d+))?$")


# gcloud's accelerator types (launch/tpu_pod.sh's ACCELERATOR_TYPE) and the chip grid each names by
# default: v4-N and v5p-N count TensorCores (2 per chip), v5litepod-N and v6e-N count chips.
_GRID_3D = {4: "2x2x1", 8: "2x2x2", 16: "2x2x4", 32: "2x4x4", 64: "4x4x4", 128: "4x4x8", 256: "4x8x8",
            512: "8x8x8", 1024: "8x8x16", 2048: "8x16x16", 4096: "16x16x16"}
_GRID_2D = {4: "2x2", 8: "2x4", 16: "4x4", 32: "4x8", 64: "8x8", 128: "8x16", 256: "16x16"}
_ACCELERATOR = re.compile(r"^(?P<gen>v4|v5p|v5litepod|v6e)-(?P<n>\d+)$")


def tpu_topology_of(accelerator_type: str) -> str:
  """GEN:TOPOLOGY of a gcloud accelerator type: v5p-128 -> v5p:4x4x4, v5litepod-64 -> v5e:8x8."""
  m = _ACCELERATOR.match(accelerator_type)
  if not m:
    raise ConfigError(f"--accelerator_type={accelerator_type!r}: expected v4-N, v5p-N, v5litepod-N or "
                      "v6e-N (gcloud's names), or pass --topology GEN:TOPOLOGY")
  gen, n = m.group("gen"), int(m.group("n"))
  chips, grids = (n // 2, _GRID_3D) if gen in ("v4", "v5p") else (n, _GRID_2D)
  if chips not in grids or (gen in ("v4", "v5p") and n % 2):
    raise ConfigError(f"--accelerator_type={accelerator_type}: no default chip grid for {chips} chips; "
                      f"pass --topology {'v5e' if gen == 'v5litepod' else gen}:<grid> as the slice has it")
  return f"{'v5e' if gen == 'v5litepod' else gen}:{grids[chips]}"


def is_gpu_target(name: str) -> bool:
  match = _NAME.match(name or "")
  return bool(match) and match.group("gpu") in GPU_TARGETS


def gpu_topology(name: str):
  """(jax TopologyDescription, HBM bytes per device) of a target named GPU[:HOSTSxDEVICES]."""
  match = _NAME.match(name)
  if not match or match.group("gpu") not in GPU_TARGETS:
    raise ValueError(f"GPU target {name!r}: write GPU[:HOSTSxDEVICES] with GPU in {sorted(GPU_TARGETS)}, "
                     "e.g. h100 or h100:1x8")
  hosts, devices = int(match.group("hosts") or 1), int(match.group("devices") or 1)
  config, hbm = GPU_TARGETS[match.group("gpu")]
  from jax.experimental import topologies
  try:
    topology = topologies.get_topology_desc(platform="cuda", target_config=config,
                                            topology=f"1x{hosts}x{devices}")
  except Exception as e:   # no CUDA plugin
    raise ValueError(f"GPU target {name!r}: cannot describe it ({type(e).__name__}: {e}); install "
                     "the cuda extra (pip install -e '.[cuda]', best in its own venv)") from None
  return topology, hbm


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
    devices = topologies.get_topology_desc(topology, "tpu").devices
  except Exception as e:   # no libtpu, or a name libtpu does not know
    raise ConfigError(f"--topology={topology!r}: cannot describe it ({type(e).__name__}: {e}). Install "
                      "the tpu extra (pip install -e '.[tpu]') and name a slice as GEN:TOPOLOGY, "
                      "e.g. v5p:2x2x1, v4:2x2x2, v5e:4x4, or a GPU target such as h100:1x8 (cuda "
                      "extra)") from None
  return devices, tpu_hbm_bytes(devices[0].device_kind)
