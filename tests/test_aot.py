"""AOT compilation of the real train step for a TPU topology on this CPU host (needs libtpu)."""

import json
import subprocess
import sys

import pytest

pytest.importorskip("libtpu", reason="needs the tpu extra: pip install -e '.[tpu]'")

from helpers import ROOT, tiny  # noqa: E402
from synergen_jax.aot.compile_report import compile_report  # noqa: E402
from synergen_jax.core.errors import ConfigError  # noqa: E402
from synergen_jax.model import accounting  # noqa: E402


def test_tiny_step_compiles_for_a_v5p_slice_with_its_sharding_in_the_memory_figures():
  config, mc = tiny("stage=sft")          # every parameter trains, so Adam keeps two moments of each
  config.mesh.update(data=1, fsdp=-1, tensor=1)
  sharded = compile_report(config, "v5p:2x2x1")
  assert sharded.devices == 4 and sharded.mesh == {"data": 1, "fsdp": 4, "tensor": 1}
  assert sharded.device_kind == "TPU v5" and sharded.fits
  config.mesh.update(data=-1, fsdp=1)
  replicated = compile_report(config, "v5p:2x2x1")
  # Data parallel keeps every parameter whole on every device; FSDP splits the large ones in 4.
  new_token_rows = 2 * 3 * mc.llm.d_model
  whole = (accounting.param_count(mc).total + new_token_rows) * 4
  assert replicated.params_bytes == whole
  assert whole / 4 <= sharded.params_bytes < whole / 2
  assert replicated.optimizer_bytes == pytest.approx(2 * replicated.params_bytes, rel=0.02)
  # Both layouts run the same batch: the same model FLOPs (XLA's own count is reported beside it).
  assert replicated.model_flops == sharded.model_flops > 0 and sharded.xla_flops > 0
  assert replicated.total_bytes > replicated.params_bytes + replicated.optimizer_bytes


def test_cli_exit_status_says_whether_it_fits(tmp_path):
  base = [sys.executable, "-m", "synergen_jax.aot", "--config", "configs/tiny.py", "--topology",
          "v5e:2x2", "--json", str(tmp_path / "r.json")]
  ok = subprocess.run(base, cwd=ROOT, capture_output=True, text=True)
  assert ok.returncode == 0 and "fits" in ok.stdout, ok.stderr[-2000:]
  report = json.load(open(tmp_path / "r.json"))
  assert report["fits"] and report["device_kind"] == "TPU v5 lite" and report["devices"] == 4
  tight = subprocess.run(base + ["--hbm_gb", "0.001"], cwd=ROOT, capture_output=True, text=True)
  assert tight.returncode == 1 and "DOES NOT FIT" in tight.stdout
  assert not json.load(open(tmp_path / "r.json"))["fits"]


def test_bad_topology_and_batch_fail_before_compiling():
  config, _ = tiny()
  with pytest.raises(ConfigError, match="--topology='v9x:2x2'"):
    compile_report(config, "v9x:2x2")
  config.train.batch_size = 6
  with pytest.raises(ConfigError, match="batch_size=6 does not split over data x fsdp = 4"):
    compile_report(config, "v5p:2x2x1")
