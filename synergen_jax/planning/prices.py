"""Prices per chip-hour: a small dated table with its sources, overridable by a JSON file
({"v5p": 4.2, "h100": 3.0} or {"prices": {...}}: US dollars per chip-hour by family).

On-demand list prices, us-central / us-east regions, as published 2024 (not re-checked since;
committed-use, spot and negotiated prices are lower: pass --prices):
  v5p   4.20 $/chip-hour   cloud.google.com/tpu/pricing (TPU v5p, on demand)
  v5e   1.20 $/chip-hour   cloud.google.com/tpu/pricing (TPU v5e, on demand)
  v6e   2.70 $/chip-hour   cloud.google.com/tpu/pricing (Trillium, on demand)
  v4    3.22 $/chip-hour   cloud.google.com/tpu/pricing (TPU v4, on demand)
  h100  11.06 $/GPU-hour   cloud.google.com/compute/gpus-pricing (a3-highgpu-8g, 88.49 $/hour / 8)
  h200  10.60 $/GPU-hour   cloud.google.com/compute/gpus-pricing (a3-ultragpu-8g, ~84.8 $/hour / 8)
"""

from __future__ import annotations

import json

from synergen_jax.core.errors import ConfigError

PRICES_DATE = "2024"
PRICES = {"v5p": 4.20, "v5e": 1.20, "v6e": 2.70, "v4": 3.22, "h100": 11.06, "h200": 10.60}


def load_prices(path: str | None, families: list[str]) -> dict:
  """The price table, with a file's entries replacing the defaults; a file that lacks a family
  the plan needs is a ConfigError naming it."""
  if not path:
    return dict(PRICES)
  try:
    with open(path) as f:
      given = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise ConfigError(f"--prices={path}: cannot read it as JSON ({e})") from None
  given = given.get("prices", given) if isinstance(given, dict) else None
  if not isinstance(given, dict) or not all(isinstance(v, (int, float)) for v in given.values()):
    raise ConfigError(f"--prices={path}: expected {{family: dollars per chip-hour}}, e.g. "
                      '{"v5p": 4.2, "h100": 3.0}')
  missing = sorted(set(families) - set(given))
  if missing:
    raise ConfigError(f"--prices={path}: no price for {', '.join(missing)} (targets of this plan); "
                      f"add {', '.join(f'{m!r}: DOLLARS_PER_CHIP_HOUR' for m in missing)}")
  return dict(PRICES, **given)
