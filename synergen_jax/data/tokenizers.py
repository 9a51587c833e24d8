"""Text tokenizer: SentencePiece plus the sequence format's special tokens.

`TextTokenizer` wraps any SentencePiece model. Special pieces `<pad> <s> </s> <boi> <eoi> <UNCOND>`
and `reserved` extra pieces (`<extra_0>`...: room for image-size tokens later) keep the model's own
ids when it has them and are appended after its vocabulary when it does not, so a stock `.model` file
(e.g. an LLM's) works unchanged and keeps its ids. `train_sentencepiece` builds a small model from
captions, with every special piece inside the SentencePiece vocabulary.

Special pieces written inside text (`"Here is a random image <UNCOND>:"`) encode to their ids.
"""

from __future__ import annotations

import hashlib
import io
import re
from typing import Iterable, Sequence

import sentencepiece as spm

from synergen_jax.data.errors import DataError
from synergen_jax.data.layout import SpecialTokens

SPECIAL_PIECES = dict(pad="<pad>", bos="<s>", eos="</s>", boi="<boi>", eoi="<eoi>", uncond="<UNCOND>")


def extra_pieces(reserved: int) -> list[str]:
  return [f"<extra_{i}>" for i in range(reserved)]


class TextTokenizer:
  """SentencePiece + special pieces. `vocab_size` counts appended pieces; `special` holds their ids."""

  def __init__(self, model_proto: bytes, reserved: int = 0):
    self.proto = bytes(model_proto)
    self.sp = spm.SentencePieceProcessor(model_proto=self.proto)
    self.fingerprint = "sha256:" + hashlib.sha256(self.proto).hexdigest()[:16]
    size = self.sp.get_piece_size()
    own = {self.sp.id_to_piece(i): i for i in range(size)}
    # SentencePiece's own pad/bos/eos ids take precedence over piece names (models differ in spelling).
    own_ids = dict(pad=self.sp.pad_id(), bos=self.sp.bos_id(), eos=self.sp.eos_id())
    ids, appended = {}, []
    for field, piece in SPECIAL_PIECES.items():
      if own_ids.get(field, -1) >= 0:
        ids[field] = own_ids[field]
      elif piece in own:
        ids[field] = own[piece]
      else:
        ids[field] = size + len(appended)
        appended.append(piece)
    for piece in extra_pieces(reserved):
      if piece not in own:
        appended.append(piece)
    self.special = SpecialTokens(**ids)
    self.appended = appended
    self.vocab_size = size + len(appended)
    named = [*SPECIAL_PIECES.values(), *extra_pieces(reserved)]
    self._piece_ids = {**{p: own[p] for p in named if p in own},
                       **{p: size + i for i, p in enumerate(appended)},
                       **{SPECIAL_PIECES[f]: getattr(self.special, f) for f in SPECIAL_PIECES}}
    names = sorted(self._piece_ids, key=len, reverse=True)
    self._split = re.compile("(" + "|".join(re.escape(n) for n in names) + ")")

  @classmethod
  def load(cls, path: str, reserved: int = 0) -> "TextTokenizer":
    try:
      with open(path, "rb") as f:
        proto = f.read()
      return cls(proto, reserved)
    except (OSError, RuntimeError) as e:
      raise DataError(f"cannot load SentencePiece model {path}: {e}") from e

  def encode(self, text: str) -> list[int]:
    """Text -> ids (no <s>/</s>: the layout adds them); special pieces in the text map to their ids."""
    out = []
    for chunk in self._split.split(text):
      if chunk in self._piece_ids:
        out.append(self._piece_ids[chunk])
      elif chunk.strip():
        out.extend(self.sp.encode(chunk.strip()))
    return out

  def decode(self, ids: Sequence[int]) -> str:
    """Ids -> text; special ids are dropped, appended pieces are spelled out."""
    size = self.sp.get_piece_size()
    specials = {getattr(self.special, f) for f in SPECIAL_PIECES}
    pieces, run = [], []
    for i in map(int, ids):
      if i in specials:
        continue
      if i >= size:
        pieces.append(self.sp.decode(run)); run = []
        pieces.append(self.appended[i - size] if i - size < len(self.appended) else "")
      else:
        run.append(i)
    pieces.append(self.sp.decode(run))
    return "".join(pieces)

  def meta(self) -> dict:
    return dict(vocab_size=self.vocab_size, fingerprint=self.fingerprint,
                special={f: getattr(self.special, f) for f in SPECIAL_PIECES},
                appended=self.appended)


def train_sentencepiece(sentences: Iterable[str], vocab_size: int, reserved: int = 0,
                        seed_sentences: Sequence[str] = ()) -> bytes:
  """Trains a BPE SentencePiece model on `sentences`; returns the model proto.

  pad/bos/eos/unk get ids 0..3, then `<boi> <eoi> <UNCOND>` and the reserved pieces, so every special
  id is inside the SentencePiece vocabulary. `vocab_size` is an upper bound: small caption sets have
  fewer distinct pieces, and SentencePiece then stops early instead of failing.
  """
  corpus = [s for s in list(seed_sentences) + list(sentences) if s.strip()]
  if not corpus:
    raise DataError("train_sentencepiece: no non-empty sentences to train on")
  out = io.BytesIO()
  user = [SPECIAL_PIECES[k] for k in ("boi", "eoi", "uncond")] + extra_pieces(reserved)
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(corpus), model_writer=out, vocab_size=vocab_size, model_type="bpe",
      pad_id=0, bos_id=1, eos_id=2, unk_id=3, user_defined_symbols=user, hard_vocab_limit=False,
      character_coverage=1.0, num_threads=1, minloglevel=2,
      train_extremely_large_corpus=False)
  return out.getvalue()

