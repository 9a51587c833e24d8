"""The data cache: "make sure the prepared data and its image tokenizer exist for this config".

A train command alone must work on a fresh machine, so a config without `config.data.path` is
prepared once into a cache entry keyed by everything that changes the prepared examples (the data
and tokenizer sections, the code grid, the vocabulary sizes; not the pipeline's knobs such as
seq_len or workers, which only change how examples are packed):

  <cache root>/<data.name>-<key>/vq     the image tokenizer, trained here unless config.vq.workdir
                                        names one (vq/training.py)
  <cache root>/<data.name>-<key>/data   prepare's output (prepare/writer.py)

The cache root is config.data.cache_dir, else $SYNERGEN_CACHE, else ~/.cache/synergen_jax; it may be
a bucket (gs://), so one process builds the cache and every later run, on any machine, finds it. Under
several processes the entry must exist and be visible to every process (a shared file system);
nothing is built then, since each process would train its own image tokenizer.
"""

from __future__ import annotations

import hashlib
import json
import os

import jax

from synergen_jax.core import storage
from synergen_jax.core.errors import ConfigError
from synergen_jax.data import mixture
from synergen_jax.data.pipeline import resolve_budgets
from synergen_jax.data.records import FORMAT_VERSION
from synergen_jax.prepare.writer import prepare
from synergen_jax.vq import training as vq_training
from synergen_jax.vq.tokenizer import ImageTokenizer


def cache_key(config) -> str:
  d = json.loads(config.data.to_json_best_effort())
  for knob in ("path", "cache_dir", "seq_len", "too_long", "num_workers", "prefetch", "packing_bins",
               "shards", "code_cache"):
    d.pop(knob, None)
  v = json.loads(config.vq.to_json_best_effort())
  v.pop("workdir", None)
  m = config.model
  key = json.dumps(dict(data=d, vq=v, grid=list(m.code_grid), codebook=m.codebook_size,
                        text_vocab=m.text_vocab, format=FORMAT_VERSION), sort_keys=True)
  return hashlib.sha256(key.encode()).hexdigest()[:12]


def cache_root(config) -> str:
  """config.data.cache_dir, else $SYNERGEN_CACHE, else ~/.cache/synergen_jax."""
  return config.data.cache_dir or os.environ.get(
      "SYNERGEN_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "synergen_jax"))


def ensure_prepared(config) -> str | None:
  """config.data.path if set; None under config.data.mixture (its components are prepare outputs
  already: nothing is built); else the cache entry for this data/tokenizer config, built if missing
  (train the image tokenizer unless config.vq.workdir names one, then prepare)."""
  if mixture.parse_mixture(config.data):
    return None
  if config.data.path:
    return config.data.path
  if jax.process_count() > 1:
    return _prepared_before(config)
  return _ensure_prepared_here(config)


def _exists(folder: str, name: str) -> bool:
  return storage.path(os.path.join(folder, name)).exists()


def _entry(config) -> str:
  return os.path.join(cache_root(config), f"{config.data.name.replace(':', '_')}-{cache_key(config)}")


def _prepared_before(config) -> str:
  """Under several processes the cache entry must exist already, and every process must see it:
  building it here would train an image tokenizer per process (each with its own codes), and
  training one in process 0 alone runs Orbax collectives the others are not part of."""
  data_dir = os.path.join(_entry(config), "data")
  if not _exists(data_dir, "meta.json"):
    raise ConfigError(
        f"process {jax.process_index()} of {jax.process_count()} finds no prepared data at {data_dir}. "
        "A multi-process run does not build the data cache: prepare first (python -m "
        "synergen_jax.prepare --out DIR, or launch/tpu_pod.sh prepare) and pass --config.data.path=DIR, "
        "or run the same command once as a single process on a file system every process sees "
        "(config.data.cache_dir or $SYNERGEN_CACHE)")
  return data_dir


def _ensure_prepared_here(config) -> str:
  entry = _entry(config)
  data_dir = os.path.join(entry, "data")
  if _exists(data_dir, "meta.json"):
    return data_dir
  vq_dir = config.vq.workdir or os.path.join(entry, "vq")
  if not _exists(vq_dir, "vq_config.json"):
    print(f"train: no image tokenizer for this config yet; training one into {vq_dir}", flush=True)
    vq_training.train(config, vq_dir)
  print(f"train: preparing {config.data.name} into {data_dir}", flush=True)
  tokenizer = ImageTokenizer.load(vq_dir, config.vq.encode_batch)
  if storage.is_remote(data_dir):
    # No folder rename on a bucket; none needed: meta.json, written last and whole, marks a finished
    # prepare, and a rerun after a cut-off one writes only the missing parts.
    meta = prepare(config, data_dir, tokenizer)
  else:
    meta = prepare(config, data_dir + ".tmp", tokenizer)
    os.replace(data_dir + ".tmp", data_dir)   # a cut-off prepare is never mistaken for a finished one
  print(f"train: {meta['splits']['train']['examples']} training examples, skipped {meta['skipped']}")
  return data_dir


def with_prepared_data(config):
  """The config the model is built from: data.path set to the prepared data (built if needed), the
  new-token ids (<boi>, <eoi>, <UNCOND>) taken from its tokenizer unless the config names them, and
  the per-row budgets the config leaves None derived from its index (data/budgets.py).

  Under config.data.mixture nothing is prepared and data.path stays unset: the ids come from the
  components' meta.json files, which must agree (data/mixture.py), so a mismatch fails here, before
  any device work."""
  components = mixture.parse_mixture(config.data)
  if components:
    special = mixture.shared_meta(components)["special"]
    config = config.copy_and_resolve_references()
  else:
    data_dir = ensure_prepared(config)
    config = config.copy_and_resolve_references()
    special = mixture.read_meta(data_dir)["special"]
    config.data.path = data_dir
  if not config.model.new_tokens:
    config.model.new_tokens = (special["boi"], special["eoi"], special["uncond"])
  return resolve_budgets(config)
