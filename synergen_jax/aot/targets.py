"""Devices to compile for without having them: TPU slices described by libtpu, GPUs described to
XLA's compile-only client (once jax's CUDA plugin is installed: the `cuda` extra), down to ptxas.

A TPU target is GEN:TOPOLOGY (`v5p:4x4x4`, `v5e:8x8`); a GPU target GPU[:HOSTSxDEVICES] (`h100`,
`h100:1x8` = one 8-GPU host, `h200:2x8`) with GPU a key of `hardware.GPU_TARGETS`. Used by
`python -m synergen_jax.aot` and `bench/gpu_compile.py`.
"""

from __future__ import annotations

import os
import re

from synergen_jax.config import ConfigError
from synergen_jax.hardware import GPU_TARGETS, tpu_hbm_bytes

_NAME = re.compile(r"^(?P<gpu>[a-z0-9]+)(?::(?P<hosts>\d+)x(?P<devices>\d+))?$")


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
