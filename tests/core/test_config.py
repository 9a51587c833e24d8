"""Every shipped config validates; bad configs fail before any device work with the documented errors;
the paper config lands on the paper's parameter count."""

import glob

import pytest

from helpers import ROOT, config_path, random_batch, tiny
from synergen_jax.core.config import load_config, parse_arg, validate_config
from synergen_jax.core.errors import ConfigError
from synergen_jax.model import accounting

CONFIGS = sorted(glob.glob(str(ROOT / "configs" / "*.py")))


@pytest.mark.parametrize("path", CONFIGS)
def test_shipped_configs_validate(path):
  validate_config(load_config(path))


@pytest.mark.parametrize("fold", ["1x1", "2x2", "2x4", "4x4"])
def test_demo_grid_folds_by_every_swept_ratio(fold):
  mc = validate_config(load_config(config_path("demo.py") + f":fold={fold}"))
  assert mc.windows_per_image * mc.fold_ratio == 64


def _bad(mutate, match):
  config, _ = tiny()
  mutate(config)
  with pytest.raises(ConfigError, match=match):
    validate_config(config)


def test_fold_must_divide_code_grid():
  _bad(lambda c: setattr(c.model, "fold", (3, 2)), r"fold=3x2 does not divide .*code_grid=4x4")


def test_heads_must_divide_by_kv_heads():
  _bad(lambda c: setattr(c.model, "num_kv_heads", 3), r"num_heads=4 is not divisible by .*num_kv_heads=3")
  _bad(lambda c: setattr(c.model.unfold, "num_kv_heads", 3), r"unfold.num_heads=2 is not divisible")


def test_unknown_and_missing_keys():
  _bad(lambda c: c.model.unlock().__setitem__("foldd", 1), r"unknown config.model keys \['foldd'\]")
  _bad(lambda c: c.model.unfold.unlock().__setitem__("layers", 1), r"unknown config.model.unfold keys")


def test_sequence_must_hold_one_image():
  _bad(lambda c: setattr(c.data, "seq_len", 5), r"seq_len=5 cannot hold one image")


def test_other_documented_errors():
  _bad(lambda c: setattr(c.model, "head_dim", 7), r"head_dim=7 must be even")
  _bad(lambda c: setattr(c.model, "remat_policy", "some"), r"remat_policy='some'")
  _bad(lambda c: setattr(c.model, "attention_impl", "flash"), r"attention_impl='flash'")
  _bad(lambda c: setattr(c.model, "attention_block_q", -1), r"attention_block_q=-1")
  _bad(lambda c: setattr(c.model, "dtype", "float8"), r"dtype='float8'")
  _bad(lambda c: setattr(c.model, "unfold_capacity", 64), r"unfold_capacity=64 exceeds")
  _bad(lambda c: setattr(c, "stage", "3"), r"stage='3'")
  _bad(lambda c: setattr(c.model, "num_layers", 0), r"num_layers=0 must be a positive int")


def test_config_argument_parsing():
  assert parse_arg("fold=2x4,scan=true", fold=(1, 1), scan=False).fold == (2, 4)
  with pytest.raises(ConfigError, match="unknown config argument 'folds'"):
    parse_arg("folds=2x4", fold=(1, 1))
  with pytest.raises(ConfigError, match="must be true or false"):
    parse_arg("scan=maybe", scan=False)
  with pytest.raises(ConfigError, match="not a pair"):
    parse_arg("fold=2x4x1", fold=(1, 1))


@pytest.mark.parametrize("name", ["tiny.py", "demo.py", "synergen_vl_2b.py", "qwen2_0p5b_ablation.py"])
def test_analytic_param_count_matches_module(name):
  mc = validate_config(load_config(config_path(name)))
  batch = random_batch(mc, rows=1, seq_len=mc.windows_per_image + 8, seed=0, max_examples=1)
  actual = accounting.initialized_param_count(mc, batch)
  assert abs(actual - accounting.param_count(mc).total) <= 0.01 * actual


def test_paper_config_lands_on_paper_size():
  """Paper: 3.6B total, 2.4B activated parameters."""
  mc = validate_config(load_config(config_path("synergen_vl_2b.py")))
  count = accounting.param_count(mc)
  assert 3.5e9 < count.total < 3.7e9, count
  assert 2.35e9 < count.activated < 2.45e9, count


@pytest.mark.parametrize("key, value, message", [
    ("data.image_fit", "crop", "config.data.image_fit='crop'; choose one of"),
    ("data.too_long", "truncate", "choose skip or error"),
    ("data.max_tiles", 0, "config.data.max_tiles=0 must be an int >= 1"),
    ("data.p_uncond", 1.5, "config.data.p_uncond=1.5 must be in"),
    ("data.uncond_prompt", "random image:", "must contain <UNCOND>"),
    ("vq.downsample", 6, "config.vq.downsample=6; choose 4, 8 or 16"),
    ("vq.channels", 2, "config.vq.channels=2; choose 1"),
])
def test_data_and_tokenizer_errors(key, value, message):
  config, _ = tiny()
  section, field = key.split(".")
  setattr(config[section], field, value)
  with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
    validate_config(config)
  config, _ = tiny()
  config.data.tasks.captioning = 1.0
  with pytest.raises(ConfigError, match=r"unknown config.data.tasks keys \['captioning'\]"):
    validate_config(config)


def test_hopper_kernel_constraints_fail_before_device_work():
  def mgpu(**changes):
    def mutate(c):
      c.model.attention_impl = "pallas_mgpu"
      c.model.dtype, c.model.head_dim, c.data.seq_len = "bfloat16", 64, 128
      for key, value in changes.items():
        section, field = key.split("__")
        setattr(c[section], field, value)
    return mutate
  _bad(mgpu(model__dtype="float32"), r"pallas_mgpu' \(wgmma\) needs config.model.dtype bfloat16")
  _bad(mgpu(model__head_dim=256), r"config.model.head_dim 64 or 128; got 256")
  _bad(mgpu(model__attention_block_q=128), r"attention_block_q 64 and attention_block_k 64 or 128")
  _bad(mgpu(model__attention_block_k=32), r"attention_block_q 64 and attention_block_k 64 or 128")
  _bad(mgpu(data__seq_len=192), r"seq_len=192 must be a multiple of the pallas_mgpu attention blocks")
  # A valid Hopper config: the LLM uses the kernel; the unfold head's one-window rows (shorter than
  # a wgmma tile, and its head_dim of 8 is not a multiple of 64) use the XLA reference.
  config, _ = tiny()
  mgpu()(config)
  mc = validate_config(config)
  assert (mc.llm.attention_impl, mc.unfold.attention_impl) == ("pallas_mgpu", "xla")


def test_triton_kernel_constraints_fail_before_device_work():
  def triton(**changes):
    def mutate(c):
      c.model.update({"attention_impl": "pallas_gpu", "head_dim": 16, **changes})
    return mutate
  _bad(triton(head_dim=48), r"'pallas_gpu' \(Triton\) needs config.model.head_dim a power of two")
  _bad(triton(attention_block_q=48), r"power-of-two attention_block_q/k")
  config, _ = tiny()
  triton()(config)
  mc = validate_config(config)      # the unfold head's head_dim of 8 is fine: it runs the reference
  assert (mc.llm.attention_impl, mc.unfold.attention_impl) == ("pallas_gpu", "xla")
