"""An HF `tokenizer.json` release (Qwen2, Llama 3, ...) as a `TextTokenizer`, through HF `tokenizers`.

The release's ids are the ones `tokenizers` itself gives the file (its model's vocabulary, then its
added tokens): exactly what transformers' AutoTokenizer uses. Pad/bos/eos come from
tokenizer_config.json (`bos_token`, `eos_token`, `pad_token`: a string or {"content": ...}); the named
pieces are resolved by data/tokenizers.py's rules (the release's own token, else an unused one, else
appended); a bos/eos/pad the release spells otherwise (Qwen2's eos `<|endoftext|>`) keeps its
spelling, so `</s>` written in text is plain text there, as it is for AutoTokenizer. The unused tokens of a tokenizer.json are its added tokens whose names match the pattern
(Llama 3's `<|reserved_special_token_n|>`); a piece of the model's own vocabulary is never renamed, so
its merges stay as they are.

The release is rewritten in its own format: every named piece becomes an added (special) token at its
id: a reused token renamed in place, an appended one added after the last id (`tokenizers` numbers
added tokens that way itself, so the file needs no explicit gaps). `files()` is that tokenizer.json
and a tokenizer_config.json naming bos/eos/pad, so the folder loads back to the same ids here and in
AutoTokenizer, and `fingerprint` hashes both. `encode` is the rewritten tokenizer's own encode without
a template (no bos/eos: the layout adds them), so named pieces inside text split out exactly as the
release's added tokens do.
"""

from __future__ import annotations

import hashlib
import json
import re

from tokenizers import Tokenizer

from synergen_jax.core import storage
from synergen_jax.core.errors import DataError
from synergen_jax.data.tokenizers import (UNUSED_PATTERN, TextTokenizer, _join, _read_json,
                                          resolve)

OWN_FIELDS = dict(bos="bos_token", eos="eos_token", pad="pad_token")
# tokenizer_config.json's class for a bare tokenizer.json (transformers' fast tokenizer over it).
TOKENIZER_CLASS = "PreTrainedTokenizerFast"


def _token_name(value) -> str | None:
  """tokenizer_config.json's bos_token / eos_token / pad_token: a string, {"content": ...} or null."""
  if isinstance(value, dict):
    value = value.get("content")
  return value if isinstance(value, str) and value else None


def _added_entry(content: str, i: int) -> dict:
  return dict(id=i, content=content, single_word=False, lstrip=False, rstrip=False, normalized=False,
              special=True)


def _parse(text: str, where: str) -> Tokenizer:
  try:
    tok = Tokenizer.from_str(text)
  except Exception as e:         # tokenizers raises its own Exception subclass for every bad file
    raise DataError(f"{where}: not a tokenizer.json HF tokenizers can read ({e})") from None
  tok.no_truncation()
  tok.no_padding()
  return tok


class BpeTokenizer(TextTokenizer):
  """A tokenizer.json (`text`) + named pieces; `hf` is the rewritten `tokenizers.Tokenizer`."""

  backend = "bpe"

  def __init__(self, text: str, reserved: int = 0, *, config: dict | None = None,
               unused: str = UNUSED_PATTERN, where: str = "tokenizer.json"):
    config = dict(config or {})
    release = _parse(text, where)
    names = release.get_vocab(with_added_tokens=True)
    if not names:
      raise DataError(f"{where}: the tokenizer has an empty vocabulary")
    release_size = max(names.values()) + 1
    self._add_config_tokens(names, config, where)
    own = {}
    for field, key in OWN_FIELDS.items():
      name = _token_name(config.get(key))
      if name is not None and name not in names:
        raise DataError(f"{where}: tokenizer_config.json's {key} {name!r} is not a token of "
                        "tokenizer.json")
      own[field] = names.get(name)
    doc = json.loads(text)
    added = {int(t["id"]): t for t in doc.get("added_tokens") or []}
    pattern = re.compile(unused) if unused else None
    unused_ids = sorted(i for i, t in added.items() if pattern and pattern.fullmatch(t["content"]))
    res = resolve(names, own, unused_ids, release_size, reserved)

    changed, own_spelled = False, {}
    for piece, i in sorted(res.ids.items(), key=lambda kv: kv[1]):
      if piece in res.appended:
        continue
      current = release.id_to_token(i)
      if current != piece and i in own.values():      # the release's bos/eos/pad, its own spelling
        own_spelled[piece] = i
      elif i not in added:                             # a piece of the model's vocabulary, by name:
        doc.setdefault("added_tokens", []).append(_added_entry(piece, i)); changed = True  # one id in text
      elif current != piece:                           # an unused token, reused
        added[i]["content"], added[i]["special"] = piece, True; changed = True
    for k, piece in enumerate(res.appended):
      doc.setdefault("added_tokens", []).append(_added_entry(piece, release_size + k)); changed = True
    # Compact: json's C encoder does not indent, and its pure-Python indenting one is slower over a
    # real vocabulary and its merges (Qwen2's 151k of each load in 2.3 s this way, 2.7 s indented).
    self.text = json.dumps(doc, ensure_ascii=False, separators=(",", ":")) if changed else text
    self.hf = _parse(self.text, where) if changed else release
    wrong = {p: self.hf.token_to_id(p) for p, i in res.ids.items()
             if p not in own_spelled and self.hf.token_to_id(p) != i}
    if wrong:
      raise DataError(f"{where}: the rewritten tokenizer.json puts {wrong} elsewhere than planned "
                      f"({ {p: res.ids[p] for p in wrong} })")
    self._resolved(res, release_size)
    self.config = dict(tokenizer_class=TOKENIZER_CLASS, **{
        key: self.hf.id_to_token(res.special[f]) for f, key in OWN_FIELDS.items()})
    self.fingerprint = "sha256:" + hashlib.sha256(
        b"".join(self.files()[n] + b"\0" for n in sorted(self.files()))).hexdigest()[:16]

  @staticmethod
  def _add_config_tokens(names: dict[str, int], config: dict, where: str) -> None:
    """tokenizer_config.json's added_tokens_decoder must agree with the ids tokenizer.json gives."""
    for i, token in (config.get("added_tokens_decoder") or {}).items():
      content = token["content"] if isinstance(token, dict) else str(token)
      if names.get(content) != int(i):
        raise DataError(f"{where}: tokenizer_config.json's added_tokens_decoder puts {content!r} at "
                        f"id {i}, tokenizer.json at {names.get(content)}")

  @classmethod
  def load_folder(cls, folder: str, reserved: int = 0, unused: str = UNUSED_PATTERN) -> "BpeTokenizer":
    """`folder`/tokenizer.json with its tokenizer_config.json (when there is one)."""
    path, config_path = _join(folder, "tokenizer.json"), _join(folder, "tokenizer_config.json")
    try:
      text = storage.path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
      raise DataError(f"cannot read {path}: {e}") from e
    config = _read_json(config_path) if storage.path(config_path).exists() else {}
    if not isinstance(config, dict):
      raise DataError(f"{config_path} is not a JSON object")
    return cls(text, reserved, config=config, unused=unused, where=path)

  def encode(self, text: str) -> list[int]:
    return self.hf.encode(text, add_special_tokens=False).ids

  def encode_batch(self, texts: list[str]) -> list[list[int]]:
    """`encode` of each text, in parallel threads (the Rust tokenizer releases the GIL)."""
    return [e.ids for e in self.hf.encode_batch(texts, add_special_tokens=False)]

  def _decode_run(self, ids: list[int]) -> str:
    return self.hf.decode(ids, skip_special_tokens=False) if ids else ""

  def files(self) -> dict[str, bytes]:
    return {"tokenizer.json": self.text.encode("utf-8"),
            "tokenizer_config.json": json.dumps(self.config, indent=2, sort_keys=True).encode()}
