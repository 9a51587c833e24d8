"""A multimodal workdir -> a folder transformers loads whole: the model with its vision experts, fold
embedding, unfold head and image head, as PyTorch remote code (convert/hf_remote/), its weights,
the run's text tokenizer with the chat template, and the image tokenizer's weights.

What the folder holds (the CLI: synergen_jax/convert/hf_export.py):

  config.json                      SynerGenVLConfig (model shape, fold, token ids) + auto_map
  configuration_synergen_vl.py     the remote code, copied from convert/hf_remote/ (model,
  modeling_synergen_vl.py          processor, SentencePiece tokenizer, image tokenizer)
  processing_synergen_vl.py
  tokenization_synergen_vl.py
  image_tokenizer_synergen_vl.py
  model.safetensors (or shards + model.safetensors.index.json)
                                   synergen_jax's parameters under their flax paths joined by ".",
                                   scanned layers unstacked to layer_i; the LM head composed as
                                   decoding uses it (tied table, new-token columns); new-token rows
                                   written into the text embedding
  tokenizer.model | tokenizer.json the run's tokenizer file (prepared data's, or the import's)
  tokenizer_config.json            special tokens, the named pieces' ids, the chat template, the
                                   AutoTokenizer class; processor_config.json: the AutoProcessor
  generation_config.json           end tokens (</s>, and <|im_end|> for a chat-trained run)
  image_tokenizer/                 the image tokenizer in a PyTorch format (convert/vq_export.py)
  export.json                      what was exported (step, dtype, fingerprints); written last

Checks run before anything is written: the config must be one the modeling code supports, the
workdir must name an image tokenizer and a text tokenizer, the output folder must be new or empty.
A local export is written to a sibling temporary folder and renamed into place when complete, so a
stopped export never looks complete; on a bucket, export.json is written last.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time

import jax
import numpy as np

from synergen_jax.core import storage
from synergen_jax.core.config import validate_config
from synergen_jax.core.errors import ConfigError, DataError
from synergen_jax.convert import vq_export
from synergen_jax.convert.exporter import _write_shards
from synergen_jax.data.tokenizers import SPECIAL_PIECES
from synergen_jax.data import formats
from synergen_jax.infer import loader as loader_lib
from synergen_jax.train.checkpoint import read_config, restore_on_device

REMOTE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hf_remote")
REMOTE_FILES = ("configuration_synergen_vl.py", "modeling_synergen_vl.py",
                "processing_synergen_vl.py", "image_tokenizer_synergen_vl.py",
                "tokenization_synergen_vl.py")
MARKER = "export.json"
# InternLM2's template as transformers renders it (formats.py is what training rendered).
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<image>"
    "{% else %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}"
    "{{ '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


def _flat(tree: dict, prefix: str = "") -> dict:
  """Dotted name -> (array, layer index or None). nn.scan's stacked layers become layer_i entries
  that point into the stacked array: nothing is sliced (copied) until it is written."""
  out = {}
  for k, v in tree.items():
    name = f"{prefix}.{k}" if prefix else k
    if isinstance(v, dict):
      if k == "layers":             # nn.scan's stacked layers -> layer_i
        stacked = _flat(v)
        n = next(iter(stacked.values()))[0].shape[0]
        for i in range(n):
          out.update({f"{prefix}.layer_{i}.{rel}": (a, i) for rel, (a, _) in stacked.items()})
      else:
        out.update(_flat(v, name))
    else:
      out[name] = (v, None)
  return out


def model_tensors(mc, params: dict, dtype=np.float32):
  """Yields (name, numpy array in `dtype`) as the PyTorch model (hf_remote) names them, one at a
  time: beside the parameters, at most one vocabulary table is held (the embedding and head tables
  are copied only to write the new-token rows in), so an export needs the model's memory plus its
  largest tensor."""
  dtype = np.dtype(dtype)
  p = params["params"] if "params" in params else params
  new = list(enumerate(mc.new_tokens))
  embed = np.asarray(p["text_embed"]["embedding"]).astype(dtype, copy=bool(new))
  for i, token in new:
    embed[token] = np.asarray(p["new_token_embed"][i]).astype(dtype)
  yield "text_embed.embedding", embed
  del embed
  if mc.tie_embeddings:
    kernel = np.ascontiguousarray(np.asarray(p["text_embed"]["embedding"]).T, dtype=dtype)
  else:
    kernel = np.asarray(p["lm_head"]["kernel"]).astype(dtype, copy=bool(new))
  for i, token in new:
    kernel[:, token] = np.asarray(p["new_token_head"][:, i]).astype(dtype)
  yield "lm_head.kernel", kernel
  del kernel
  skip = {"text_embed", "lm_head", "new_token_embed", "new_token_head"}
  for name, (value, layer) in _flat({k: v for k, v in p.items() if k not in skip}).items():
    value = np.asarray(value)          # a host view of the parameter, not a copy
    yield name, (value if layer is None else value[layer]).astype(dtype, copy=False)


def check_supported(mc) -> None:
  """What the PyTorch code does not implement, as one ConfigError before anything is written."""
  problems = []
  if mc.llm.head_dim % 2 or mc.unfold.head_dim % 2:
    problems.append("odd head_dim (rotary embeddings need it even)")
  if mc.llm.num_heads % mc.llm.num_kv_heads or mc.unfold.num_heads % mc.unfold.num_kv_heads:
    problems.append("num_heads not a multiple of num_kv_heads")
  if mc.llm.num_experts > 2:
    problems.append(f"{mc.llm.num_experts} experts (the modeling code routes text / vision)")
  if problems:
    raise ConfigError("the exported modeling code does not support this config: " + "; ".join(problems))


def hf_config(mc, config, special, dtype: str, background: int = 255, chat: bool = False) -> dict:
  u = mc.unfold
  d = config.data
  return dict(
      model_type="synergen_vl", architectures=["SynerGenVLForCausalLM"],
      auto_map={"AutoConfig": "configuration_synergen_vl.SynerGenVLConfig",
                "AutoModelForCausalLM": "modeling_synergen_vl.SynerGenVLForCausalLM",
                "AutoProcessor": "processing_synergen_vl.SynerGenVLProcessor"},
      text_vocab=mc.text_vocab, num_layers=mc.llm.num_layers, d_model=mc.llm.d_model,
      num_heads=mc.llm.num_heads, num_kv_heads=mc.llm.num_kv_heads, head_dim=mc.llm.head_dim,
      mlp_dim=mc.llm.mlp_dim, num_experts=mc.llm.num_experts, qkv_bias=mc.llm.qkv_bias,
      norm_eps=mc.llm.norm_eps, rope_theta=mc.llm.rope_theta, tie_embeddings=mc.tie_embeddings,
      new_tokens=list(mc.new_tokens), codebook_size=mc.codebook_size,
      code_embed_dim=mc.code_embed_dim, code_grid=list(mc.code_grid), fold=list(mc.fold),
      fold_mlp_hidden=mc.fold_mlp_hidden,
      unfold=dict(num_layers=u.num_layers, d_model=u.d_model, num_heads=u.num_heads,
                  num_kv_heads=u.num_kv_heads, head_dim=u.head_dim, mlp_dim=u.mlp_dim),
      special=special, generation_prompt=d.generation_prompt, uncond_prompt=d.uncond_prompt,
      caption_prompt=d.caption_prompt, torch_dtype=dtype,
      # How the processor fits an image into tiles, as prepare did (data/decoding.py FitSettings).
      image_fit=d.image_fit, background=int(background), max_tiles=int(d.max_tiles),
      thumbnail=bool(d.thumbnail), trained_on_chat=bool(chat))


def _spelling(tok, i: int, fallback: str) -> str:
  """Token `i` as the tokenizer file spells it (a BPE release keeps its own bos/eos/pad names)."""
  if tok.backend == "bpe":
    return tok.hf.id_to_token(i) or fallback
  return tok.sp.id_to_piece(i) if i < tok.sp.get_piece_size() else fallback


def tokenizer_config(tok, special: dict, chat: bool) -> dict:
  """tokenizer_config.json: every named piece an added token at its id; for a SentencePiece run our
  tokenizer class (hf_remote/tokenization_synergen_vl.py, which splits and strips as synergen_jax
  does), for a tokenizer.json run transformers' fast tokenizer over the rewritten file."""
  names = {v: k for k, v in tok.pieces.items()}
  added = {}
  for piece, i in sorted(tok.pieces.items(), key=lambda kv: kv[1]):
    added.setdefault(str(i), dict(content=_spelling(tok, i, names.get(i, piece)), special=True,
                                  lstrip=False, rstrip=False, normalized=False, single_word=False))
  spelled = {f: added[str(special[f])]["content"] for f in ("bos", "eos", "pad")}
  out = dict(add_bos_token=True, add_eos_token=False, bos_token=spelled["bos"],
             eos_token=spelled["eos"], pad_token=spelled["pad"], added_tokens_decoder=added,
             synergen_pieces=dict(tok.pieces), synergen_special=special,
             synergen_backend=tok.backend, chat_template=CHAT_TEMPLATE if chat else None,
             processor_class="SynerGenVLProcessor",
             auto_map=dict(AutoProcessor="processing_synergen_vl.SynerGenVLProcessor"))
  if tok.backend == "bpe":
    out["tokenizer_class"] = "PreTrainedTokenizerFast"
  else:
    out["tokenizer_class"] = "SynerGenVLTokenizer"
    out["auto_map"]["AutoTokenizer"] = ["tokenization_synergen_vl.SynerGenVLTokenizer", None]
  if chat:
    out["synergen_stop_ids"] = stop_ids(tok, special, chat)
  return out


def stop_ids(tok, special: dict, chat: bool) -> list[int]:
  """The ids that end an answer: </s>, and <|im_end|> for a chat-trained run."""
  ids = [special["eos"]]
  if chat and formats.ASSISTANT_END in tok.pieces:
    ids.append(tok.pieces[formats.ASSISTANT_END])
  return ids


def _image_tokenizer_files(tok, loaded, target) -> None:
  """image_tokenizer/ in the format of its family (convert/vq_export.py)."""
  meta_file = storage.path(loaded.image_tokenizer_dir()) / "vq_config.json"
  vq_export.write(tok, json.loads(meta_file.read_text()), target)


def _check_out(out: str):
  target = storage.path(out, "--out")
  storage.check_reachable(target, "--out")
  if target.exists() and any(True for _ in target.iterdir()):
    raise ConfigError(f"--out={out} is not empty; export into a new directory")
  return target


def export_full(workdir: str, out: str, *, dtype: str = "float32",
                max_shard_bytes: int = 5000 << 20) -> dict:
  """Writes the full export of `workdir` into `out` (see the module docstring); returns export.json."""
  t0 = time.time()
  if dtype not in ("float32", "bfloat16", "float16"):
    raise ConfigError(f"--dtype={dtype!r}; choose float32, bfloat16 or float16")
  final = _check_out(out)
  config = read_config(workdir)
  mc = validate_config(config)
  check_supported(mc)
  loaded = loader_lib.Loaded(workdir, config, mc, None, 0, {}, None)
  text_tok = _text_tokenizer(workdir, config, loaded)
  loaded.text_tokenizer = text_tok
  try:
    image_tok = loaded.image_tokenizer
  except (DataError, OSError, FileNotFoundError) as e:
    raise DataError(f"{workdir}: no image tokenizer to export ({e}); a full export needs one "
                    "(--text_only exports the text model alone)") from None
  # Checked: now the parameters (host memory only) and the writing.
  params, step = restore_on_device(workdir, mc, device=jax.devices("cpu")[0])
  from synergen_jax.infer import chat
  loaded.params = params
  chat_run = chat.trained_on_chat(loaded)
  special = {f: getattr(text_tok.special, f) for f in SPECIAL_PIECES}
  local = not storage.is_remote(final)
  if local:
    parent = os.path.dirname(os.path.abspath(os.fspath(final))) or "."
    os.makedirs(parent, exist_ok=True)
    work = storage.path(tempfile.mkdtemp(prefix=".export-", dir=parent))
  else:
    work = final
  try:
    out_dtype = jax.numpy.dtype(dtype)
    files = _write_shards(model_tensors(mc, params, out_dtype), work, out_dtype, max_shard_bytes)
    storage.write_text(work / "config.json", json.dumps(hf_config(
        mc, config, special, dtype, loaded.meta.get("background", 255), chat_run), indent=1))
    for name in REMOTE_FILES:
      storage.write_bytes(work / name, open(os.path.join(REMOTE_DIR, name), "rb").read())
    for name, data in text_tok.files().items():
      if name != "tokenizer_config.json":       # ours below names the run's ids and the template
        storage.write_bytes(work / name, data)
    storage.write_text(work / "tokenizer_config.json",
                       json.dumps(tokenizer_config(text_tok, special, chat_run), indent=1))
    storage.write_text(work / "processor_config.json", json.dumps(dict(
        processor_class="SynerGenVLProcessor",
        auto_map=dict(AutoProcessor="processing_synergen_vl.SynerGenVLProcessor")), indent=1))
    tok_config = tokenizer_config(text_tok, special, chat_run)
    storage.write_text(work / "special_tokens_map.json", json.dumps(
        {k: tok_config[k] for k in ("bos_token", "eos_token", "pad_token")}, indent=1))
    storage.write_text(work / "generation_config.json", json.dumps(dict(
        bos_token_id=special["bos"], pad_token_id=special["pad"],
        eos_token_id=stop_ids(text_tok, special, chat_run)), indent=1))
    _image_tokenizer_files(image_tok, loaded, work)
    record = dict(workdir=workdir, step=step, dtype=dtype, files=files, trained_on_chat=chat_run,
                  text_tokenizer=text_tok.fingerprint, image_tokenizer=image_tok.fingerprint,
                  seconds=round(time.time() - t0, 2))
    storage.write_text(work / MARKER, json.dumps(record, indent=1))
    if local:
      if final.exists():
        os.rmdir(os.fspath(final))            # empty: checked above
      os.replace(os.fspath(work), os.fspath(final))
  except BaseException:
    if local:
      shutil.rmtree(os.fspath(work), ignore_errors=True)
    raise
  return record


def _text_tokenizer(workdir: str, config, loaded):
  """The run's tokenizer: the prepared data's, else the import's; a clear error without one."""
  from synergen_jax.data.tokenizers import TextTokenizer, saved_tokenizer
  from synergen_jax.train.checkpoint import HF_FILES
  data_dir = loader_lib.prepared_dir(config)
  if data_dir:
    meta_file = storage.path(data_dir) / "meta.json"
    if meta_file.exists():
      loaded.meta = json.loads(meta_file.read_text())
      return TextTokenizer.load(os.fspath(meta_file.parent), config.data.reserved_tokens)
  folder = os.fspath(storage.path(workdir) / HF_FILES)
  if saved_tokenizer(folder):
    return TextTokenizer.load(folder, config.data.reserved_tokens)
  raise DataError(f"{workdir}: no text tokenizer (neither prepared data with meta.json at "
                  f"config.data.path={data_dir!r} nor an imported tokenizer.model / tokenizer.json "
                  "in hf_files); a full export writes the run's tokenizer")
