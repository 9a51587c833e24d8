"""SentencePiece text tokenizer with the sequence format's special pieces (tokenizer.json: test_bpe.py)."""

import io
import json

import pytest
import sentencepiece as spm

from synergen_jax.data import sources
from synergen_jax.core.errors import DataError
from synergen_jax.data.tokenizers import (SPECIAL_PIECES, SentencePieceTokenizer, TextTokenizer,
                                          rewrite_pieces, train_sentencepiece)

CAPTIONS = [sources.class_caption(sources.DIGIT_NAMES, i % 10, i) for i in range(300)]


@pytest.fixture(scope="module")
def trained():
  return SentencePieceTokenizer(train_sentencepiece(CAPTIONS, 128, reserved=4,
                                           seed_sentences=["Generate an image of:", "Here is a random image"]), reserved=4)


def test_trained_model_holds_every_special_piece(trained):
  ids = [getattr(trained.special, f) for f in SPECIAL_PIECES]
  assert len(set(ids)) == len(ids) and max(ids) < trained.vocab_size
  assert trained.appended == []                          # all inside the SentencePiece vocabulary
  assert trained.vocab_size <= 128
  for i in range(4):
    assert trained.encode(f"<extra_{i}>") == [trained.sp.piece_to_id(f"<extra_{i}>")]


def test_round_trip_and_special_pieces_in_text(trained):
  for caption in CAPTIONS[:30]:
    assert trained.decode(trained.encode(caption)) == caption
  ids = trained.encode("Here is a random image <UNCOND>: a seven")
  assert ids.count(trained.special.uncond) == 1
  assert trained.special.bos not in ids and trained.special.eos not in ids
  assert trained.decode(ids).replace(" ", "") == "Hereisarandomimage:aseven"


def test_load_from_file_keeps_ids_and_fingerprint(trained, tmp_path):
  path = tmp_path / "t.model"
  path.write_bytes(trained.proto)
  loaded = TextTokenizer.load(str(path), reserved=4)
  assert loaded.fingerprint == trained.fingerprint and loaded.special == trained.special
  assert loaded.encode(CAPTIONS[5]) == trained.encode(CAPTIONS[5])
  with pytest.raises(DataError, match="cannot load SentencePiece model"):
    TextTokenizer.load(str(tmp_path / "missing.model"))


def test_trained_model_is_used_as_it_is(trained):
  """A model made for the format (the demo's) keeps its bytes: nothing reused, appended or renamed,
  and no chat pieces it does not have."""
  again = SentencePieceTokenizer(trained.proto, reserved=4)
  assert again.proto == trained.proto and again.reused == {} and again.appended == []
  assert "<|im_start|>" not in trained.pieces and trained.vocab_size == trained.sp.get_piece_size()


def stock_model(vocab_size: int = 60, **kw) -> bytes:
  out = io.BytesIO()
  spm.SentencePieceTrainer.train(sentence_iterator=iter(CAPTIONS), model_writer=out, vocab_size=vocab_size,
                                 model_type="bpe", minloglevel=2, hard_vocab_limit=False, **kw)
  return out.getvalue()


def release_model(unused: list[str], **kw) -> bytes:
  """A stock model with a release's unused pieces on its top ids, as InternLM2 ships them."""
  return rewrite_pieces(stock_model(**kw), {}, unused)


def test_foreign_model_gets_missing_pieces_appended():
  """A stock model (no <boi>/<eoi>/<UNCOND>, no pad, no unused tokens) keeps its ids; the missing
  pieces follow it, and are pieces of the model it writes (so that model loads back alone)."""
  proto = stock_model()
  sp = spm.SentencePieceProcessor(model_proto=proto)
  tok = SentencePieceTokenizer(proto, reserved=2)
  size = sp.get_piece_size()
  assert tok.special.bos == sp.bos_id() and tok.special.eos == sp.eos_id()
  assert tok.appended == ["<pad>", "<boi>", "<eoi>", "<UNCOND>", "<extra_0>", "<extra_1>",
                          "<|im_start|>", "<|im_end|>"]
  assert (tok.special.pad, tok.special.boi, tok.special.eoi, tok.special.uncond) == (
      size, size + 1, size + 2, size + 3)
  assert tok.vocab_size == size + 8 and tok.release_size == size
  assert tok.encode("a three") == sp.encode("a three")
  ids = tok.encode("<boi> <extra_1>")
  assert ids == [size + 1, size + 5] and tok.decode(ids) == "<extra_1>"
  written = spm.SentencePieceProcessor(model_proto=tok.proto)
  assert [written.id_to_piece(i) for i in range(size)] == [sp.id_to_piece(i) for i in range(size)]
  assert [written.id_to_piece(size + i) for i in range(8)] == tok.appended
  again = SentencePieceTokenizer(tok.proto, reserved=2)
  assert (again.fingerprint, again.special, again.pieces) == (tok.fingerprint, tok.special, tok.pieces)


def write_hf_folder(path, proto: bytes, added: dict[str, int]) -> None:
  """tokenizer.model + tokenizer_config.json (added_tokens_decoder) + special_tokens_map.json."""
  path.mkdir(parents=True, exist_ok=True)
  (path / "tokenizer.model").write_bytes(proto)
  decoder = {str(i): {"content": c, "special": True} for c, i in added.items()}
  (path / "tokenizer_config.json").write_text(json.dumps(dict(
      added_tokens_decoder=decoder, bos_token="<s>", eos_token="</s>", pad_token="</s>")))
  (path / "special_tokens_map.json").write_text(json.dumps(dict(bos_token="<s>", eos_token="</s>")))


def internlm2_like(n_unused: int):
  """(model proto, added tokens): n_unused [UNUSED_TOKEN_i] pieces on the top ids, the last two of
  them <|im_end|> / <|im_start|> for transformers, as in InternLM2's release."""
  proto = release_model([f"[UNUSED_TOKEN_{i + 1}]" for i in range(n_unused)], pad_id=-1, unk_id=0,
                        bos_id=1, eos_id=2)
  size = spm.SentencePieceProcessor(model_proto=proto).get_piece_size()
  return proto, {"<unk>": 0, "<s>": 1, "</s>": 2, "<|im_end|>": size - 2, "<|im_start|>": size - 1}


def test_hf_folder_reuses_the_release_tokens(tmp_path):
  """InternLM2-style: chat pieces are its added tokens, every other named piece one of its unused
  tokens (lowest first), nothing is appended, and the written model loads back to the same ids."""
  proto, added = internlm2_like(16)
  size = spm.SentencePieceProcessor(model_proto=proto).get_piece_size()
  write_hf_folder(tmp_path / "hf", proto, added)
  tok = TextTokenizer.load(str(tmp_path / "hf"), reserved=4)
  first_unused = size - 16
  assert tok.vocab_size == tok.release_size == size and tok.appended == []
  names = ["<pad>", "<boi>", "<eoi>", "<UNCOND>", "<extra_0>", "<extra_1>", "<extra_2>", "<extra_3>"]
  assert tok.reused == {n: first_unused + i for i, n in enumerate(names)}
  assert (tok.special.bos, tok.special.eos, tok.special.pad) == (1, 2, first_unused)
  assert tok.pieces["<|im_start|>"] == size - 1 and tok.pieces["<|im_end|>"] == size - 2
  chat = "<|im_start|>user\na three<|im_end|>\n<|im_start|>assistant\n<boi><eoi><|im_end|>"
  ids = tok.encode(chat)
  assert [i for i in ids if i >= first_unused] == [size - 1, size - 2, size - 1, tok.special.boi,
                                                   tok.special.eoi, size - 2]
  assert tok.decode(ids).replace(" ", "") == "<|im_start|>userathree<|im_end|><|im_start|>assistant<|im_end|>"
  # The same folder through its tokenizer.model, and the model prepare writes, loaded alone.
  via_file = TextTokenizer.load(str(tmp_path / "hf" / "tokenizer.model"), reserved=4)
  (tmp_path / "written.model").write_bytes(tok.proto)
  alone = TextTokenizer.load(str(tmp_path / "written.model"), reserved=4)
  for other in (via_file, alone):
    assert (other.fingerprint, other.special, other.pieces, other.vocab_size) == (
        tok.fingerprint, tok.special, tok.pieces, tok.vocab_size)
    assert other.encode(chat) == ids
  written = spm.SentencePieceProcessor(model_proto=tok.proto)
  assert written.id_to_piece(size - 1) == "<|im_start|>" and written.id_to_piece(first_unused) == "<pad>"
  assert written.id_to_piece(first_unused + 8) == "[UNUSED_TOKEN_9]"     # still free


def test_too_few_unused_tokens_append_the_rest(tmp_path):
  proto, added = internlm2_like(5)                      # 2 are chat pieces: 3 left to reuse
  size = spm.SentencePieceProcessor(model_proto=proto).get_piece_size()
  write_hf_folder(tmp_path / "hf", proto, added)
  tok = TextTokenizer.load(str(tmp_path / "hf"), reserved=2)
  assert tok.reused == {"<pad>": size - 5, "<boi>": size - 4, "<eoi>": size - 3}
  assert tok.appended == ["<UNCOND>", "<extra_0>", "<extra_1>"]
  assert (tok.special.uncond, tok.pieces["<extra_1>"]) == (size, size + 2)
  assert tok.vocab_size == size + 3 and tok.release_size == size
  alone = SentencePieceTokenizer(tok.proto, reserved=2)
  assert (alone.fingerprint, alone.pieces) == (tok.fingerprint, tok.pieces)


@pytest.mark.parametrize("unused", ["<|reserved_special_token_{}|>", "<unused{}>", "[unused{}]"])
def test_other_releases_unused_names_are_reused(unused):
  proto = release_model([unused.format(i) for i in range(12)])
  tok = SentencePieceTokenizer(proto, reserved=4)
  assert tok.appended == [] and len(tok.reused) == 10    # 8 named pieces + the two chat pieces
  assert SentencePieceTokenizer(proto, reserved=4, unused="").reused == {}   # the pattern is a parameter


def test_added_tokens_after_the_model_keep_their_ids(tmp_path):
  """added_tokens.json ids after the SentencePiece pieces (e.g. tokens a fine-tune added) stay where
  the release put them; our appended pieces come after them; a gap is refused."""
  proto = stock_model()
  size = spm.SentencePieceProcessor(model_proto=proto).get_piece_size()
  (tmp_path / "tokenizer.model").write_bytes(proto)
  (tmp_path / "added_tokens.json").write_text(json.dumps({"<img>": size, "</img>": size + 1}))
  tok = TextTokenizer.load(str(tmp_path), reserved=0)
  assert tok.release_size == size + 2 and tok.special.pad == size + 2
  ids = tok.encode("a three <img> four</img>")
  assert ids.count(size) == ids.count(size + 1) == 1 and tok.decode(ids) == "a three <img> four</img>"
  (tmp_path / "added_tokens.json").write_text(json.dumps({"<img>": size + 1}))
  with pytest.raises(DataError, match="without gaps"):
    TextTokenizer.load(str(tmp_path / "tokenizer.model"))


def test_folder_without_a_tokenizer_is_an_error(tmp_path):
  (tmp_path / "tokenizer_config.json").write_text("{}")
  with pytest.raises(DataError, match="neither tokenizer.model .SentencePiece. nor tokenizer.json"):
    TextTokenizer.load(str(tmp_path))


def test_saved_folder_loads_back_and_replaces_another_backend(trained, tmp_path):
  """save() writes what the folder loads back from, and removes a stale tokenizer.json /
  tokenizer_config.json there (prepare reusing an output folder), which would otherwise be read."""
  (tmp_path / "tokenizer.json").write_text("{}")
  (tmp_path / "tokenizer_config.json").write_text('{"added_tokens_decoder": {"5": {"content": "x"}}}')
  trained.save(str(tmp_path))
  assert sorted(p.name for p in tmp_path.iterdir()) == ["tokenizer.model"]
  again = TextTokenizer.load(str(tmp_path), reserved=4)
  assert (again.fingerprint, again.pieces, again.backend) == (trained.fingerprint, trained.pieces,
                                                              "sentencepiece")


def test_empty_corpus_is_an_error():
  with pytest.raises(DataError, match="no non-empty sentences"):
    train_sentencepiece(["", "  "], 64)
