"""Every config key is declared once (core/keys.py): configs are built from the declarations, checked
against them, described by them, and the typed configs take their fields from them."""

import dataclasses
import os
import subprocess
import sys

import ml_collections
import pytest

from helpers import ROOT, config_path, tiny
from synergen_jax.convert.hf_families import LLM_KEYS, LLMShape
from synergen_jax.core import keys
from synergen_jax.core.config import ModelConfig, base_config, load_config, validate_config
from synergen_jax.core.errors import ConfigError


def _leaves(section: ml_collections.ConfigDict, prefix="config"):
  for name in section.keys():
    value = section[name]
    if isinstance(value, ml_collections.ConfigDict):
      yield from _leaves(value, f"{prefix}.{name}")
    else:
      yield f"{prefix}.{name}"


def _describe(*args):
  env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
  return subprocess.run([sys.executable, "-m", "synergen_jax.config", *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300)


def test_describe_lists_every_key_of_the_paper_config_with_a_description():
  config = load_config(config_path("synergen_vl_2b.py") + ":stage=2")
  result = _describe("--describe", "--config", config_path("synergen_vl_2b.py") + ":stage=2",
                     "--config.model.fold=2x4")
  assert result.returncode == 0, result.stderr[-2000:]
  lines = dict(line.split(" = ", 1) for line in result.stdout.splitlines())
  assert set(lines) == set(_leaves(config))   # every key, nothing else
  for name, rest in lines.items():
    value, _, description = rest.partition("  # ")
    assert len(description) > 5, f"{name} has no description"
  assert lines["config.model.fold"].startswith("(2, 4)  # ")        # the override, read as a pair
  assert lines["config.data.seq_len"].startswith("8192  # ")        # the stage's value
  assert lines["config.stage"].startswith("'2'  # ")


def test_describe_refuses_a_bad_config_naming_the_key():
  result = _describe("--config", config_path("tiny.py"), "--config.model.fold=3x2")
  assert result.returncode != 0 and "config.model.fold=3x2 does not divide" in result.stderr


@pytest.mark.parametrize("arg", ["2x4", "2,4"])
def test_fold_override_spellings_reach_the_model_as_a_pair(arg):
  from synergen_jax.core import cli
  config = cli.reload(config_path("demo.py"), {"model.fold": tuple(arg.split(","))})
  assert validate_config(config).fold == (2, 4) and tuple(config.model.fold) == (2, 4)


def test_a_wrong_type_names_the_key_and_its_declaration():
  config, _ = tiny()
  config.data.unlock()
  del config.data["eval_count"]
  config.data.eval_count = "many"            # a str where an int is declared
  with pytest.raises(ConfigError, match=r"config.data.eval_count='many' has the wrong type; declared "
                                        r"DataKeys.eval_count: int  # raw examples held out"):
    validate_config(config)
  config, _ = tiny()
  config.model.unfold.unlock()
  del config.model.unfold["d_model"]
  config.model.unfold.d_model = 1.5
  with pytest.raises(ConfigError, match=r"config.model.unfold.d_model=1.5 has the wrong type; declared "
                                        r"StackShape.d_model: int"):
    validate_config(config)


def test_unknown_and_missing_keys_name_the_declaring_section():
  config, _ = tiny()
  config.optim.unlock()["learning_rat"] = 1e-3
  with pytest.raises(ConfigError, match=r"unknown config.optim keys \['learning_rat'\].*OptimKeys"):
    validate_config(config)
  config, _ = tiny()
  del config.vq.unlock()["beta"]
  with pytest.raises(ConfigError, match=r"config.vq is missing keys \['beta'\].*VQKeys"):
    validate_config(config)


def test_base_config_holds_exactly_the_declared_defaults():
  """Every declared key, with its declared default; the required ones from the arguments."""
  model = {f.name: 4 for f in keys.fields(keys.StackShape)}
  model.update(text_vocab=64, codebook_size=32, code_embed_dim=16, code_grid=(4, 4), fold_mlp_hidden=8)
  unfold = {f.name: 2 for f in keys.fields(keys.StackShape)}
  config = base_config(model=model, unfold=unfold, seq_len=32, fold="2x2")
  expected = keys.defaults(keys.ExperimentKeys)
  expected["model"].update(model, fold=(2, 2), unfold=unfold)
  expected["data"].update(seq_len=32)
  expected["optim"]["decay_steps"] = expected["train"]["steps"]   # tied to train.steps
  as_lists = lambda tree: {k: as_lists(v) if isinstance(v, dict) else list(v) if isinstance(
      v, tuple) else v for k, v in tree.items()}
  assert as_lists(config.to_dict()) == as_lists(expected)
  config.train.steps = 7
  assert config.optim.decay_steps == 7


def test_typed_configs_take_their_fields_from_the_declarations():
  model_keys = {f.name for f in keys.fields(keys.ModelKeys)}
  assert {f.name for f in dataclasses.fields(ModelConfig)} == model_keys | {"llm"}
  assert {f.name for f in dataclasses.fields(LLMShape)} == set(LLM_KEYS) <= model_keys
  _, mc = tiny()
  assert LLMShape.of(mc).fields == {name: getattr(mc, name) for name in LLM_KEYS}
  # A stack's shape is the unfold section's keys; its options are config.model's.
  assert mc.unfold.d_model == 16 and mc.llm.d_model == mc.d_model == 32
  assert mc.unfold.remat_policy == mc.remat_policy and mc.unfold.num_experts == 1


def test_every_declared_key_has_a_description_and_a_checkable_type():
  def walk(cls):
    for f in keys.fields(cls):
      assert f.metadata.get("doc"), f"{cls.__name__}.{f.name} has no description"
      if keys.is_section(f.type):
        walk(f.type)
      elif f.default is not dataclasses.MISSING:
        assert keys.matches(f.default, f.type), f"{cls.__name__}.{f.name} default {f.default!r}"
  walk(keys.ExperimentKeys)
