"""Helpers shared by the tests: config loading and random packed batches."""

import pathlib

import numpy as np

from synergen_jax.config import load_config, validate_config
from synergen_jax.data.layout import Image, Text, fill_row, layout_example, stack_rows

ROOT = pathlib.Path(__file__).resolve().parents[1]


def config_path(name: str) -> str:
  return str(ROOT / "configs" / name)


def tiny(arg: str = ""):
  """(ConfigDict, ModelConfig) of configs/tiny.py with the given get_config argument."""
  config = load_config(config_path("tiny.py") + (":" + arg if arg else ""))
  return config, validate_config(config)


def random_example(mc, rng, max_text: int = 5):
  """A random captioning, generation or interleaved example (text tokens avoid special ids)."""
  def text(loss):
    return Text(rng.integers(6, mc.text_vocab, rng.integers(1, max_text + 1)), loss)

  def image(loss):
    return Image(rng.integers(0, mc.codebook_size, mc.code_grid), loss)

  kind = rng.integers(3)
  if kind == 0:
    parts = [image(False), text(True)]
  elif kind == 1:
    parts = [text(False), image(True)]
  else:
    parts = [text(True), image(True), text(True)]
  return layout_example(parts, mc.fold)


def random_batch(mc, rows: int, seq_len: int, seed: int = 0, max_examples: int = 3):
  """Rows of packed random examples; each row holds 1..max_examples examples and padding."""
  rng = np.random.default_rng(seed)
  return stack_rows([
      fill_row((random_example(mc, rng) for _ in range(rng.integers(1, max_examples + 1))),
               seq_len, mc.fold) for _ in range(rows)])



def init_params(mc, batch, seed: int = 0, **model_kwargs):
  """Plain (unboxed) parameters of SynerGenVL(mc) initialised on `batch`."""
  import flax.linen as nn
  import jax

  from synergen_jax.model.synergen_vl import SynerGenVL
  return nn.unbox(jax.jit(SynerGenVL(mc, **model_kwargs).init)(jax.random.key(seed), batch))
