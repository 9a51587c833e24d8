"""Golden sharding: the PartitionSpec of every parameter and optimizer-state leaf, for the paper
config on a TPU v5p slice and the demo on 8 devices, against a committed file.

A change to the logical-axis rules, a parameter's logical names, the optimizer's state layout or a
config's shapes shows up here as a per-leaf diff. When the change is intended, regenerate with

  python tests/parallel/test_partition_golden.py

and commit tests/parallel/golden/partition_specs.json with the change.
"""

import json
import os
import pathlib
import sys

if __name__ == "__main__":   # the demo case runs on 8 fake CPU devices, as under pytest (conftest)
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                             " --xla_force_host_platform_device_count=8").strip()
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import pytest  # noqa: E402

from helpers import config_path  # noqa: E402
from synergen_jax.aot.compile_report import for_target  # noqa: E402
from synergen_jax.aot.targets import topology_devices  # noqa: E402
from synergen_jax.core.config import load_config  # noqa: E402
from synergen_jax.core.errors import ConfigError  # noqa: E402
from synergen_jax.parallel.mesh import make_mesh  # noqa: E402
from synergen_jax.parallel.sharding import LOGICAL_RULES, spec_table  # noqa: E402
from synergen_jax.train.state import build_train_step  # noqa: E402

GOLDEN = pathlib.Path(__file__).parent / "golden" / "partition_specs.json"
CASES = {
    # FSDP over 16 chips x tensor parallelism over 4: every rule of the table is exercised.
    "synergen_vl_2b:stage=1 on v5p:4x4x4": dict(config="synergen_vl_2b.py:stage=1",
                                                topology="v5p:4x4x4",
                                                mesh=dict(data=1, fsdp=16, tensor=4)),
    "demo on 8 devices": dict(config="demo.py", topology=None, mesh=dict(data=2, fsdp=2, tensor=2)),
}


def partition_specs(case: dict) -> dict:
  config = load_config(config_path(case["config"]))
  config.mesh.update(case["mesh"])
  devices = topology_devices(case["topology"])[0] if case["topology"] else jax.devices()
  mc = for_target(config, devices)
  mesh = make_mesh(config.mesh, devices)
  with jax.set_mesh(mesh), nn.logical_axis_rules(LOGICAL_RULES):
    plan = build_train_step(config, mc, mesh, host_example=True)   # traced shapes only, no compile
  return dict(mesh=dict(mesh.shape), params=spec_table(plan.shardings["params"]),
              opt_state=spec_table(plan.shardings["opt_state"]))


@pytest.mark.parametrize("name", list(CASES))
def test_partition_specs_match_the_golden_file(name):
  try:
    got = partition_specs(CASES[name])
  except ConfigError as e:   # no libtpu: the tpu extra is not installed
    pytest.skip(str(e))
  want = json.loads(GOLDEN.read_text())[name]
  assert got["mesh"] == want["mesh"]
  for section in ("params", "opt_state"):
    changed = sorted(k for k in set(got[section]) | set(want[section])
                     if got[section].get(k) != want[section].get(k))
    assert not changed, (
        f"{name}: {len(changed)} {section} leaves differ from {GOLDEN.name} (got vs golden): " +
        "; ".join(f"{k}: {got[section].get(k)} vs {want[section].get(k)}" for k in changed[:5]) +
        ". If intended, regenerate: python tests/parallel/test_partition_golden.py")


def test_golden_file_shards_what_it_should():
  """The committed file itself, so a careless regeneration cannot bless a broken layout: no
  parameter is replicated, the big tables split over tensor x fsdp, Adam's moments shard like their
  parameters, and stage 1 keeps no moments for the frozen LLM."""
  paper = json.loads(GOLDEN.read_text())["synergen_vl_2b:stage=1 on v5p:4x4x4"]
  params, opt = paper["params"], paper["opt_state"]
  assert [k for k, v in params.items() if v == "P()"] == []
  assert params["params/text_embed/embedding"] == "P('tensor', 'fsdp')"
  assert params["params/decoder/layers/ffn/vision_up"] == "P(None, 'fsdp', 'tensor')"
  for moment in ("mu", "nu"):
    state = {k.split(f"/{moment}/", 1)[1]: v for k, v in opt.items() if f"/{moment}/" in k}
    assert state and all(params[k] == v for k, v in state.items())
    assert "params/decoder/layers/ffn/vision_up" in state
    frozen = ("params/decoder/layers/attention/", "params/decoder/layers/ffn/text_",
              "params/lm_head/", "params/text_embed/")
    assert not [k for k in state if k.startswith(frozen)]


if __name__ == "__main__":
  GOLDEN.parent.mkdir(exist_ok=True)
  GOLDEN.write_text(json.dumps({name: partition_specs(case) for name, case in CASES.items()},
                               indent=1, sort_keys=True) + "\n")
  print(f"wrote {GOLDEN}")
