"""The planner's memory model against AOT compiles: the recorded paper-scale table (v5p, v5e, H100;
stages 1, 2, sft; held-out rows with other remat policies, tensor and data parallelism) within
the model's error bounds, its calibration reproducible from the fitted rows, and one live compile
of the tiny config that keeps the recorded path (aot.compile_report's figures) honest."""

import json
import os

import pytest

from helpers import tiny
from synergen_jax.planning import memory
from synergen_jax.planning.calibrate import aot_case, fit_memory
from synergen_jax.planning.facts import facts
from synergen_jax.planning.layouts import configured_layout
from synergen_jax.planning.targets import parse_target

TABLE = os.path.join(os.path.dirname(__file__), "aot_memory.json")
ROWS = json.load(open(TABLE))["rows"]


def test_the_table_covers_three_devices_and_all_stages():
  assert len(ROWS) >= 8
  assert {r["topology"].split(":")[0] for r in ROWS} >= {"v5p", "v5e", "h100"}
  assert {r["config"].rsplit("=", 1)[1] for r in ROWS} == {"1", "2", "sft"}


def test_held_out_rows_test_layouts_the_calibration_never_saw():
  """Rows marked held_out are not fitted on (the fit without them is the same), and they are the
  only rows with another remat policy, tensor or data parallelism: the model's form meets them
  through the error-bound test below."""
  fitted = [r for r in ROWS if not r.get("held_out")]
  held = [r for r in ROWS if r.get("held_out")]
  assert fit_memory(ROWS) == fit_memory(fitted)
  layouts = [aot_case(r)[1] for r in held]
  assert {l.remat for l in layouts} >= {"dots", "none"}
  assert any(l.tensor > 1 for l in layouts) and any(l.data > 1 for l in layouts)
  assert all(l.remat == "full" and l.tensor == l.data == 1 for l in (aot_case(r)[1] for r in fitted))


@pytest.mark.parametrize("row", ROWS, ids=lambda r: f"{r['topology']}-{r['config'][-5:]}-"
                         + "-".join(f"{k.split('.')[1]}{v}" for k, v in r["overrides"].items()
                                    if k != "model.attention_impl"))
def test_prediction_within_its_error_bound_of_the_compiled_step(row):
  """10%; 45% without remat (memory.ERROR_BOUND), which the planner keeps as its fit margin."""
  f, layout, target = aot_case(row)
  m = memory.memory(f, layout, target.platform, target.hbm_bytes)
  assert m.total == pytest.approx(row["total_bytes"], rel=memory.error_bound(layout))
  # The exact terms are counted as the AOT report counts them (the table rounds to 3 figures).
  assert m.params == pytest.approx(row["params_bytes"], rel=0.01)
  assert m.optimizer == pytest.approx(row["optimizer_bytes"], rel=0.01)


def test_calibration_is_the_fit_of_the_table():
  fitted = fit_memory(ROWS)
  for key, (scale, overhead) in memory.CALIBRATION.items():
    assert fitted[key][0] == pytest.approx(scale, abs=0.002)
    assert fitted[key][1] == pytest.approx(overhead, abs=0.02)


def test_live_tiny_compile_matches_the_exact_terms_and_the_table_format():
  pytest.importorskip("libtpu", reason="needs the tpu extra: pip install -e '.[tpu]'")
  from synergen_jax.aot.compile_report import compile_report
  config, _ = tiny("stage=sft")
  config.mesh.update(data=1, fsdp=-1, tensor=1)
  report = compile_report(config, "v5p:2x2x1")
  target = parse_target("v5p:2x2x1")
  f = facts(config)
  layout = configured_layout(config, target, config.model.attention_impl)
  assert (layout.fsdp, layout.data) == (report.mesh["fsdp"], report.mesh["data"]) == (4, 1)
  m = memory.memory(f, layout, target.platform, target.hbm_bytes)
  # Tiny matrices do not all split 4 ways (vectors stay whole): the report's bytes sit between the
  # model's even split and twice it.
  assert m.params <= report.params_bytes < 2 * m.params
  assert m.optimizer <= report.optimizer_bytes < 2 * m.optimizer
  # A row recorded from this report reads back as the same case.
  row = dict(config="configs/tiny.py:stage=sft", overrides={"mesh.fsdp": -1, "mesh.data": 1},
             topology="v5p:2x2x1", **{k: getattr(report, k) for k in
                                      ("params_bytes", "optimizer_bytes", "temp_bytes", "total_bytes")})
  f2, layout2, target2 = aot_case(row)
  assert (f2.params, layout2, target2.chips) == (f.params, layout, 4)   # attention: auto -> pallas_tpu
  assert report.total_bytes >= report.params_bytes + report.optimizer_bytes + report.temp_bytes // 2
