"""The device mesh from `config.mesh` (axes data, fsdp, tensor; -1 = the devices left over)."""

from __future__ import annotations

import math

import jax
import numpy as np

from synergen_jax.core.errors import ConfigError

AXES = ("data", "fsdp", "tensor")


def mesh_shape(mesh_config, device_count: int) -> tuple[int, ...]:
  sizes = [int(mesh_config[a]) for a in AXES]
  if sum(s == -1 for s in sizes) > 1:
    raise ConfigError(f"config.mesh={dict(zip(AXES, sizes))}: at most one axis may be -1")
  if any(s == 0 or s < -1 for s in sizes):
    raise ConfigError(f"config.mesh={dict(zip(AXES, sizes))}: sizes must be positive or -1")
  known = math.prod(s for s in sizes if s != -1)
  if -1 in sizes:
    if device_count % known:
      raise ConfigError(f"config.mesh={dict(zip(AXES, sizes))}: {device_count} devices do not divide "
                        f"by the fixed axes' product {known}")
    sizes[sizes.index(-1)] = device_count // known
  if math.prod(sizes) != device_count:
    raise ConfigError(f"config.mesh={dict(zip(AXES, sizes))} needs {math.prod(sizes)} devices but "
                      f"{device_count} are visible; set one axis to -1 to take the rest")
  return tuple(sizes)


def make_mesh(mesh_config, devices=None) -> jax.sharding.Mesh:
  devices = list(devices if devices is not None else jax.devices())
  shape = mesh_shape(mesh_config, len(devices))
  return jax.sharding.Mesh(np.asarray(devices).reshape(shape), AXES,
                           axis_types=(jax.sharding.AxisType.Auto,) * len(AXES))
