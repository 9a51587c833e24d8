"""SentencePiece text tokenizer with the sequence format's special pieces."""

import io

import pytest
import sentencepiece as spm

from synergen_jax.data import sources
from synergen_jax.data.errors import DataError
from synergen_jax.data.tokenizers import SPECIAL_PIECES, TextTokenizer, train_sentencepiece

CAPTIONS = [sources.class_caption(sources.DIGIT_NAMES, i % 10, i) for i in range(300)]


@pytest.fixture(scope="module")
def trained():
  return TextTokenizer(train_sentencepiece(CAPTIONS, 128, reserved=4,
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


def test_foreign_model_gets_missing_pieces_appended():
  """A stock model (no <boi>/<eoi>/<UNCOND>, no pad) keeps its ids; the missing pieces follow it."""
  out = io.BytesIO()
  spm.SentencePieceTrainer.train(sentence_iterator=iter(CAPTIONS), model_writer=out, vocab_size=60,
                                 model_type="bpe", minloglevel=2, hard_vocab_limit=False)
  sp = spm.SentencePieceProcessor(model_proto=out.getvalue())
  tok = TextTokenizer(out.getvalue(), reserved=2)
  size = sp.get_piece_size()
  assert tok.special.bos == sp.bos_id() and tok.special.eos == sp.eos_id()
  assert tok.appended == ["<pad>", "<boi>", "<eoi>", "<UNCOND>", "<extra_0>", "<extra_1>"]
  assert (tok.special.pad, tok.special.boi, tok.special.eoi, tok.special.uncond) == (
      size, size + 1, size + 2, size + 3)
  assert tok.vocab_size == size + 6
  assert tok.encode("a three") == sp.encode("a three")
  ids = tok.encode("<boi> <extra_1>")
  assert ids == [size + 1, size + 5] and tok.decode(ids) == "<extra_1>"


def test_empty_corpus_is_an_error():
  with pytest.raises(DataError, match="no non-empty sentences"):
    train_sentencepiece(["", "  "], 64)
