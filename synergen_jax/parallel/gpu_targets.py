"""GPU targets for compiling without a GPU: XLA's compile-only client compiles for a described GPU on
any host once jax's CUDA plugin is installed (the `cuda` extra), down to ptxas.

A target is named GPU[:HOSTSxDEVICES], e.g. `h100` (one GPU), `h100:1x8` (one 8-GPU host),
`h200:2x8`. Used by `python -m synergen_jax.aot` and `bench/gpu_compile.py`.
"""

from __future__ import annotations

import re

# GpuTargetConfigProto of the SXM parts (public specifications: SMs, shared memory per SM and per
# block, L2, HBM size and bandwidth, boost clock).
_SM90 = """gpu_device_info {{
  threads_per_block_limit: 1024 threads_per_warp: 32 shared_memory_per_block: 49152
  shared_memory_per_core: 233472 threads_per_core_limit: 2048 core_count: 132 fpus_per_core: 128
  block_dim_limit_x: 2147483647 block_dim_limit_y: 65535 block_dim_limit_z: 65535
  memory_bandwidth: {bandwidth} l2_cache_size: 52428800 clock_rate_ghz: 1.98
  device_memory_size: {memory} shared_memory_per_block_optin: 232448
  cuda_compute_capability {{ major: 9 }} registers_per_core_limit: 65536
  registers_per_block_limit: 65536
}}
platform_name: "CUDA"
dnn_version_info {{ major: 9 minor: 10 }}
runtime_version {{ major: 13 minor: 0 }}
device_description_str: "{name}"
"""
# name: (target config, HBM bytes per device)
TARGETS = {
    "h100": (_SM90.format(bandwidth=3352320000000, memory=84929347584, name="NVIDIA H100 80GB HBM3"),
             84929347584),
    "h200": (_SM90.format(bandwidth=4800000000000, memory=150754820096, name="NVIDIA H200"),
             150754820096),
}
_NAME = re.compile(r"^(?P<gpu>[a-z0-9]+)(?::(?P<hosts>\d+)x(?P<devices>\d+))?$")


def is_gpu_target(name: str) -> bool:
  match = _NAME.match(name or "")
  return bool(match) and match.group("gpu") in TARGETS


def gpu_topology(name: str):
  """(jax TopologyDescription, HBM bytes per device) of a target named GPU[:HOSTSxDEVICES]."""
  match = _NAME.match(name)
  if not match or match.group("gpu") not in TARGETS:
    raise ValueError(f"GPU target {name!r}: write GPU[:HOSTSxDEVICES] with GPU in {sorted(TARGETS)}, "
                     "e.g. h100 or h100:1x8")
  hosts, devices = int(match.group("hosts") or 1), int(match.group("devices") or 1)
  config, hbm = TARGETS[match.group("gpu")]
  from jax.experimental import topologies
  try:
    topology = topologies.get_topology_desc(platform="cuda", target_config=config,
                                            topology=f"1x{hosts}x{devices}")
  except Exception as e:   # no CUDA plugin
    raise ValueError(f"GPU target {name!r}: cannot describe it ({type(e).__name__}: {e}); install "
                     "the cuda extra (pip install -e '.[cuda]', best in its own venv)") from None
  return topology, hbm
