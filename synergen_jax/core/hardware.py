"""Facts about accelerators, in one table: peak FLOP/s (MFU), memory per device (AOT fit checks)
and the GPU descriptions XLA's compile-only client compiles for.

Peak numbers are dense bf16 TFLOP/s per chip from the vendors' specifications; MFU is model FLOPs
per second over them (README, "Performance accounting"). A device kind matches the longest name it
contains, so "TPU v5 lite" is not read as "TPU v5".
"""

from __future__ import annotations

PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "TPU v4": 275.0, "TPU v5 lite": 197.0,
               "TPU v5e": 197.0, "TPU v5p": 459.0, "TPU v5": 459.0, "TPU v6 lite": 918.0,
               "TPU v6e": 918.0}

# HBM per device (GiB) by TPU device_kind (Cloud TPU system-architecture pages). libtpu describes a
# v4 chip as two devices (one per TensorCore), so a v4 device has half the chip's 32 GiB. GPUs carry
# their memory in the target description below.
TPU_HBM_GIB = {"TPU v4": 16, "TPU v5 lite": 16, "TPU v5e": 16, "TPU v5": 95, "TPU v5p": 95,
               "TPU v6 lite": 32, "TPU v6e": 32}

# GpuTargetConfigProto of the SXM parts (public specifications: SMs, shared memory per SM and per
# block, L2, HBM size and bandwidth, boost clock): what `aot --topology h100:1x8` and
# bench/gpu_compile.py compile for without a GPU.
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
GPU_TARGETS = {
    "h100": (_SM90.format(bandwidth=3352320000000, memory=84929347584, name="NVIDIA H100 80GB HBM3"),
             84929347584),
    "h200": (_SM90.format(bandwidth=4800000000000, memory=150754820096, name="NVIDIA H200"),
             150754820096),
}


def _lookup(table: dict, device_kind: str):
  for name, value in sorted(table.items(), key=lambda kv: -len(kv[0])):
    if name.lower() in device_kind.lower():
      return value
  return None


def peak_flops(device_kind: str) -> float | None:
  """Dense bf16 FLOP/s of one device of this kind; None (CPU, unknown) makes MFU null."""
  tflops = _lookup(PEAK_TFLOPS, device_kind)
  return None if tflops is None else tflops * 1e12


def tpu_hbm_bytes(device_kind: str) -> int | None:
  gib = TPU_HBM_GIB.get(device_kind)
  return None if gib is None else int(gib * 2**30)


# ---------------------------------------------------------------------------------------------------
# Bandwidths for the planner's roofline (synergen_jax/planning). GB/s = 1e9 bytes per second, per
# device, one direction. Each figure names where it was published; the vendor pages are the 2023-24
# editions (not re-checked since; a device check's measurement overrides the planner's use of them).
# ---------------------------------------------------------------------------------------------------

# HBM bandwidth per device.
HBM_GBPS = {
    "TPU v4": 1200.0,        # cloud.google.com/tpu/docs/v4 (1,200 GB/s per chip), 2023
    "TPU v5 lite": 819.0,    # cloud.google.com/tpu/docs/v5e (819 GB/s), 2023
    "TPU v5e": 819.0,
    "TPU v5": 2765.0,        # cloud.google.com/tpu/docs/v5p (2,765 GB/s), 2023
    "TPU v5p": 2765.0,
    "TPU v6 lite": 1640.0,   # cloud.google.com/tpu/docs/v6e (1,640 GB/s), 2024
    "TPU v6e": 1640.0,
    "H100": 3350.0,          # NVIDIA H100 Tensor Core GPU datasheet, SXM5 (3.35 TB/s), 2023
    "H200": 4800.0,          # NVIDIA H200 Tensor Core GPU datasheet, SXM (4.8 TB/s), 2024
}

# Links inside a slice or host: TPU ICI and NVLink, per device and direction. Cloud TPU pages give
# ICI per chip in Gbps over all its links, both directions: / 8 bits / 2 directions.
INTRA_GBPS = {
    "TPU v4": 2400 / 16,     # cloud.google.com/tpu/docs/v4: ICI 2,400 Gbps per chip, 2023
    "TPU v5 lite": 1600 / 16,  # cloud.google.com/tpu/docs/v5e: ICI 1,600 Gbps per chip, 2023
    "TPU v5e": 1600 / 16,
    "TPU v5": 4800 / 16,     # cloud.google.com/tpu/docs/v5p: ICI 4,800 Gbps per chip, 2023
    "TPU v5p": 4800 / 16,
    "TPU v6 lite": 3584 / 16,  # cloud.google.com/tpu/docs/v6e: ICI 3,584 Gbps per chip, 2024
    "TPU v6e": 3584 / 16,
    "H100": 450.0,           # NVLink 4: 900 GB/s per GPU both directions (H100 datasheet, 2023)
    "H200": 450.0,           # NVLink 4, 900 GB/s (H200 datasheet, 2024)
}

# Links between hosts (GPU) or slices (TPU, DCN), per device and direction.
INTER_GBPS = {
    # Cloud TPU VM network: 200 Gbps per v5p / v6e host of 4 chips, 100 Gbps per 4-chip v5e / v4
    # host (Compute Engine machine-type tables ct5p, ct6e, ct5lp, ct4p; 2024): / 8 / 4 chips.
    "TPU v4": 100 / 32, "TPU v5 lite": 100 / 32, "TPU v5e": 100 / 32,
    "TPU v5": 200 / 32, "TPU v5p": 200 / 32, "TPU v6 lite": 200 / 32, "TPU v6e": 200 / 32,
    # InfiniBand NDR: one 400 Gb/s ConnectX-7 port per GPU (DGX H100 / H200 datasheets, 2023-24).
    "H100": 400 / 8, "H200": 400 / 8,
}


def hbm_bandwidth(device_kind: str) -> float | None:
  """HBM bytes per second of one device of this kind (None: unknown)."""
  gbps = _lookup(HBM_GBPS, device_kind)
  return None if gbps is None else gbps * 1e9


def link_bandwidths(device_kind: str) -> tuple[float, float] | None:
  """(inside a slice or host: ICI / NVLink, across: DCN / InfiniBand), bytes per second per device
  and direction; None for an unknown kind."""
  intra, inter = _lookup(INTRA_GBPS, device_kind), _lookup(INTER_GBPS, device_kind)
  return None if intra is None else (intra * 1e9, inter * 1e9)
