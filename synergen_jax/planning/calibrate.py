"""What the planner is calibrated on: recorded AOT compiles (memory) and a device check's own
measurements (bench/device_check.sh's JSON: step time and MFU on a real GPU).

`fit_memory` fits memory.CALIBRATION's (scale, overhead) per platform family by least squares on
the compiles' temporaries; `read_device_check` reads a device check's JSON into the efficiency
ceiling the roofline then uses for that device (roofline.efficiency).
"""

from __future__ import annotations

import json

import numpy as np

from synergen_jax.core.config import load_config
from synergen_jax.core.errors import ConfigError
from synergen_jax.kernels.attention import auto_impl
from synergen_jax.planning import layouts, memory
from synergen_jax.planning.facts import facts
from synergen_jax.planning.targets import parse_target


def aot_case(row: dict):
  """(facts, layout, target) of one recorded compile: its config with its overrides, on its
  topology, with the layout the config asks for."""
  config = load_config(row["config"])
  with config.unlocked():
    for key, value in row.get("overrides", {}).items():
      section, name = key.split(".")
      config[section][name] = value
  target = parse_target(row["topology"])
  impl = config.model.attention_impl
  layout = layouts.configured_layout(config, target,
                                     auto_impl(target.platform) if impl == "auto" else impl)
  return facts(config), layout, target


def fit_memory(rows: list[dict]) -> dict:
  """{family: (scale, overhead GiB)} minimising the squared relative error of the temporaries.
  Rows marked `held_out` are left out: they test the fitted model on layouts it was not fitted on."""
  groups: dict = {}
  for row in (r for r in rows if not r.get("held_out")):
    f, layout, target = aot_case(row)
    key = memory.calibration_key(target.platform, target.hbm_bytes)
    modelled = sum(memory.model_terms(f, layout).values()) / 2**30
    groups.setdefault(key, []).append((modelled, row["temp_bytes"] / 2**30))
  out = dict(memory.CALIBRATION)
  for key, pairs in groups.items():
    x, y = np.array(pairs).T
    a = np.stack([x / y, 1 / y], axis=1)            # (scale x + overhead) / y ~ 1
    if len(pairs) == 1:
      a = a[:, :1]
    solution = np.linalg.lstsq(a, np.ones_like(y), rcond=None)[0]
    out[key] = (round(float(solution[0]), 3), round(float(solution[1]) if len(solution) > 1 else 0.0, 2))
  return out


DEVICE_CHECK_KEYS = ("device_kind", "peak_flops", "train_step")


def read_device_check(path: str) -> dict:
  """{family: efficiency ceiling} from bench/device_check.sh's JSON: the measured MFU of the paper
  config's reduced-depth train step over the MFU the roofline predicts for it at ceiling 1."""
  try:
    with open(path) as f:
      report = json.load(f)
  except (OSError, json.JSONDecodeError) as e:
    raise ConfigError(f"--calibration={path}: cannot read it ({e})") from None
  missing = [k for k in DEVICE_CHECK_KEYS if k not in report]
  step = report.get("train_step") or {}
  if missing or not isinstance(step, dict) or "mfu" not in step or "roofline_mfu_at_ceiling_1" not in step:
    raise ConfigError(f"--calibration={path}: not a device check report (needs {DEVICE_CHECK_KEYS} "
                      "and train_step.mfu, train_step.roofline_mfu_at_ceiling_1); missing: "
                      f"{missing or ['train_step.mfu / roofline_mfu_at_ceiling_1']}")
  kind = report["device_kind"].lower()
  family = next((g for g in ("h200", "h100") if g in kind), None)
  if family is None or step["mfu"] is None:
    raise ConfigError(f"--calibration={path}: device {report['device_kind']!r} with MFU "
                      f"{step['mfu']}: the planner calibrates h100 and h200 from a device check")
  return {family: float(step["mfu"]) / float(step["roofline_mfu_at_ceiling_1"])}
