"""The step-time roofline against published training throughputs of dense LLMs in JAX (MaxText on
v5p, v5e and H100; tests/planning/planning_published.py cites each): a text-only config of the
same shape, layout and batch must come out within 25% of the published tokens/s per chip; the
points the efficiency ceilings were calibrated on reproduce within 3%."""

import pytest

from planning_published import PUBLISHED, published_tokens_per_chip
from synergen_jax.planning.facts import text_only
from synergen_jax.planning.layouts import Layout
from synergen_jax.planning.roofline import step_time
from synergen_jax.planning.targets import parse_target


def _predicted(entry):
  t = parse_target(entry["target"])
  f = text_only(**entry["shape"], batch_size=entry["rows_per_chip"] * t.chips, remat=entry["remat"])
  if t.platform == "gpu":       # FSDP over all 64 GPUs, hierarchical across the 8 nodes
    layout = Layout(1, t.chips_per_host, 1, dcn_fsdp=t.hosts, remat=entry["remat"], attention="cudnn")
  else:
    layout = Layout(1, t.chips // entry["tensor"], entry["tensor"], remat=entry["remat"],
                    attention="pallas_tpu")
  return step_time(f, layout, t).tokens_per_second_per_chip


@pytest.mark.parametrize("entry", PUBLISHED, ids=lambda e: e["name"])
def test_tokens_per_chip_against_the_published_figure(entry):
  published = published_tokens_per_chip(entry)
  assert _predicted(entry) == pytest.approx(published, rel=0.03 if entry["calibration"] else 0.25)


def test_each_device_family_has_a_held_out_or_calibration_point():
  families = {parse_target(e["target"]).family for e in PUBLISHED}
  assert families == {"v5p", "v5e", "h100"}
  assert {parse_target(e["target"]).family for e in PUBLISHED if not e["calibration"]} >= {"v5p", "v5e"}
