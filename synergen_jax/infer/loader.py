"""A trained workdir -> everything inference needs: config, parameters, tokenizers, decoder.

The workdir's `config.json` (written by the trainer) rebuilds the model; the latest complete Orbax
checkpoint gives the parameters (placed on one device: the inference CLIs run on one host); the
prepared data directory named in the config gives the text tokenizer and special ids, and the image
tokenizer sits beside it (`<cache entry>/vq`) unless `config.vq.workdir` names one. Each file is
checked against what the data was prepared with, so a swapped tokenizer fails loudly.

A workdir written by `convert.hf_import` has no prepared data: its text tokenizer is the imported
tokenizer in `hf_files` (tokenizer.model or tokenizer.json) when there is one (else there is none:
`score` takes ids), and its image tokenizer is the one `config.vq.workdir` names.

The workdir (and the prepared data it names) may be a bucket path (gs://...): its small files are read
through etils.epath, its checkpoint by Orbax, which reads buckets itself.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os

import jax
import jax.numpy as jnp
import ml_collections

from synergen_jax.core import batch as batch_lib
from synergen_jax.core import storage

from synergen_jax.core.config import validate_config
from synergen_jax.core.errors import DataError
from synergen_jax.data.layout import SpecialTokens
from synergen_jax.data.mixture import parse_mixture
from synergen_jax.data.tokenizers import TextTokenizer, saved_tokenizer
from synergen_jax.infer.decode import Decoder
from synergen_jax.model.synergen_vl import SynerGenVL
from synergen_jax.parallel.mesh import make_mesh
from synergen_jax.parallel.sharding import mesh_shardings
from synergen_jax.train import checkpoint
from synergen_jax.train.checkpoint import HF_FILES, IMPORT_RECORD
from synergen_jax.vq.tokenizer import ImageTokenizer


@dataclasses.dataclass
class Loaded:
  workdir: str
  config: ml_collections.ConfigDict
  mc: object                      # ModelConfig
  params: dict                    # {"params": ...}
  step: int
  meta: dict
  text_tokenizer: TextTokenizer | None
  mesh: object = None             # jax.sharding.Mesh the decoder runs under (None: one device)

  @property
  def special(self) -> SpecialTokens:
    return self.tokenizer().special

  def tokenizer(self) -> TextTokenizer:
    if self.text_tokenizer is None:
      raise DataError(f"{self.workdir} has no text tokenizer (an import whose hf_files hold neither "
                      "tokenizer.model nor tokenizer.json); pass token ids, or train on prepared "
                      "data first")
    return self.text_tokenizer

  @functools.cached_property
  def decoder(self) -> Decoder:
    return Decoder(self.mc, self.params, self.special, self.mesh)

  @functools.cached_property
  def image_tokenizer(self) -> ImageTokenizer:
    data_dir = prepared_dir(self.config)
    vq_dir = self.image_tokenizer_dir()
    tok = ImageTokenizer.load(vq_dir)
    if "image_tokenizer" in self.meta and tok.fingerprint != self.meta["image_tokenizer"]:
      raise DataError(f"image tokenizer in {vq_dir} ({tok.fingerprint}) is not the one {data_dir} was "
                      f"prepared with ({self.meta['image_tokenizer']}); set --config.vq.workdir")
    return tok

  def image_tokenizer_dir(self) -> str:
    """The image tokenizer's workdir: config.vq.workdir, else `vq` beside the prepared data."""
    data_dir = prepared_dir(self.config)
    if not data_dir and not self.config.vq.workdir:
      raise DataError(f"{self.workdir} names no image tokenizer (an imported LLM): set "
                      "config.vq.workdir in its config.json to a trained or imported tokenizer")
    return self.config.vq.workdir or os.fspath(storage.path(data_dir).parent / "vq")

  def encode_text(self, text: str) -> list[int]:
    return self.tokenizer().encode(text)


def _imported_tokenizer(workdir: str, config) -> TextTokenizer | None:
  """The import's tokenizer (hf_files: tokenizer.model or tokenizer.json), None without one."""
  folder = storage.path(workdir) / HF_FILES
  if not saved_tokenizer(os.fspath(folder)):
    return None
  return TextTokenizer.load(os.fspath(folder), config.data.reserved_tokens)


def prepared_dir(config) -> str | None:
  """config.data.path, else a mixture's first component: the components share their tokenizers
  (data/mixture.py checks it), so any one of them serves inference."""
  components = parse_mixture(config.data)
  return config.data.path or (components[0].path if components else None)


def local_mesh(fsdp: int = 1) -> jax.sharding.Mesh:
  """This process's devices as a (data, fsdp) mesh for inference: prompt rows split over all of them,
  parameters sharded over `fsdp` of them (1: a full copy on each). No collective crosses processes,
  so every process of a job decodes its own share independently."""
  devices = jax.local_devices()
  if len(devices) % fsdp:
    raise ValueError(f"fsdp={fsdp} does not divide this process's {len(devices)} devices")
  return make_mesh(dict(data=-1, fsdp=fsdp, tensor=1), devices)


def _place(params, mc, mesh):
  boxed = jax.eval_shape(SynerGenVL(mc).init, jax.random.key(0), batch_lib.zeros(1, 8, mc.fold_ratio, jnp))
  return jax.device_put(params, mesh_shardings(boxed, mesh))


def load(workdir: str, mesh: jax.sharding.Mesh | None = None) -> Loaded:
  """`mesh` (e.g. local_mesh()): parameters placed on it by the sharding rules, and decoding runs
  on all its devices."""
  loaded = _load(workdir)
  if mesh is not None:
    loaded.params, loaded.mesh = _place(loaded.params, loaded.mc, mesh), mesh
  return loaded


def _load(workdir: str) -> Loaded:
  storage.check_reachable(workdir, "--workdir")   # a missing bucket: one clear error
  config = checkpoint.read_config(workdir)
  mc = validate_config(config)
  data_dir = prepared_dir(config)
  if not data_dir and (storage.path(workdir) / IMPORT_RECORD).exists():
    params, step = checkpoint.restore_on_device(workdir, mc)
    return Loaded(workdir, config, mc, params, step, {}, _imported_tokenizer(workdir, config))
  meta_file = storage.path(data_dir, "data.path") / "meta.json" if data_dir else None
  if meta_file is None or not meta_file.exists():
    raise DataError(f"{workdir}/config.json names data.path={data_dir!r}, which holds no meta.json; "
                    "the prepared data (and its tokenizers) must be where training left them")
  meta = json.loads(meta_file.read_text())
  text_tok = TextTokenizer.load(os.fspath(meta_file.parent), config.data.reserved_tokens)
  if text_tok.fingerprint != meta["text_tokenizer"]:
    raise DataError(f"{data_dir}'s tokenizer does not match meta.json's text_tokenizer "
                    f"({text_tok.fingerprint} != {meta['text_tokenizer']})")

  params, step = checkpoint.restore_on_device(workdir, mc)
  return Loaded(workdir, config, mc, params, step, meta, text_tok)

