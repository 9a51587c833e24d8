"""AOT compilation of the real train step for GPU targets on this CPU host, through XLA's compile-only
GPU client (needs jax's CUDA plugin, the `cuda` extra; without it the error that says so is checked)."""

import importlib.util

import pytest

from helpers import tiny
from synergen_jax.core.errors import ConfigError
from synergen_jax.aot.compile_report import compile_report
from synergen_jax.aot.targets import gpu_topology, is_gpu_target

HAS_CUDA_PLUGIN = any(importlib.util.find_spec(m) for m in ("jax_cuda13_plugin", "jax_cuda12_plugin"))
needs_plugin = pytest.mark.skipif(not HAS_CUDA_PLUGIN,
                                  reason="needs the cuda extra: pip install -e '.[cuda]'")


def test_target_names():
  assert is_gpu_target("h100") and is_gpu_target("h200:2x8")
  assert not is_gpu_target("v5p:2x2x1") and not is_gpu_target("a100") and not is_gpu_target("h100:8")
  with pytest.raises(ValueError, match=r"GPU\[:HOSTSxDEVICES\] with GPU in \['h100', 'h200'\]"):
    gpu_topology("a100:1x8")


@pytest.mark.skipif(HAS_CUDA_PLUGIN, reason="the CUDA plugin is installed")
def test_without_the_plugin_the_error_names_the_extra():
  config, _ = tiny()
  with pytest.raises(ConfigError, match=r"--topology='h100:1x2'.*install the cuda extra"):
    compile_report(config, "h100:1x2")


@needs_plugin
def test_tiny_step_compiles_for_h100s_with_each_gpu_attention_kernel():
  """The whole train step (LLM, fold embedding, unfold head, Adam) compiles for two H100s under FSDP
  with the Triton and Mosaic GPU kernels and the XLA reference; FSDP halves the parameter bytes."""
  reports = {}
  for impl in ("xla", "pallas_gpu", "pallas_mgpu"):
    config, _ = tiny("stage=sft")
    config.model.update(attention_impl=impl, dtype="bfloat16", head_dim=64)
    config.data.seq_len = 128
    config.mesh.update(data=1, fsdp=-1, tensor=1)
    reports[impl] = compile_report(config, "h100:1x2")
  for r in reports.values():
    assert r.devices == 2 and r.device_kind == "NVIDIA H100 80GB HBM3" and r.fits
    assert r.hbm_bytes == 84929347584
  config, _ = tiny("stage=sft")
  config.model.update(dtype="bfloat16", head_dim=64)
  config.data.seq_len = 128
  config.mesh.update(data=-1, fsdp=1, tensor=1)
  replicated = compile_report(config, "h100:1x2")
  assert replicated.model_flops == reports["xla"].model_flops
  assert replicated.params_bytes / 2 <= reports["xla"].params_bytes < replicated.params_bytes
