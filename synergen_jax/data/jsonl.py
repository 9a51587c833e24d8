"""A jsonl file of records (one JSON object per line), read strictly: the first bad line stops
the read with a DataError naming `path:line` and what is wrong with it. Blank lines are skipped and
keep their numbers, so every line number is the one an editor shows. The file may be local or on a
bucket (gs://...).

For the benchmark and job files of eval/ and infer/, where a bad line is a mistake to fix. Training
inputs (data/formats.py) read jsonl their own way: streamed, from buckets, gzip'd, and a bad line
there is skipped and counted, not fatal.
"""

from __future__ import annotations

import io
import json
from typing import Iterator, NamedTuple, Sequence

from synergen_jax.core import storage
from synergen_jax.core.errors import DataError


class Line(NamedTuple):
  where: str        # "path:line", for the caller's own errors about this record
  number: int       # 1-based line number in the file
  record: dict


def records(path: str, required: Sequence[str] = ()) -> Iterator[Line]:
  """Each non-blank line of `path` as a Line, in file order. Raises DataError naming `path:line`
  for a line that is not UTF-8, not JSON, not an object, or lacks one of the `required` fields,
  and naming `path` when the file has no records at all (after the last line, so a caller that
  checks each record as it comes reports the first bad line of the file)."""
  count = 0
  # Text mode splits lines as the callers always have (\n, \r\n or \r); surrogateescape keeps a
  # byte that is not UTF-8 in its line, so the error can name that line instead of a whole chunk.
  # The wrapper gives a bucket file the same text mode a local open() has.
  with storage.path(path).open("rb") as raw:
    f = io.TextIOWrapper(raw, encoding="utf-8", errors="surrogateescape")
    for number, line in enumerate(f, 1):
      where = f"{path}:{number}"
      try:
        line.encode("utf-8")
      except UnicodeEncodeError as e:
        bad = line[e.start:e.end].encode("utf-8", "surrogateescape")
        raise DataError(f"{where}: not UTF-8 (bytes {bad!r} at column {e.start + 1})") from None
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise DataError(f"{where}: not JSON ({e})") from None
      if not isinstance(record, dict):
        raise DataError(f"{where}: expected an object, got {type(record).__name__}")
      for field in required:
        if field not in record:
          raise DataError(f"{where}: missing \"{field}\"")
      count += 1
      yield Line(where, number, record)
  if not count:
    raise DataError(f"{path}: no records")
