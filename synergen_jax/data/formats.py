"""Streaming readers for web-scale dataset formats, chosen by `config.data.name`.

`config.data.path` (and `config.data.eval_path`) is one pattern naming the input files (see
`expand_paths`); every file is one `InputShard` whose `read()` streams it from the start, one record
at a time, and yields `RawExample`s (pairs: `config.data.tasks` applies), `Document`s (finished
examples) or `Skipped` records (documents.py). Files are opened with etils.epath, so the same pattern
works on a local disk and on a bucket (gs://...).

  name         files                      one record                                     yields
  webdataset   .tar .tar.gz .tgz          members KEY.jpg|jpeg|png|webp + KEY.txt (else  RawExample
                                          "caption" in KEY.json), as img2dataset writes
  parquet      .parquet                   a row: config.data.image_column (bytes, an HF  RawExample
                                          Image struct {bytes, path}, or a path) and
                                          config.data.text_column
  interleaved  .jsonl .jsonl.gz .parquet  an OBELICS-style document: aligned lists       Document
                                          `texts` and `images`, one set per position     (loss on all)
  chat         .json (one array)          a LLaVA record: "image" / "images" paths and   Document
               .jsonl .jsonl.gz           "conversations" [{"from", "value"}, ...]       (loss on answers)
  text         .jsonl .jsonl.gz .parquet  {config.data.text_column: "..."}               Document

Relative image paths resolve against `config.data.image_root`, else the folder of the file that
names them, on a bucket as on a local disk. Images stay undecoded (bytes or a path): the writer
decodes them (images.decode opens bucket paths too) and counts a broken or missing one. http(s) URLs
are not fetched at prepare time (they count as missing files): fetch them first with
`python -m synergen_jax.fetch_images` (data/url_fetch.py), which rewrites them to local paths.

A record that cannot be used is yielded as `Skipped(reason, where)`, `where` naming the file and the
record; the writer counts it under `reason` in meta.json:

  missing_image          webdataset key without an image member; parquet row whose image is null
  missing_text           webdataset key without .txt (and no "caption" in its .json); null parquet
                         text; an interleaved document with no text; an empty text record (an
                         empty caption of a pair is a RawExample: the writer counts empty_text)
  truncated_tar          a tar that ends early or holds a corrupt header or gzip stream: the samples
                         before it are yielded, the key being read is lost, the rest of the file too
  unreadable_row_group   a parquet row group pyarrow cannot read: counted ONCE PER ROW GROUP, and
                         all its rows are lost (the next row group is read as usual)
  unreadable_file        a parquet file whose footer (metadata) cannot be read: nothing in it is used
  bad_json               a jsonl line (or a .json array element) that is not JSON; in a .json array
                         the rest of the file is lost with it (an array cannot be resynchronised)
  bad_document           interleaved lists of different lengths, a position with both or neither
                         of text and image, or values of the wrong type
  bad_conversation       chat turns that do not alternate user/assistant (after an optional leading
                         system turn), an unknown role, a non-string value, or no assistant answer
  image_count_mismatch   chat `<image>` placeholders in the user turns != the number of images

A whole input that cannot be used raises `DataError`: a pattern that matches nothing (or a brace
range with missing expansions), a file with an extension the format does not read, a parquet file
without the configured columns, a .json chat file that is not one array.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import json
import posixpath
import re
import tarfile
import zlib
from typing import Any, Iterator

from synergen_jax.core import storage
from synergen_jax.core.errors import DataError
from synergen_jax.data.documents import Document, ImageSpan, InputShard, Skipped, TextSpan
from synergen_jax.data.paths import expand_paths, fixed_prefix, normalise
from synergen_jax.data.sources import RawExample, image_ref, parent_folder

FORMATS = ("webdataset", "parquet", "interleaved", "chat", "text")
EXTENSIONS = dict(webdataset=(".tar", ".tar.gz", ".tgz"), parquet=(".parquet",),
                  interleaved=(".jsonl", ".jsonl.gz", ".parquet"),
                  chat=(".json", ".jsonl", ".jsonl.gz"), text=(".jsonl", ".jsonl.gz", ".parquet"))

# webdataset: image member extensions, in the order a key holding several picks from.
TAR_IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")

# InternLM2's chat template (InternVL-2 / SynerGen-VL SFT). The answer and its <|im_end|> carry the
# loss, so the model learns to stop; the role headers and the newline after <|im_end|> do not.
SYSTEM_TURN = "<|im_start|>system\n{}<|im_end|>\n"
USER_START = "<|im_start|>user\n"
USER_END = "<|im_end|>\n"
ASSISTANT_START = "<|im_start|>assistant\n"
ASSISTANT_END = "<|im_end|>"
TURN_SEPARATOR = "\n"
IMAGE_PLACEHOLDER = "<image>"
ROLES = dict(human="user", user="user", gpt="assistant", assistant="assistant", system="system")

_ROWS_PER_SLICE = 256        # parquet rows turned into Python objects at a time
_JSON_CHUNK = 1 << 20        # characters read at a time from a .json array


# ---------------------------------------------------------------------------------------------------
# Shards.
# ---------------------------------------------------------------------------------------------------

def _extension(path: str, name: str) -> str:
  lower = path.lower()
  for ext in sorted(EXTENSIONS[name], key=len, reverse=True):
    if lower.endswith(ext):
      return ext
  raise DataError(f"{path}: config.data.name={name!r} reads {', '.join(EXTENSIONS[name])} files; "
                  "narrow config.data.path to them (e.g. shards/*.tar, not shards/*)")


def _strip_scheme(path: str) -> str:
  return path.split("://", 1)[-1]


def shard_names(paths: list[str], pattern: str, name: str) -> list[str]:
  """Stable, file-name-safe, unique names: the path relative to the pattern's fixed prefix, without
  the format's extension, `/` -> `-` (`shards/a/00003.tar` -> `a-00003`). Names that collide after
  sanitising get 8 hex digits of their path's hash."""
  prefix = fixed_prefix(normalise(pattern))
  prefix = posixpath.normpath(_strip_scheme(prefix)).rstrip("/") if prefix else ""
  names = []
  for p in paths:
    q = posixpath.normpath(_strip_scheme(p))
    rel = q[len(prefix) + 1:] if prefix and q.startswith(prefix + "/") else q
    rel = rel.lstrip("/")
    rel = rel[:len(rel) - len(_extension(p, name))]
    names.append(re.sub(r"[^A-Za-z0-9._-]+", "_", rel.replace("/", "-")).lstrip(".") or "shard")
  counts: dict[str, int] = {}
  for n in names:
    counts[n] = counts.get(n, 0) + 1
  return [n if counts[n] == 1 else f"{n}-{hashlib.sha1(p.encode()).hexdigest()[:8]}"
          for n, p in zip(names, paths)]


def format_shards(name: str, pattern: str, split: str, data_config) -> list[InputShard]:
  """One InputShard per file of `pattern`, read as format `name` (see the module docstring)."""
  if name not in FORMATS:
    raise DataError(f"{name!r} is not a format; choose one of {', '.join(FORMATS)}")
  paths = expand_paths(pattern)
  for p in paths:
    _extension(p, name)
  reader = _READERS[name]
  return [InputShard(name=shard, split=split, read=lambda p=p: reader(p, data_config))
          for shard, p in zip(shard_names(paths, pattern, name), paths)]


# ---------------------------------------------------------------------------------------------------
# Shared pieces: opening, jsonl, .json arrays, parquet row groups, image references.
# ---------------------------------------------------------------------------------------------------

def _open(path: str):
  """A binary file object (epath: local or bucket), streamed: tarfile, gzip, pyarrow and the JSON
  readers take it as it is, nothing is copied to a local disk first. Tests wrap it to count the
  bytes read."""
  return storage.path(path, "config.data.path").open("rb")


def _jsonl(path: str) -> Iterator[Skipped | tuple[str, Any]]:
  """(where, value) per non-blank line, or Skipped("bad_json") for a line that does not parse."""
  with _open(path) as f:
    stream = gzip.GzipFile(fileobj=f) if path.lower().endswith(".gz") else f
    for n, line in enumerate(stream, 1):
      if not line.strip():
        continue
      try:
        yield f"{path}:{n}", json.loads(line)
      except ValueError as e:       # JSONDecodeError and UnicodeDecodeError
        yield Skipped("bad_json", f"{path}:{n}: {e}")


def _json_array(path: str) -> Iterator[Skipped | tuple[str, Any]]:
  """(where, element) for each element of a file holding one JSON array, parsed incrementally
  (LLaVA's files are one array of hundreds of MB): memory holds one element plus a chunk. A syntax
  error ends the file with one Skipped("bad_json"): there is no line structure to resume at."""
  decoder = json.JSONDecoder()
  text = codecs.getincrementaldecoder("utf-8-sig")(errors="strict")
  with _open(path) as f:
    buf, pos, line, eof, first = "", 0, 1, False, True

    def more(size: int) -> None:
      nonlocal buf, pos, eof
      data = f.read(size)
      eof = not data
      buf = buf[pos:] + text.decode(data, final=eof)
      pos = 0

    def skip_space() -> str:
      """The next non-space character ("" at the end), counting lines."""
      nonlocal pos, line
      while True:
        while pos < len(buf) and buf[pos] in " \t\r\n":
          line += buf[pos] == "\n"
          pos += 1
        if pos < len(buf) or eof:
          return buf[pos] if pos < len(buf) else ""
        more(_JSON_CHUNK)

    try:
      if skip_space() != "[":
        raise DataError(f"{path}: a .json chat file must hold one JSON array of records (use "
                        ".jsonl for one record per line)")
      pos += 1
      while True:
        c = skip_space()
        if c == "]":
          return
        if not first:
          if c != ",":
            yield Skipped("bad_json", f"{path}:{line}: expected ',' or ']' between elements")
            return
          pos += 1
          skip_space()
        first, size = False, _JSON_CHUNK
        while True:
          try:
            value, end = decoder.raw_decode(buf, pos)
            # A number cut at the buffer's end would parse short: only trust an end before it.
            if end < len(buf) or eof:
              break
          except json.JSONDecodeError as e:
            if eof:
              yield Skipped("bad_json", f"{path}:{line}: {e.msg}")
              return
          more(size)
          size *= 2               # an element longer than a chunk: reread it O(log) times, not O(n)
        where = f"{path}:{line}"
        line += buf.count("\n", pos, end)
        pos = end
        yield where, value
    except UnicodeDecodeError as e:
      yield Skipped("bad_json", f"{path}:{line}: {e}")


def _parquet_rows(path: str, columns: dict[str, str | None],
                  check=None) -> Iterator[Skipped | tuple[str, dict]]:
  """(where, row) for the given columns only, one row group in memory at a time.

  `columns` maps each column to the config key that names it (None: a fixed name), for the error a
  missing column raises. A row group pyarrow cannot read is one Skipped("unreadable_row_group"):
  its rows are lost, and the next row group is read as usual.
  """
  import pyarrow as pa
  import pyarrow.parquet as pq
  with _open(path) as f:
    try:
      # Page checksums, where the writer stored them, catch corruption decompression would not.
      pf = pq.ParquetFile(f, page_checksum_verification=True)
    except (OSError, pa.ArrowException) as e:
      yield Skipped("unreadable_file", f"{path}: {e}")
      return
    schema = pf.schema_arrow
    for column, key in columns.items():
      if column not in schema.names:
        how = (f"set config.data.{key} to the column that holds it" if key else
               f"the format needs columns {', '.join(columns)}")
        raise DataError(f"{path}: no column {column!r} (columns: {', '.join(schema.names)}); {how}")
    if check:
      check(path, schema)
    for g in range(pf.num_row_groups):
      try:
        table = pf.read_row_group(g, columns=list(columns))
      except (OSError, pa.ArrowException) as e:
        yield Skipped("unreadable_row_group", f"{path} row group {g}: {e}")
        continue
      # Python objects for a slice at a time: a row group of images is large enough as Arrow.
      for start in range(0, table.num_rows, _ROWS_PER_SLICE):
        rows = table.slice(start, _ROWS_PER_SLICE).to_pylist()
        for j, row in enumerate(rows, start):
          yield f"{path} row group {g} row {j}", row


def _image_root(path: str, data_config) -> str:
  """Where a record's relative image paths start. They stay paths, on a bucket too: images.decode
  reads them when the writer gets to them, in its decode workers, not one by one here."""
  return data_config.get("image_root") or parent_folder(path)


class _BadImage(ValueError):
  pass


def _image(cell: Any, root: str) -> Any:
  """An image cell -> bytes or a path; None when there is none. Bytes, an HF `Image` struct
  ({"bytes": ..., "path": ...}: bytes when present, else the path) or a path string."""
  if cell is None:
    return None
  if isinstance(cell, (bytes, bytearray)):
    return bytes(cell) if cell else None
  if isinstance(cell, dict):
    data = cell.get("bytes")
    if isinstance(data, (bytes, bytearray)) and data:
      return bytes(data)
    if data:
      raise _BadImage(f"image bytes of type {type(data).__name__}")
    cell = cell.get("path")
    if cell is None:
      return None
  if isinstance(cell, str):
    return image_ref(cell, root) if cell else None
  raise _BadImage(f"image of type {type(cell).__name__}; expected bytes, a path or "
                  "{\"bytes\": ..., \"path\": ...}")


# ---------------------------------------------------------------------------------------------------
# webdataset.
# ---------------------------------------------------------------------------------------------------

class _Tap:
  """A stream that remembers the last bytes it handed out. tarfile's stream mode ends silently at a
  missing or corrupt header (it cannot tell one from the end of the archive), so after the last
  member the reader looks at the block where tarfile stopped: two zero blocks end a whole tar."""
  WINDOW = 4 * tarfile.RECORDSIZE   # more than tarfile reads ahead of the header it parses

  def __init__(self, raw):
    self.raw, self.count, self.tail = raw, 0, b""

  def read(self, size: int = -1) -> bytes:
    data = self.raw.read(size)
    self.count += len(data)
    self.tail = data[-self.WINDOW:] if len(data) >= self.WINDOW else (self.tail + data)[-self.WINDOW:]
    return data

  def block(self, offset: int) -> bytes:
    start = offset - (self.count - len(self.tail))
    return self.tail[max(start, 0):start + tarfile.BLOCKSIZE] if start >= 0 else b""


class _BrokenTar(Exception):
  pass


_TAR_ERRORS = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile)


def _tar_key(name: str) -> tuple[str, str] | None:
  """webdataset's split: the key is the path up to the first dot of the basename, the extension the
  rest (`a/000001.seg.png` -> (`a/000001`, `seg.png`)). Names without one are not sample members."""
  m = re.match(r"^((?:.*/|)[^.]+)[.]([^/]*)$", name)
  return (m[1], m[2].lower()) if m else None


def _tar_groups(f) -> Iterator[tuple[str, dict[str, bytes]]]:
  """(key, {extension: bytes}) for runs of consecutive members sharing a key; only the run being
  read is in memory. Raises _BrokenTar (after the complete runs) where the tar breaks."""
  head = f.read(2)
  raw = _Prepend(head, f)
  tap = _Tap(gzip.GzipFile(fileobj=raw) if head == b"\x1f\x8b" else raw)
  key, group = None, {}
  try:
    # "r|": a forward-only stream (buckets, gzip) read once; gzip is undone above so that _Tap
    # sees the tar's own bytes.
    with tarfile.open(fileobj=tap, mode="r|") as tar:
      for member in tar:
        tar.members = []         # tarfile keeps every TarInfo it read; a shard has many
        split = _tar_key(member.name) if member.isfile() else None
        if split is None:
          continue
        if split[0] != key:
          if key is not None:
            yield key, group
          key, group = split[0], {}
        group[split[1]] = tar.extractfile(member).read()
      end = tap.block(tar.offset)
      while tap.read(tarfile.RECORDSIZE):    # to the end: gzip checks its CRC and length there
        pass
  except _TAR_ERRORS as e:
    raise _BrokenTar(str(e) or type(e).__name__) from e
  if len(end) < tarfile.BLOCKSIZE:
    raise _BrokenTar(f"ends at byte {tap.count} without the end-of-archive blocks (truncated)")
  if end.count(0) != tarfile.BLOCKSIZE:
    raise _BrokenTar(f"invalid tar header at byte {tar.offset}")
  if key is not None:
    yield key, group


class _Prepend:
  """The bytes peeked at the start of a stream, then the rest of it."""

  def __init__(self, head: bytes, raw):
    self.head, self.raw = head, raw

  def read(self, size: int = -1) -> bytes:
    if not self.head:
      return self.raw.read(size)
    if size is None or size < 0:
      data, self.head = self.head + self.raw.read(), b""
      return data
    data, self.head = self.head[:size], self.head[size:]
    return data + (self.raw.read(size - len(data)) if size > len(data) else b"")


def _tar_caption(group: dict[str, bytes]) -> str | None:
  """KEY.txt, else a string "caption" in KEY.json (img2dataset writes it there too), else None."""
  if "txt" in group:
    return group["txt"].decode("utf-8", errors="replace")
  try:
    caption = json.loads(group["json"]).get("caption") if "json" in group else None
  except (ValueError, AttributeError):
    return None
  return caption if isinstance(caption, str) else None


def _tar_sample(key: str, group: dict[str, bytes], path: str) -> RawExample | Skipped:
  where = f"{path} key {key}"
  image = next((group[e] for e in TAR_IMAGE_EXTENSIONS if e in group), None)
  if image is None:
    return Skipped("missing_image", where)
  text = _tar_caption(group)
  if text is None:
    return Skipped("missing_text", where)
  return RawExample(image, text)


def read_webdataset(path: str, data_config=None) -> Iterator[RawExample | Skipped]:
  """img2dataset / webdataset tar shards, streamed: KEY.{jpg,jpeg,png,webp} is the image, KEY.txt
  the caption (else "caption" in KEY.json); other members are ignored. A tar that breaks yields the
  samples before the break, then Skipped("truncated_tar", "<file>: <error>")."""
  with _open(path) as f:
    try:
      for key, group in _tar_groups(f):
        yield _tar_sample(key, group, path)
    except _BrokenTar as e:
      yield Skipped("truncated_tar", f"{path}: {e}")


# ---------------------------------------------------------------------------------------------------
# parquet pairs.
# ---------------------------------------------------------------------------------------------------

def _check_pair_types(image_column: str, text_column: str):
  def check(path, schema):
    import pyarrow as pa
    t = schema.field(image_column).type
    binary = (pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_string(t) or
              pa.types.is_large_string(t) or pa.types.is_binary_view(t) or pa.types.is_string_view(t))
    struct = pa.types.is_struct(t) and {"bytes", "path"} & {t.field(i).name for i in range(t.num_fields)}
    if not (binary or struct):
      raise DataError(f"{path}: image column {image_column!r} is {t}; expected bytes, a path string "
                      "or a struct with bytes/path (config.data.image_column)")
    t = schema.field(text_column).type
    if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)):
      raise DataError(f"{path}: text column {text_column!r} is {t}; expected strings "
                      "(config.data.text_column)")
  return check


def read_parquet(path: str, data_config) -> Iterator[RawExample | Skipped]:
  """Rows of (config.data.image_column, config.data.text_column), no other column read. The image
  is bytes, an HF Image struct or a path; a null one is missing_image, a null text missing_text.
  A row group that cannot be read is ONE Skipped("unreadable_row_group") and all its rows are lost."""
  image_column = data_config.get("image_column", "image")
  text_column = data_config.get("text_column", "text")
  root = _image_root(path, data_config)
  columns = {image_column: "image_column", text_column: "text_column"}
  for item in _parquet_rows(path, columns, _check_pair_types(image_column, text_column)):
    if isinstance(item, Skipped):
      yield item
      continue
    where, row = item
    image = _image(row[image_column], root)
    if image is None:
      yield Skipped("missing_image", where)
    elif row[text_column] is None:
      yield Skipped("missing_text", where)
    else:
      yield RawExample(image, row[text_column])


# ---------------------------------------------------------------------------------------------------
# Documents: interleaved, chat, text.
# ---------------------------------------------------------------------------------------------------

def _records(path: str, columns: dict[str, str | None]) -> Iterator[Skipped | tuple[str, Any]]:
  lower = path.lower()
  if lower.endswith(".parquet"):
    return _parquet_rows(path, columns)
  if lower.endswith(".json"):
    return _json_array(path)
  return _jsonl(path)


def interleaved_document(record: Any, where: str, root: str) -> Document | Skipped:
  """OBELICS-style {"texts": [...], "images": [...]}: at each position exactly one is non-null.
  Text and images all carry the loss; empty strings add no span; a document with no text at all is
  missing_text (image-only documents teach nothing a pair would not)."""
  texts = record.get("texts") if isinstance(record, dict) else None
  images = record.get("images") if isinstance(record, dict) else None
  if not isinstance(texts, list) or not isinstance(images, list):
    return Skipped("bad_document", f"{where}: needs lists 'texts' and 'images'")
  if len(texts) != len(images):
    return Skipped("bad_document", f"{where}: {len(texts)} texts but {len(images)} images")
  spans = []
  for i, (text, image) in enumerate(zip(texts, images)):
    if (text is None) == (image is None):
      return Skipped("bad_document", f"{where}: position {i} has {'both' if text is not None else 'neither'}"
                     " text and image")
    if text is not None:
      if not isinstance(text, str):
        return Skipped("bad_document", f"{where}: texts[{i}] is a {type(text).__name__}")
      if text:
        spans.append(TextSpan(text, loss=True))
      continue
    try:
      ref = _image(image, root)
    except _BadImage as e:
      return Skipped("bad_document", f"{where}: images[{i}]: {e}")
    if ref is None:
      return Skipped("bad_document", f"{where}: images[{i}] holds neither bytes nor a path")
    spans.append(ImageSpan(ref, loss=True))
  if not any(isinstance(s, TextSpan) and s.text.strip() for s in spans):
    return Skipped("missing_text", where)
  return Document(tuple(spans), task="interleaved", key=where)


def read_interleaved(path: str, data_config) -> Iterator[Document | Skipped]:
  """One OBELICS-style document per jsonl line or parquet row (columns `texts`, `images`)."""
  root = _image_root(path, data_config)
  for item in _records(path, dict(texts=None, images=None)):
    yield item if isinstance(item, Skipped) else interleaved_document(item[1], item[0], root)


def _add_text(spans: list, text: str, loss: bool) -> None:
  """Appends text, merged into the previous span when that is text with the same loss flag."""
  if not text:
    return
  if spans and isinstance(spans[-1], TextSpan) and spans[-1].loss == loss:
    spans[-1] = TextSpan(spans[-1].text + text, loss)
  else:
    spans.append(TextSpan(text, loss))


def _chat_images(record: dict) -> list | None:
  """The record's image paths: "images" (a list), else "image" (a path, or a list as some LLaVA
  derivatives write it); [] for a text-only conversation; None when malformed."""
  images = record.get("images", record.get("image"))
  if images is None:
    return []
  if isinstance(images, str):
    images = [images]
  if not isinstance(images, list) or not all(isinstance(p, str) and p for p in images):
    return None
  return images


def _turns(conversation: Any) -> list[tuple[str, str]] | str:
  """[(role, value)] with roles normalised to system/user/assistant, or why it is not a chat."""
  if not isinstance(conversation, list):
    return "needs a list 'conversations'"
  turns = []
  for i, turn in enumerate(conversation):
    if not isinstance(turn, dict):
      return f"turn {i} is not an object"
    role = turn.get("from", turn.get("role"))
    value = turn.get("value", turn.get("content"))
    if not isinstance(role, str) or role not in ROLES:
      return f"turn {i} has unknown role {role!r} (known: {', '.join(ROLES)})"
    if not isinstance(value, str):
      return f"turn {i} has no string value"
    turns.append((ROLES[role], value))
  body = turns[1:] if turns and turns[0][0] == "system" else turns
  if not any(role == "assistant" for role, _ in body):
    return "no assistant answer"
  want = ["user", "assistant"] * (len(body) // 2 + 1)
  if [role for role, _ in body] != want[:len(body)] or len(body) % 2:
    return "turns must alternate user, assistant (after an optional system turn) and end with an answer"
  return turns


def chat_document(record: Any, where: str, root: str) -> Document | Skipped:
  """A LLaVA record rendered with InternLM2's template (the module's constants). `<image>` in a user
  turn becomes the next image (ImageSpan, loss=False), in order; elsewhere it stays text. Only the
  answers and their <|im_end|> carry the loss. Adjacent text of the same loss is one span."""
  if not isinstance(record, dict):
    return Skipped("bad_conversation", f"{where}: a record must be an object")
  turns = _turns(record.get("conversations"))
  if isinstance(turns, str):
    return Skipped("bad_conversation", f"{where}: {turns}")
  images = _chat_images(record)
  if images is None:
    return Skipped("bad_conversation", f"{where}: 'image'/'images' must be a path or a list of paths")
  placeholders = sum(value.count(IMAGE_PLACEHOLDER) for role, value in turns if role == "user")
  if placeholders != len(images):
    return Skipped("image_count_mismatch",
                   f"{where}: {placeholders} {IMAGE_PLACEHOLDER} placeholders, {len(images)} images")
  refs, spans = iter([image_ref(p, root) for p in images]), []
  for role, value in turns:
    if role == "system":
      _add_text(spans, SYSTEM_TURN.format(value), False)
    elif role == "user":
      _add_text(spans, USER_START, False)
      for k, piece in enumerate(value.split(IMAGE_PLACEHOLDER)):
        if k:
          spans.append(ImageSpan(next(refs), loss=False))
        _add_text(spans, piece, False)
      _add_text(spans, USER_END, False)
    else:
      _add_text(spans, ASSISTANT_START, False)
      _add_text(spans, value + ASSISTANT_END, True)
      _add_text(spans, TURN_SEPARATOR, False)
  return Document(tuple(spans), task="chat", key=where)


def read_chat(path: str, data_config) -> Iterator[Document | Skipped]:
  """LLaVA conversations: a .json file holding one array (parsed incrementally) or .jsonl."""
  root = _image_root(path, data_config)
  for item in _records(path, {}):
    yield item if isinstance(item, Skipped) else chat_document(item[1], item[0], root)


def read_text(path: str, data_config) -> Iterator[Document | Skipped]:
  """{config.data.text_column: "..."} per jsonl line (or parquet row): one text Document each, loss
  on all of it. An empty or missing text is missing_text; a jsonl whose first record lacks the key
  raises DataError (the column is misconfigured, not one record broken)."""
  column = data_config.get("text_column", "text")
  first = True
  for item in _records(path, {column: "text_column"}):
    if isinstance(item, Skipped):
      yield item
      continue
    where, record = item
    if not isinstance(record, dict):
      yield Skipped("bad_json", f"{where}: a record must be an object")
      continue
    if first and column not in record:
      raise DataError(f"{where}: no key {column!r} (keys: {', '.join(record)}); set "
                      "config.data.text_column to the one holding the text")
    first, text = False, record.get(column)
    if text is not None and not isinstance(text, str):
      yield Skipped("bad_json", f"{where}: {column!r} is a {type(text).__name__}, not a string")
    elif not text or not text.strip():
      yield Skipped("missing_text", where)
    else:
      yield Document((TextSpan(text, loss=True),), task="text", key=where)


_READERS = dict(webdataset=read_webdataset, parquet=read_parquet, interleaved=read_interleaved,
                chat=read_chat, text=read_text)
