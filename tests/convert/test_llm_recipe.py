"""The "starting from pretrained weights" recipe of docs/weights.md, walked with a tiny
InternLM2-like release.

The release is what InternLM2 ships, shrunk: weights under InternLM2's names (packed wqkv, the way
test_hf_convert builds them), a SentencePiece tokenizer.model whose top ids are `[UNUSED_TOKEN_n]`
pieces, and a tokenizer_config.json whose added tokens name the last two `<|im_end|>` and
`<|im_start|>`. Then, as a user would: import -> prepare (with the import's tokenizer folder) ->
train with init_from the import -> sample, with no vocabulary size set by hand. A second release
with too few unused tokens checks that exactly the missing rows are appended, and that a config
which does not follow is refused with the number to use.
"""

from __future__ import annotations

import io
import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image as PILImage

torch = pytest.importorskip("torch", reason="needs the hf extra: pip install -e '.[hf]'")
import sentencepiece as spm  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402

from helpers import tiny  # noqa: E402
from synergen_jax.core import batch as batch_lib  # noqa: E402
from test_hf_convert import random_hf_model, save_internlm2  # noqa: E402
from synergen_jax.core.config import validate_config  # noqa: E402
from synergen_jax.core.errors import ConfigError, DataError  # noqa: E402
from synergen_jax.convert.importer import import_checkpoint  # noqa: E402
from synergen_jax.convert.vq_weights import write_tokenizer  # noqa: E402
from synergen_jax.data import sources  # noqa: E402
from synergen_jax.prepare.cache import with_prepared_data  # noqa: E402
from synergen_jax.data.pipeline import make_iterator  # noqa: E402
from synergen_jax.data.tokenizers import TextTokenizer, rewrite_pieces  # noqa: E402
from synergen_jax.prepare.writer import prepare  # noqa: E402
from synergen_jax.infer import loader, tasks  # noqa: E402
from synergen_jax.model.losses import synergen_loss  # noqa: E402
from synergen_jax.model.synergen_vl import SynerGenVL  # noqa: E402
from synergen_jax.parallel.mesh import make_mesh  # noqa: E402
from synergen_jax.train.checkpoint import read_config  # noqa: E402
from synergen_jax.train.loop import train  # noqa: E402
from synergen_jax.vq import autoencoder as vq  # noqa: E402
from synergen_jax.vq.tokenizer import ImageTokenizer, abstract_params  # noqa: E402

# Short prompts: the tiny model's rows are 32 slots.
PROMPTS = dict(caption_prompt="what is it", generation_prompt="draw", uncond_prompt="draw <UNCOND>")
CAPTIONS = [sources.class_caption(sources.DIGIT_NAMES, i % 10, i) for i in range(32)]
RESERVED = 8       # configs' data.reserved_tokens: <pad> <boi> <eoi> <UNCOND> + 8 <extra_i> to place
ONE_DEVICE = jax.devices()[:1]   # the recipe, not the mesh, is under test: one device compiles fastest


def release_tokenizer_model(rows: int | None = None, unused: int | None = None) -> bytes:
  """A BPE model of the captions and prompts followed by [UNUSED_TOKEN_i] pieces: `unused` of them,
  or as many as fill it up to `rows` ids (InternLM2's layout otherwise: no pad, <unk> <s> </s> at
  0-2)."""
  out = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(CAPTIONS * 4 + ["what is it", "draw"]), model_writer=out, vocab_size=40,
      model_type="bpe", hard_vocab_limit=False, pad_id=-1, unk_id=0, bos_id=1, eos_id=2,
      minloglevel=2, num_threads=1)
  base = spm.SentencePieceProcessor(model_proto=out.getvalue()).get_piece_size()
  unused = rows - base if unused is None else unused
  proto = rewrite_pieces(out.getvalue(), {}, [f"[UNUSED_TOKEN_{i + 1}]" for i in range(unused)])
  sp = spm.SentencePieceProcessor(model_proto=proto)       # SentencePiece itself reads them there
  assert sp.id_to_piece(base + unused - 1) == f"[UNUSED_TOKEN_{unused}]"
  return proto


def write_release(path, seed: int, **size) -> dict:
  """An InternLM2-like HF folder (see release_tokenizer_model for `size`); returns what the test
  compares with."""
  proto = release_tokenizer_model(**size)
  sp = spm.SentencePieceProcessor(model_proto=proto)
  rows = sp.get_piece_size()
  unused = sum(sp.id_to_piece(i).startswith("[UNUSED_TOKEN_") for i in range(rows))
  model = random_hf_model("llama", seed=seed, vocab_size=rows)
  save_internlm2(model, str(path))
  (path / "tokenizer.model").write_bytes(proto)
  added = {"0": "<unk>", "1": "<s>", "2": "</s>", str(rows - 2): "<|im_end|>", str(rows - 1): "<|im_start|>"}
  (path / "tokenizer_config.json").write_text(json.dumps(dict(
      tokenizer_class="InternLM2Tokenizer", bos_token="<s>", eos_token="</s>", pad_token="</s>",
      added_tokens_decoder={i: dict(content=c, special=True) for i, c in added.items()})))
  (path / "special_tokens_map.json").write_text(json.dumps(dict(bos_token="<s>", eos_token="</s>")))
  return dict(model=model, weights=load_file(str(path / "model.safetensors")), rows=rows,
              unused=unused, first_unused=rows - unused)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
  """An image tokenizer (random, tiny config's shape) and a JSONL caption dataset."""
  root = tmp_path_factory.mktemp("recipe")
  config, _ = tiny()
  vq_config = vq.VQConfig.from_config(config)
  rng = np.random.default_rng(0)
  # Random weights of the right shapes (what it encodes to does not matter here; no init to run).
  params = jax.tree.map(lambda s: (0.3 * rng.standard_normal(s.shape)).astype(np.float32),
                        abstract_params("synergen", vq_config))
  write_tokenizer(str(root / "vq"), vq_config, params, image_fit="resize", background=0,
                  source="random")
  lines = []
  for i, caption in enumerate(CAPTIONS):
    PILImage.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(root / f"{i}.png")
    lines.append(json.dumps({"image": f"{i}.png", "text": caption}))
  (root / "data.jsonl").write_text("\n".join(lines))
  return dict(root=root, vq_dir=str(root / "vq"), jsonl=str(root / "data.jsonl"),
              image_tokenizer=ImageTokenizer.load(str(root / "vq")))


def recipe_config(inputs, imported: str):
  """configs/tiny.py as the docs/weights.md recipe sets it: the import's tokenizer folder, its init_from."""
  config, _ = tiny()
  config.data.update(name="jsonl", path=inputs["jsonl"], eval_count=4, tokenizer=f"{imported}/hf_files",
                     **PROMPTS)
  config.data.tasks.interleaved = 0.0
  config.vq.workdir = inputs["vq_dir"]
  # Runs stop after 2 of 3 steps: no end-of-run held-out pass to compile.
  config.train.update(steps=3, batch_size=8, log_every=1, checkpoint_every=2, init_from=imported)
  assert config.data.reserved_tokens == RESERVED
  return config


def test_recipe_reuses_internlm2s_unused_tokens(inputs, tmp_path):
  """Enough unused tokens (as in InternLM2): the vocabulary keeps the release's size end to end."""
  release = write_release(tmp_path / "internlm2", seed=1, rows=64)   # tiny's text_vocab, as 2b's is 92,544
  first, rows = release["first_unused"], release["rows"]
  assert release["unused"] >= 2 + 4 + RESERVED            # chat + <pad> <boi> <eoi> <UNCOND> + extras
  imported = str(tmp_path / "ckpt")
  record = import_checkpoint(str(tmp_path / "internlm2"), imported, recipe_config(inputs, imported))

  # Import: every named piece on the release's own or unused tokens; no row appended.
  tok = record["text_tokenizer"]
  assert record["text_vocab"] == rows and record["extra_tokens"] == 0 and tok["appended"] == []
  assert tok["pieces"]["<|im_start|>"] == rows - 1 and tok["pieces"]["<|im_end|>"] == rows - 2
  assert tok["special"]["bos"] == 1 and tok["special"]["eos"] == 2
  assert sorted(tok["reused"].values()) == list(range(first, first + 4 + RESERVED))
  assert {tok["special"][f] for f in ("pad", "boi", "eoi", "uncond")} <= set(tok["reused"].values())
  params = loader.load(imported).params["params"]
  np.testing.assert_array_equal(params["text_embed"]["embedding"],
                                release["weights"]["model.tok_embeddings.weight"])
  np.testing.assert_array_equal(params["lm_head"]["kernel"], release["weights"]["output.weight"].T)

  # Prepare with the import's tokenizer folder: the same ids, the same vocabulary.
  config = recipe_config(inputs, imported)
  data_dir = str(tmp_path / "prepared")
  meta = prepare(config, data_dir, inputs["image_tokenizer"])
  assert (meta["text_vocab"], meta["special"], meta["text_tokenizer"]) == (
      rows, tok["special"], tok["fingerprint"])
  text = TextTokenizer.load(f"{data_dir}/tokenizer.model", RESERVED)     # what sample will read
  assert text.fingerprint == tok["fingerprint"]
  chat = "<|im_start|>user\nwhat is it<|im_end|>\n<|im_start|>assistant\na three<|im_end|>\n"
  ids = text.encode(chat)
  assert [i for i in ids if i >= first] == [rows - 1, rows - 2, rows - 1, rows - 2]
  assert ids == TextTokenizer.load(f"{imported}/hf_files", RESERVED).encode(chat)

  # Train from the import: step 0's loss is the imported model's loss on the first batch, with the
  # <boi> <eoi> <UNCOND> rows the run adds (fresh, from its seed: train/checkpoint.MAY_BE_FRESH).
  config.data.path = data_dir
  result = train(config, str(tmp_path / "run"), stop_after=2, devices=ONE_DEVICE)
  resolved = with_prepared_data(config)
  mc = validate_config(resolved)
  assert mc.new_tokens == (tok["special"]["boi"], tok["special"]["eoi"], tok["special"]["uncond"])
  model = SynerGenVL(mc)
  fresh = jax.jit(lambda: {k: v for k, v in nn.unbox(model.init(
      jax.random.key(resolved.train.seed), batch_lib.zeros(1, 8, mc.fold_ratio, jnp)))["params"].items()
      if k.startswith("new_token_")})()
  start = {"params": {**params, **fresh}}
  batch = jax.device_get(next(make_iterator(resolved, mesh=make_mesh(resolved.mesh, ONE_DEVICE))))
  want = jax.jit(lambda p, b: synergen_loss(model.apply(p, b), resolved.loss.image_weight)[0])(
      start, batch)
  np.testing.assert_allclose(result["losses"][1], float(want), rtol=1e-5)
  trained = jax.device_get(result["state"]["params"])["params"]
  for frozen in ("text_embed", "lm_head"):                        # stage 1 keeps the LLM's text weights
    jax.tree.map(np.testing.assert_array_equal, trained[frozen], params[frozen])
  assert not np.array_equal(trained["new_token_embed"], fresh["new_token_embed"])   # it trains these

  # Sample from the run: images for a prompt (CFG's second stream is the <UNCOND> prompt, on its
  # reused id) and a caption of them, through the tokenizer prepare wrote.
  run = loader.load(str(tmp_path / "run"))
  assert run.special == text.special and run.mc.text_vocab == rows
  assert tok["special"]["uncond"] in run.encode_text(run.config.data.uncond_prompt)
  codes = tasks.generate_codes(run, ["a three"], cfg_scale=2.0, batch_size=1)
  assert codes.shape == (1, 4, 4) and 0 <= codes.min() and codes.max() < run.mc.codebook_size
  caption = tasks.caption(run, [list(codes)], max_new_tokens=3)[0]
  assert not any(p in caption for p in ("<boi>", "<eoi>", "<UNCOND>", "<pad>"))   # specials dropped


def test_recipe_appends_what_the_release_cannot_hold(inputs, tmp_path):
  """Five unused tokens, two of them chat pieces: three named pieces are reused, the other nine
  get new rows (the mean pretrained row); prepare agrees, and a training config that keeps the
  release's size is refused with the size to set."""
  release = write_release(tmp_path / "small", seed=2, unused=5)
  rows, first = release["rows"], release["first_unused"]
  assert release["unused"] < 2 + 4 + RESERVED
  imported = str(tmp_path / "ckpt")
  record = import_checkpoint(str(tmp_path / "small"), imported, recipe_config(inputs, imported))
  tok = record["text_tokenizer"]
  need = 4 + RESERVED - (release["unused"] - 2)
  assert list(tok["reused"].values()) == list(range(first, rows - 2))
  assert len(tok["appended"]) == need and record["text_vocab"] == rows + need == tok["vocab_size"]
  assert read_config(imported).model.text_vocab == rows + need
  table = loader.load(imported).params["params"]["text_embed"]["embedding"]
  original = release["weights"]["model.tok_embeddings.weight"]
  np.testing.assert_array_equal(table[:rows], original)
  np.testing.assert_allclose(table[rows:], np.repeat(original.mean(0, keepdims=True), need, 0), rtol=1e-6)

  config = recipe_config(inputs, imported)
  config.model.text_vocab = rows                      # the release's size, as a config file has it
  with pytest.raises(DataError, match=f"at least {rows + need}"):
    prepare(config, str(tmp_path / "refused"), inputs["image_tokenizer"])
  config.model.text_vocab = 64                        # tiny's own size: room for the ids, other rows
  meta = prepare(config, str(tmp_path / "prepared"), inputs["image_tokenizer"])
  assert (meta["text_vocab"], meta["special"], meta["text_tokenizer"]) == (
      rows + need, tok["special"], tok["fingerprint"])
  config.data.path = str(tmp_path / "prepared")
  with pytest.raises(ConfigError, match=rf"\b{rows + need}\b"):
    train(config, str(tmp_path / "run"), stop_after=0, devices=ONE_DEVICE)
