"""The data cache: one entry per (data, tokenizer) config, built once, reused after."""

import os

from synergen_jax.prepare.cache import ensure_prepared


def test_data_cache_is_built_once(tiny_data, tmp_path):
  config = tiny_data["config"].copy_and_resolve_references()
  config.data.path = None
  config.data.cache_dir = str(tmp_path)
  config.vq.workdir = tiny_data["vq_dir"]          # reuse the trained tokenizer: no retraining here
  first = ensure_prepared(config)
  stamp = os.path.getmtime(os.path.join(first, "meta.json"))
  assert ensure_prepared(config) == first and os.path.getmtime(os.path.join(first, "meta.json")) == stamp
  config.data.p_uncond = 0.2                       # a different dataset -> a different entry
  assert ensure_prepared(config) != first
