"""Text tokenizers: one interface over SentencePiece and HF `tokenizers`, plus the pieces the data
format names, fitted to a release's vocabulary.

`TextTokenizer` is what prepare, training, inference and export use, whatever the release ships:

  SentencePieceTokenizer   a `.model` file (InternLM2, Llama 2, Gemma, the demo's own model)
  BpeTokenizer             an HF `tokenizer.json` (Qwen2, Llama 3, most current LLMs; data/bpe.py)

Both give `encode`, `decode`, `meta`, `vocab_size`, `fingerprint`, `special` and `pieces`, and
`save(folder)` writes the files the folder loads back from with the same ids. Each resolves three
kinds of named pieces:

  special   <pad> <s> </s> <boi> <eoi> <UNCOND>    the sequence format (layout.SpecialTokens)
  reserved  <extra_0> ... <extra_{n-1}>            room for image-size tokens later (data.reserved_tokens)
  chat      <|im_start|> <|im_end|>                InternLM2's chat template (data/formats.py)

Each one gets, in this order:

  1. the release's own token of that name: a SentencePiece piece, a tokenizer.json token or an HF
     added token (for pad, bos and eos the model's own pad/bos/eos ids come first, whatever their
     spelling: models differ; SentencePiece keeps them in the model, tokenizer.json releases in
     tokenizer_config.json's bos_token / eos_token / pad_token; a pad that is the bos or eos, as
     Qwen2's `<|endoftext|>`, is not taken: padding must not read as the end of a text);
  2. else an unused token of the release: a piece whose name matches `UNUSED_PATTERN` (InternLM2's
     `[UNUSED_TOKEN_n]`, Llama-3's `<|reserved_special_token_n|>`, Gemma's `<unusedN>`, BERT's
     `[unusedN]`) or of SentencePiece's UNUSED type, not claimed by an added token, lowest id first;
  3. else a new id appended after the vocabulary (after the highest id of the release).

So an LLM's vocabulary stays the size its embedding has wherever the release left room (InternLM2:
92,544 ids, every piece above fits in its unused tokens; Llama 3: its 248 reserved tokens), and grows
only by what is missing (Qwen2: 151,665 tokenizer ids, appended ones fall on its embedding's padding
rows up to 151,936). A model that already holds every special and reserved piece (one
`train_sentencepiece` made: the demo's) is used exactly as it is: nothing is reused or appended, and
chat pieces only if it has them.

The result is written into the release's own file format. SentencePiece: `proto` is the release's
model with the reused pieces renamed, its HF added tokens spelled as tokenizer_config.json names them
(InternLM2's id 92,543 is `[UNUSED_TOKEN_146]` in tokenizer.model, `<|im_start|>` for
transformers), and the appended pieces added, all as user-defined pieces. tokenizer.json: every named
piece is an added token at its id (reused ones renamed), and a tokenizer_config.json beside it names
bos/eos/pad, so transformers' AutoTokenizer reads the same ids from it (data/bpe.py). prepare writes
these files, so the prepared folder loads back to the same ids with nothing else, and `fingerprint` (a
hash of the files) names the vocabulary: one fingerprint, one set of ids. A model that needs no change
keeps its bytes.

`TextTokenizer.load` reads a `.model` file, a `tokenizer.json` file or a tokenizer folder (an HF
release, or a prepared data folder), local or on a bucket (gs://...). A folder with a
`tokenizer.model` is read as SentencePiece (with the added tokens of tokenizer_config.json's
`added_tokens_decoder` / `added_tokens.json`; releases that ship both files, InternLM2 and Llama 2,
keep the ids they always had), else its `tokenizer.json` through HF `tokenizers`; a folder with
neither is refused saying so. A file named tokenizer.model with a tokenizer_config.json beside it is
read as its folder, so `.../hf_files` and `.../hf_files/tokenizer.model` give the same ids.
`train_sentencepiece` builds a small model from captions with every special and reserved piece
inside its vocabulary.

Named pieces written inside text (`"Here is a random image <UNCOND>:"`, `"<|im_start|>user\\n"`)
encode to their ids; decode drops the six special ids and spells every other piece. SentencePiece
encodes the text between named pieces stripped (it marks word starts itself); tokenizer.json
encodes it as it is, exactly as the release's tokenizer does (byte-level BPE keeps spaces in tokens).
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import io
import json
import os
import posixpath
import re
from typing import Iterable, Sequence

import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as sp_model

from synergen_jax.core import storage
from synergen_jax.core.errors import DataError
from synergen_jax.data.layout import SpecialTokens

SPECIAL_PIECES = dict(pad="<pad>", bos="<s>", eos="</s>", boi="<boi>", eoi="<eoi>", uncond="<UNCOND>")
CHAT_PIECES = ("<|im_start|>", "<|im_end|>")
# Names releases give their unused / reserved tokens (matched against the whole piece).
UNUSED_PATTERN = (r"\[UNUSED_TOKEN_\d+\]|<\|reserved_special_token_\d+\|>|<unused_?\d+>|\[unused\d+\]")
HF_ADDED_TOKEN_FILES = ("tokenizer_config.json", "added_tokens.json")
# What `save` writes, per backend; a folder holding one of the first two is a tokenizer folder.
SAVED_NAMES = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json")


def extra_pieces(reserved: int) -> list[str]:
  return [f"<extra_{i}>" for i in range(reserved)]


# ---------------------------------------------------------------------------------------------------
# The SentencePiece model file: a ModelProto, edited with sentencepiece's own protobuf module.
# ---------------------------------------------------------------------------------------------------

def rewrite_pieces(proto: bytes, renames: dict[int, str], appends: Sequence[str]) -> bytes:
  """The model with piece `id` renamed to `renames[id]` and `appends` added after the last piece,
  all user-defined (always one piece, never merged into or out of). Unchanged: the same bytes."""
  if not renames and not appends:
    return proto
  model = sp_model.ModelProto()
  model.ParseFromString(proto)
  user_defined = sp_model.ModelProto.SentencePiece.USER_DEFINED
  for index, name in renames.items():
    model.pieces[index].piece, model.pieces[index].type, model.pieces[index].score = name, user_defined, 0.0
  for name in appends:
    model.pieces.add(piece=name, type=user_defined, score=0.0)
  return model.SerializeToString()


# ---------------------------------------------------------------------------------------------------
# Resolution: which id each named piece gets (the same rules for every backend).
# ---------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Resolution:
  ids: dict[str, int]          # every resolved named piece -> id (special names -> their field's id)
  special: dict[str, int]      # SpecialTokens field -> id
  reused: dict[str, int]       # named pieces placed on unused tokens
  appended: list[str]          # named pieces appended after the release's vocabulary


def resolve(names: dict[str, int], own_ids: dict[str, int], unused_ids: Sequence[int],
            release_size: int, reserved: int) -> Resolution:
  """The named pieces' ids. `names`: the release's name -> id; `own_ids`: its own pad/bos/eos ids
  (missing ones left out); `unused_ids`: its unused tokens, lowest first; appended ids start at
  `release_size`."""
  own_ids = {f: i for f, i in own_ids.items() if i is not None and i >= 0}
  if own_ids.get("pad") is not None and own_ids["pad"] in (own_ids.get("bos"), own_ids.get("eos")):
    del own_ids["pad"]           # Qwen2's pad is its eos: padding would read as the end of a text

  def own(field: str | None, piece: str) -> int | None:
    if field in own_ids:
      return own_ids[field]
    return names.get(piece)

  specials = [(f, p) for f, p in SPECIAL_PIECES.items()]
  extras = [(None, p) for p in extra_pieces(reserved)]
  complete = all(own(f, p) is not None for f, p in specials + extras)
  chat = [(None, p) for p in CHAT_PIECES if not complete or p in names]
  wanted = specials + extras + chat
  resolved = {p: own(f, p) for f, p in wanted}
  taken = set(resolved.values())
  pool = [i for i in unused_ids if i not in taken]
  reused, appended = {}, []
  for _, piece in wanted:
    if resolved[piece] is not None:
      continue
    if pool:
      resolved[piece] = reused[piece] = pool.pop(0)
    else:
      resolved[piece] = release_size + len(appended)
      appended.append(piece)
  return Resolution(ids=resolved, special={f: resolved[p] for f, p in specials}, reused=reused,
                    appended=appended)


# ---------------------------------------------------------------------------------------------------
# The interface.
# ---------------------------------------------------------------------------------------------------

class TextTokenizer:
  """Text <-> ids with named pieces, for any backend. `vocab_size` counts every id (appended ones
  too); `special` holds the sequence format's ids, `pieces` every named piece's id, `reused` those
  placed on unused tokens and `appended` those added after the release's `release_size` ids.
  Subclasses set these (via `_resolved`) and `fingerprint`, and give `encode`, `_decode_run`, `files`."""

  backend = ""                     # "sentencepiece" | "bpe": meta.json and messages
  vocab_size: int
  release_size: int
  fingerprint: str
  special: SpecialTokens

  def _resolved(self, res: Resolution, release_size: int) -> None:
    self.release_size = release_size
    self.vocab_size = release_size + len(res.appended)
    self.special = SpecialTokens(**res.special)
    self.pieces = dict(res.ids)
    self.reused = dict(res.reused)
    self.appended = list(res.appended)

  @classmethod
  def load(cls, path: str, reserved: int = 0, unused: str = UNUSED_PATTERN, *,
           what: str = "config.data.tokenizer") -> "TextTokenizer":
    """A `.model` file, a `tokenizer.json` or a tokenizer folder (see the module docstring), local or
    on a bucket: files are read as bytes, nothing is copied to a local disk. A bucket that cannot be
    reached is a ConfigError naming `what` (the config key that names the path)."""
    from synergen_jax.data import bpe     # bpe.py builds on this module's TextTokenizer
    path = os.fspath(path)
    storage.check_reachable(path, what)
    folder = hf_tokenizer_folder(path)
    if folder is None:
      return SentencePieceTokenizer.load_file(path, reserved, unused)
    if posixpath.basename(path) == "tokenizer.json" or not storage.path(
        _join(folder, "tokenizer.model")).exists():
      if storage.path(_join(folder, "tokenizer.json")).exists():
        return bpe.BpeTokenizer.load_folder(folder, reserved, unused)
      raise DataError(f"{path} holds neither tokenizer.model (SentencePiece) nor tokenizer.json (HF "
                      f"tokenizers): {what} must name a tokenizer file or a folder with one")
    return SentencePieceTokenizer.load_file(_join(folder, "tokenizer.model"), reserved, unused,
                                            folder=folder, where=path)

  def encode(self, text: str) -> list[int]:
    """Text -> ids (no <s>/</s>: the layout adds them); named pieces in the text map to their ids."""
    raise NotImplementedError

  def _decode_run(self, ids: list[int]) -> str:
    """Ids inside the vocabulary -> text, named pieces spelled out."""
    raise NotImplementedError

  def files(self) -> dict[str, bytes]:
    """File name -> bytes of what `save` writes: the folder they make loads back to these ids."""
    raise NotImplementedError

  def decode(self, ids: Sequence[int]) -> str:
    """Ids -> text; special ids are dropped, other named pieces spelled out, ids outside the
    vocabulary (a model's rows beyond its tokenizer) give nothing."""
    specials = {getattr(self.special, f) for f in SPECIAL_PIECES}
    pieces, run = [], []
    for i in map(int, ids):
      if i in specials:
        continue
      if 0 <= i < self.vocab_size:
        run.append(i)
      else:
        pieces.append(self._decode_run(run)); run = []
    pieces.append(self._decode_run(run))
    return "".join(pieces)

  def save(self, folder: str) -> None:
    """Writes `files()` into `folder` (local or a bucket), files that already hold those bytes
    untouched, and removes another backend's tokenizer file there, so the folder loads back to this
    tokenizer."""
    files = self.files()
    storage.path(folder).mkdir(parents=True, exist_ok=True)
    for name in SAVED_NAMES:
      target = storage.path(_join(folder, name))
      if name not in files and target.exists():
        target.unlink()
    for name, data in files.items():
      target = storage.path(_join(folder, name))
      if not (target.exists() and target.read_bytes() == data):
        storage.write_bytes(os.fspath(target), data)

  def meta(self) -> dict:
    return dict(backend=self.backend, vocab_size=self.vocab_size, fingerprint=self.fingerprint,
                special={f: getattr(self.special, f) for f in SPECIAL_PIECES},
                appended=self.appended, reused=self.reused, pieces=self.pieces,
                release_size=self.release_size)


# ---------------------------------------------------------------------------------------------------
# SentencePiece.
# ---------------------------------------------------------------------------------------------------

def _release_names(sp, added: dict[str, int], where: str):
  """The release's name -> id (pieces overlaid with its added tokens), the renames and appends that
  spell its added tokens into the model, and the release's size."""
  size = sp.get_piece_size()
  pieces = [sp.id_to_piece(i) for i in range(size)]
  names = {p: i for i, p in enumerate(pieces)}
  renames, beyond = {}, []
  shared = sorted(i for i, n in collections.Counter(added.values()).items() if n > 1)
  if shared:
    raise DataError(f"{where}: several added tokens share the ids {shared}")
  for content, i in sorted(added.items(), key=lambda kv: kv[1]):
    if names.get(content) == i:
      continue
    if content in names:
      raise DataError(f"{where}: added token {content!r} has id {i}, but the SentencePiece model holds "
                      f"it at id {names[content]}")
    if i < size:
      renames[i] = content
      del names[pieces[i]]
    elif i == size + len(beyond):
      beyond.append(content)
    else:
      raise DataError(f"{where}: added token {content!r} has id {i}; ids after the SentencePiece "
                      f"model's {size} pieces must follow on without gaps (next: {size + len(beyond)})")
    names[content] = i
  return names, renames, beyond, size + len(beyond)


class SentencePieceTokenizer(TextTokenizer):
  """A SentencePiece model (`sp`) + named pieces; `proto` is the model with them written in."""

  backend = "sentencepiece"

  def __init__(self, model_proto: bytes, reserved: int = 0, *, added: dict[str, int] | None = None,
               unused: str = UNUSED_PATTERN, where: str = "SentencePiece model"):
    release = spm.SentencePieceProcessor(model_proto=bytes(model_proto))
    names, renames, beyond, release_size = _release_names(release, dict(added or {}), where)
    pattern = re.compile(unused) if unused else None
    unused_ids = [i for i in range(release.get_piece_size()) if i not in renames
                  and ((pattern and pattern.fullmatch(release.id_to_piece(i))) or release.is_unused(i))]
    res = resolve(names, dict(pad=release.pad_id(), bos=release.bos_id(), eos=release.eos_id()),
                  unused_ids, release_size, reserved)
    renames.update({i: piece for piece, i in res.reused.items()})
    appends = beyond + res.appended
    self.proto = rewrite_pieces(bytes(model_proto), renames, appends)
    self.sp = release if self.proto == bytes(model_proto) else spm.SentencePieceProcessor(
        model_proto=self.proto)
    size = release.get_piece_size()
    planned = {**renames, **{size + k: p for k, p in enumerate(appends)}}
    wrong = {p: self.sp.piece_to_id(p) for i, p in planned.items() if self.sp.piece_to_id(p) != i}
    if wrong:
      raise DataError(f"{where}: the rewritten SentencePiece model puts {wrong} elsewhere than planned")
    self._resolved(res, release_size)
    assert self.vocab_size == self.sp.get_piece_size()
    self.fingerprint = "sha256:" + hashlib.sha256(self.proto).hexdigest()[:16]
    names = sorted(self.pieces, key=len, reverse=True)
    self._split = re.compile("(" + "|".join(re.escape(n) for n in names) + ")")

  @classmethod
  def load_file(cls, model_file: str, reserved: int = 0, unused: str = UNUSED_PATTERN, *,
                folder: str | None = None, where: str | None = None) -> "SentencePieceTokenizer":
    """`model_file`, with the added tokens of `folder` (an HF folder) when given."""
    try:
      proto = storage.path(model_file).read_bytes()
      added = read_added_tokens(folder) if folder else {}
      return cls(proto, reserved, added=added, unused=unused, where=where or model_file)
    except (OSError, RuntimeError) as e:
      raise DataError(f"cannot load SentencePiece model {where or model_file}: {e}") from e

  def encode(self, text: str) -> list[int]:
    out = []
    for chunk in self._split.split(text):
      if chunk in self.pieces:
        out.append(self.pieces[chunk])
      elif chunk.strip():
        out.extend(self.sp.encode(chunk.strip()))
    return out

  def _decode_run(self, ids: list[int]) -> str:
    return self.sp.decode(ids)

  def files(self) -> dict[str, bytes]:
    return {"tokenizer.model": self.proto}


# ---------------------------------------------------------------------------------------------------
# HF tokenizer folders.
# ---------------------------------------------------------------------------------------------------

def _join(folder: str, name: str) -> str:
  """`folder/name`; `/` on a bucket whatever the local separator is."""
  return posixpath.join(folder, name) if storage.is_remote(folder) else os.path.join(folder, name)


def hf_tokenizer_folder(path: str) -> str | None:
  """The HF tokenizer folder `path` names: itself when a directory, its folder when it is a
  tokenizer.json, or a tokenizer.model with the folder's added-token files beside it; None for a
  bare `.model` file."""
  if storage.path(path).is_dir():
    return path
  folder = (posixpath.dirname(path) if storage.is_remote(path) else os.path.dirname(path)) or "."
  name = posixpath.basename(path)
  if name == "tokenizer.json" or name == "tokenizer.model" and any(
      storage.path(_join(folder, n)).exists() for n in HF_ADDED_TOKEN_FILES):
    return folder
  return None


def saved_tokenizer(folder: str) -> str | None:
  """The tokenizer file `TextTokenizer.load(folder)` reads (tokenizer.model first, then
  tokenizer.json), or None when the folder has neither: a prepared data folder, an import's
  hf_files or a release."""
  for name in ("tokenizer.model", "tokenizer.json"):
    if storage.path(_join(folder, name)).exists():
      return _join(folder, name)
  return None


def _read_json(path: str):
  """The JSON in `path` (FileNotFoundError when there is none), or a DataError naming the file."""
  try:
    return json.loads(storage.path(path).read_text())
  except json.JSONDecodeError as e:
    raise DataError(f"{path} is not valid JSON ({e})") from None


def read_added_tokens(folder: str) -> dict[str, int]:
  """content -> id of an HF folder's added tokens (added_tokens.json, tokenizer_config.json's
  added_tokens_decoder); the two must agree."""
  added: dict[str, int] = {}

  def put(content: str, i: int, where: str):
    if added.get(content, i) != i:
      raise DataError(f"{where}: added token {content!r} has id {i}, elsewhere {added[content]}")
    added[content] = i

  path = _join(folder, "added_tokens.json")
  if storage.path(path).exists():
    for content, i in _read_json(path).items():
      put(content, int(i), path)
  path = _join(folder, "tokenizer_config.json")
  if storage.path(path).exists():
    for i, token in (_read_json(path).get("added_tokens_decoder") or {}).items():
      put(token["content"] if isinstance(token, dict) else str(token), int(i), path)
  return added


def train_sentencepiece(sentences: Iterable[str], vocab_size: int, reserved: int = 0,
                        seed_sentences: Sequence[str] = (), chat: bool = False) -> bytes:
  """Trains a BPE SentencePiece model on `sentences`; returns the model proto.

  pad/bos/eos/unk get ids 0..3, then `<boi> <eoi> <UNCOND>`, the reserved pieces and (with `chat`,
  for conversation data) `<|im_start|> <|im_end|>`, so every named id is inside the SentencePiece
  vocabulary. `vocab_size` is an upper bound: small caption sets have fewer distinct pieces, and
  SentencePiece then stops early instead of failing.
  """
  corpus = [s for s in list(seed_sentences) + list(sentences) if s.strip()]
  if not corpus:
    raise DataError("train_sentencepiece: no non-empty sentences to train on")
  out = io.BytesIO()
  user = ([SPECIAL_PIECES[k] for k in ("boi", "eoi", "uncond")] + extra_pieces(reserved)
          + (list(CHAT_PIECES) if chat else []))
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(corpus), model_writer=out, vocab_size=vocab_size, model_type="bpe",
      pad_id=0, bos_id=1, eos_id=2, unk_id=3, user_defined_symbols=user, hard_vocab_limit=False,
      character_coverage=1.0, num_threads=1, minloglevel=2,
      train_extremely_large_corpus=False)
  return out.getvalue()
