"""`python -m synergen_jax.plan`: the ranked plan, its JSON rows and plot, bad input (unknown target,
a prices file without a target's price, a config that fits nowhere), `summarize` for sweeps, and
the device check's CPU-safe parts (its argument parsing, its JSON, `plan --calibration` reading it)."""

import json
import os
import subprocess
import sys

import pytest

from helpers import ROOT
from synergen_jax.core.config import load_config
from synergen_jax.core.errors import ConfigError
from synergen_jax.planning import layouts, planner
from synergen_jax.planning.calibrate import read_device_check
from synergen_jax.planning.facts import facts
from synergen_jax.planning.prices import load_prices
from synergen_jax.planning.targets import parse_target

PAPER = "configs/synergen_vl_2b.py:stage=1"


@pytest.fixture(scope="module")
def device_check(tmp_path_factory):
  """bench/device_step.py scoring a given step time (no accelerator): the device check's JSON."""
  out = tmp_path_factory.mktemp("dc") / "device_check.json"
  r = subprocess.run([sys.executable, "bench/device_step.py", "--step_seconds", "1.5", "--out", str(out)],
                     cwd=ROOT, capture_output=True, text=True)
  assert r.returncode == 0, r.stderr[-2000:]
  return out


def test_plan_ranks_layouts_writes_rows_and_plot_and_calibrates_from_a_device_check(tmp_path, device_check):
  rows_path, png = tmp_path / "rows.json", tmp_path / "plan.png"
  r = subprocess.run([sys.executable, "-m", "synergen_jax.plan", "--config", PAPER, "--targets",
                      "v5p-128,h100:8x8", "--json", str(rows_path), "--plot", str(png),
                      "--calibration", str(device_check), "--steps", "1000"],
                     cwd=ROOT, capture_output=True, text=True)
  assert r.returncode == 0, r.stderr[-2000:]
  rows = json.load(open(rows_path))
  for target in ("v5p-128", "h100:8x8"):
    mine = [x for x in rows if x["target"] == target]
    assert sum(x["configured"] for x in mine) == 1
    fitting = [x for x in mine if x["fits"]]
    assert mine[0] == min(fitting, key=lambda x: x["hours"]) or mine[0]["hours"] == fitting[0]["hours"]
    for x in mine:   # hours and cost follow from the step time, the steps and the chips' price
      assert x["hours"] == pytest.approx(1000 * x["step_seconds"] / 3600)
      assert x["cost"] == pytest.approx(x["hours"] * parse_target(target).chips *
                                        (4.20 if target == "v5p-128" else 11.06))
      # The fit margin is the memory model's error bound: 10%, 45% without remat (only a config's
      # own layout may go without: the planner does not search it).
      margin = 0.45 if " none " in f" {x['layout']} " else 0.10
      assert margin == 0.10 or x["configured"]
      assert x["fit_limit_bytes_per_chip"] == int((1 - margin) * x["hbm_bytes_per_chip"])
      assert x["fits"] == (x["predicted_bytes_per_chip"] <= x["fit_limit_bytes_per_chip"])
  assert png.read_bytes()[:4] == b"\x89PNG"
  assert "prepare:" in r.stdout and "images/s per chip" in r.stdout
  # The device check's ceiling replaces the published one for H100s: the same layout, another time.
  config = load_config(PAPER)
  f = facts(config)
  calibrated = planner.plan_target(config, f, parse_target("h100:8x8"), 1000, load_prices(None, []),
                                   dict(planner.EFFICIENCY, **read_device_check(str(device_check))))
  by_layout = {x["layout"]: x["step_seconds"] for x in rows if x["target"] == "h100:8x8"}
  assert by_layout[calibrated[0].layout] == pytest.approx(calibrated[0].step_seconds)


def test_device_check_json_and_arguments(device_check, tmp_path):
  report = json.load(open(device_check))
  step = report["train_step"]
  assert step["mfu"] == pytest.approx(step["model_flops"] / 1.5 / report["peak_flops"])
  ceiling = read_device_check(str(device_check))["h100"]
  assert ceiling == pytest.approx(step["mfu"] / step["roofline_mfu_at_ceiling_1"])
  dry = subprocess.run(["bash", "bench/device_check.sh", "--dry-run", str(tmp_path / "out")], cwd=ROOT,
                       capture_output=True, text=True)
  assert dry.returncode == 0, dry.stderr
  assert "tests/kernels/test_on_gpu.py" in dry.stdout and "--lengths 4096,8192,16384" in dry.stdout
  assert f"--out {tmp_path}/out/device_check.json" in dry.stdout
  assert not (tmp_path / "out").exists()                     # a dry run writes nothing
  bad = subprocess.run(["bash", "bench/device_check.sh", "--dry-run"], cwd=ROOT, capture_output=True,
                       text=True, env={"LAYERS": "four", "PATH": "/usr/bin:/bin"})
  assert bad.returncode == 2 and "LAYERS=four must be a positive integer" in bad.stderr
  (tmp_path / "broken.json").write_text(json.dumps({"device_kind": "H100"}))
  with pytest.raises(ConfigError, match="not a device check report"):
    read_device_check(str(tmp_path / "broken.json"))


def test_device_step_builds_the_paper_step_on_one_device_and_runs_a_small_one(tmp_path):
  """What the device check runs on its one GPU, on one CPU device: the paper config's reduced step
  is accepted there (its replication guard is for meshes), and the measuring path runs end to end
  on the tiny config (the paper step's activations do not fit this host's memory)."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
  build = subprocess.run([sys.executable, "bench/device_step.py", "--build_only"], cwd=ROOT, env=env,
                         capture_output=True, text=True)
  assert build.returncode == 0 and "the reduced step builds on one cpu device" in build.stdout, \
      build.stderr[-2000:]
  out = tmp_path / "step.json"
  run = subprocess.run([sys.executable, "bench/device_step.py", "--config", "configs/tiny.py",
                        "--layers", "1", "--rows", "2", "--steps", "2", "--attention", "xla",
                        "--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True)
  assert run.returncode == 0, run.stderr[-2000:]
  step = json.load(open(out))["train_step"]
  assert step["step_seconds"] > 0 and step["model_flops"] > 0 and step["layers"] == 1


def test_bad_input_names_what_is_wrong(tmp_path):
  with pytest.raises(ConfigError, match=r"unknown target 'a100:1x8'; known targets: v5p-N.*h100"):
    parse_target("a100:1x8")
  prices = tmp_path / "prices.json"
  prices.write_text(json.dumps({"v5p": 2.0}))
  with pytest.raises(ConfigError, match=r"no price for h100 .*add 'h100'"):
    load_prices(str(prices), ["h100", "v5p"])
  assert load_prices(str(prices), ["v5p"])["v5p"] == 2.0
  # 40x the paper's width on a 4-chip v5e: nothing fits; the message names the smallest per-chip
  # memory found and its largest term.
  config = load_config(PAPER)
  config.model.update(d_model=8192, mlp_dim=32768, code_embed_dim=8192, fold_mlp_hidden=8192)
  rows = planner.plan_target(config, facts(config), parse_target("v5litepod-4"), 10,
                             load_prices(None, []))
  assert not any(r.fits for r in rows)
  smallest = min(rows, key=lambda r: r.predicted_bytes_per_chip)
  message = planner.no_fit_message(rows)
  assert f"{smallest.predicted_bytes_per_chip / 2**30:.1f} GiB per chip of 16 GiB" in message
  assert f"largest term is {smallest.dominant_term}" in message and smallest.dominant_term == "params"


def test_summarize_for_a_sweep_point():
  config = load_config(PAPER)
  s = planner.summarize(config, "v5p-128", tokens=10**9)
  assert s["steps"] == -(-10**9 // (256 * 4096))
  assert s["best"]["fits"] and s["best"]["hours"] <= s["configured"]["hours"]
  assert s["configured"]["mesh"].startswith("data=1,fsdp=64,tensor=1")
  assert s["prepare_hours"] > 0 and s["prepare_tflops_per_image"] > 1


def test_layouts_without_remat_are_planned_only_when_the_config_asks_for_them():
  """The memory model is 12-43% under the compiles without remat: the planner does not search that
  policy, but a config whose own layout goes without is still planned, with the 45% margin."""
  config = load_config(PAPER)
  target = parse_target("v5p-128")
  f = facts(config)
  assert all(l.remat != "none" for l in layouts.candidates(target, f.batch_size))
  config.model.remat_policy = "none"
  rows = planner.plan_target(config, facts(config), target, 10, load_prices(None, []))
  mine = [r for r in rows if " none " in f" {r.layout} "]
  assert len(mine) == 1 and mine[0].configured
  assert mine[0].fit_limit_bytes_per_chip == int(0.55 * target.hbm_bytes)

