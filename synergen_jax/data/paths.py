"""File patterns -> files: globs and bash brace ranges, local or on a bucket (etils.epath).

`expand_paths("shards/{00000..00099}.tar")` lists the shards img2dataset wrote; every brace
expansion must match a file, so a missing shard is an error, not a silently smaller dataset.
"""

from __future__ import annotations

import os
import posixpath
import re
from typing import Iterator


from synergen_jax.core import storage
from synergen_jax.core.errors import DataError

MAX_EXPANSIONS = 1_000_000   # a brace range beyond this is a typo ({0..99999999}), not a dataset


# ---------------------------------------------------------------------------------------------------
# Patterns -> files.
# ---------------------------------------------------------------------------------------------------

def _matching_brace(s: str, start: int) -> int:
  depth = 0
  for i in range(start, len(s)):
    depth += {"{": 1, "}": -1}.get(s[i], 0)
    if depth == 0:
      return i
  return -1


def _split_top_level(body: str) -> list[str]:
  """`a,{b,c},d` -> ["a", "{b,c}", "d"]: commas inside nested braces do not split."""
  parts, depth, last = [], 0, 0
  for i, c in enumerate(body):
    depth += {"{": 1, "}": -1}.get(c, 0)
    if c == "," and depth == 0:
      parts.append(body[last:i])
      last = i + 1
  return parts + [body[last:]]


_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)(?:\.\.(\d+))?$")


def _range(body: str) -> list[str] | None:
  """`00000..00099` -> 00000, 00001, ..., 00099 (zero-padded as bash pads: when either end has a
  leading zero, to the longer end's width); `5..1` counts down; `0..10..5` steps."""
  m = _RANGE.match(body)
  if not m:
    return None
  a, b, step = int(m[1]), int(m[2]), int(m[3] or 1) or 1
  padded = any(len(s.lstrip("-")) > 1 and s.lstrip("-").startswith("0") for s in (m[1], m[2]))
  width = max(len(m[1]), len(m[2])) if padded else 0
  if abs(b - a) // step + 1 > MAX_EXPANSIONS:
    raise DataError(f"brace range {{{body}}} has more than {MAX_EXPANSIONS:,} values")
  values = range(a, b + 1, step) if a <= b else range(a, b - 1, -step)
  return [f"{v:0{width}d}" for v in values]


def expand_braces(pattern: str) -> list[str]:
  """Brace expansion as bash does it: `{a,b}` lists (nested), `{00..99}` ranges, left to right;
  `{x}` (no comma, not a range) and an unmatched `{` stay literal."""
  start = pattern.find("{")
  while start >= 0:
    end = _matching_brace(pattern, start)
    if end < 0:
      return [pattern]
    body = pattern[start + 1:end]
    alternatives = _split_top_level(body)
    if len(alternatives) > 1:
      heads = [h for alt in alternatives for h in expand_braces(alt)]
    else:
      heads = _range(body)
    if heads is not None:
      head, tails = pattern[:start], expand_braces(pattern[end + 1:])
      out = [head + h + t for h in heads for t in tails]
      if len(out) > MAX_EXPANSIONS:
        raise DataError(f"{pattern!r} expands to more than {MAX_EXPANSIONS:,} paths")
      return out
    start = pattern.find("{", start + 1)      # a literal group: look for the next one
  return [pattern]


def normalise(pattern: str) -> str:
  return os.path.expanduser(pattern) if pattern.startswith("~") else pattern


def _has_glob(s: str) -> bool:
  return any(c in s for c in "*?[")


def fixed_prefix(pattern: str) -> str:
  """The folder part of `pattern` before its first glob or brace: `gs://b/shards/{0..9}.tar` ->
  `gs://b/shards`. Shard names are paths relative to it."""
  special = [i for i in (pattern.find(c) for c in "*?[{") if i >= 0]
  cut = pattern.rfind("/", 0, min(special)) if special else pattern.rfind("/")
  if cut < 0:
    return ""
  return pattern[:cut] or "/"


def _glob_regex(rest: str) -> re.Pattern:
  """A relative glob with `**` -> a regex over relative file paths (`*` never crosses a `/`;
  `**` as a whole component matches zero or more folders, as in pathlib)."""
  out, parts = [], rest.split("/")
  for k, part in enumerate(parts):
    last = k == len(parts) - 1
    if part == "**":
      out.append(r"(?:[^/]+/)*[^/]+" if last else r"(?:[^/]+/)*")
      continue
    piece, i = "", 0
    while i < len(part):
      c = part[i]
      close = part.find("]", i + 2) if c == "[" else -1
      if c == "*":
        piece += "[^/]*"
      elif c == "?":
        piece += "[^/]"
      elif c == "[" and close > 0:
        inner = part[i + 1:close].replace("\\", "\\\\")
        negate = inner.startswith("!")
        inner = inner[negate:]
        piece += ("[^" if negate else "[") + ("\\" if inner.startswith("^") else "") + inner + "]"
        i = close
      else:
        piece += re.escape(c)
      i += 1
    out.append(piece + ("" if last else "/"))
  return re.compile("".join(out))


def _without_scheme(path: str) -> str:
  return path.split("://", 1)[-1]


def walk(top: str) -> Iterator[tuple[str, list[str], list[str]]]:
  """(folder, subfolders, files) under `top` as os.walk gives them (top-down; prune by editing
  subfolders in place), each folder spelled from `top`: epath's walk names a bucket's folders
  without their scheme (`bkt/x` for gs://bkt/x), which would then read as local paths."""
  top = os.fspath(top)
  root = _without_scheme(str(storage.path(top))).rstrip("/")
  for folder, dirs, files in storage.path(top).walk():
    rel = posixpath.relpath(_without_scheme(str(folder)), root) if root else str(folder)
    yield (top if rel == "." else posixpath.join(top, rel)), dirs, files


def _glob(pattern: str) -> list[str]:
  prefix = fixed_prefix(pattern)
  rest = pattern[len(prefix):].lstrip("/") if prefix else pattern
  base = storage.path(prefix or ".", "config.data.path")
  if "**" not in rest:
    return [str(p) for p in base.glob(rest)]
  # epath refuses `**` (one listing per folder on a bucket); walking the prefix once is the same
  # number of listings, and the user asked for it.
  regex, root, out = _glob_regex(rest), str(base), []
  for folder, _, files in walk(root):
    rel = posixpath.relpath(folder, root)
    for name in files:
      path = name if rel == "." else f"{rel}/{name}"
      if regex.fullmatch(path):
        out.append(posixpath.join(prefix, path) if prefix else path)
  return out


def _existing(paths: list[str]) -> set[str]:
  """Which of these literal paths exist: one listing per folder rather than one call per file,
  since a bucket answers each call over the network."""
  by_folder: dict[str, list[str]] = {}
  for p in paths:
    by_folder.setdefault(posixpath.dirname(p), []).append(p)
  found = set()
  for folder, members in by_folder.items():
    if len(members) == 1:
      found.update(p for p in members if storage.path(p).exists())
      continue
    try:
      names = {p.name for p in storage.path(folder or ".").iterdir()}
    except (FileNotFoundError, NotADirectoryError):
      continue
    found.update(p for p in members if posixpath.basename(p) in names)
  return found


def expand_paths(pattern: str) -> list[str]:
  """A pattern -> its files, sorted and de-duplicated.

  Globs `*`, `?`, `[...]` and `**` (any depth of folders), and bash brace expansion: zero-padded
  ranges as img2dataset names its shards (`shards/{00000..00099}.tar`), comma lists (`{a,b}`),
  several groups per pattern. Local paths and anything etils.epath opens (gs://...). Every brace
  expansion must match at least one file, so a shard missing from a range is an error, not a
  silently smaller dataset: `DataError` names the pattern and the missing expansions.
  """
  pattern = normalise(pattern)
  expansions = list(dict.fromkeys(expand_braces(pattern)))
  present = _existing([e for e in expansions if not _has_glob(e)])
  found, missing = [], []
  for e in expansions:
    if _has_glob(e):
      matches = _glob(e)
    else:
      matches = [e] if e in present else []
    found.extend(matches)
    if not matches:
      missing.append(e)
  if missing and len(expansions) == 1:
    raise DataError(f"{pattern!r} matches no files")
  if missing:
    shown = ", ".join(missing[:10]) + (f", ... ({len(missing) - 10} more)" if len(missing) > 10 else "")
    raise DataError(f"{pattern!r}: {len(missing)} of {len(expansions)} brace expansions match no "
                    f"file: {shown}")
  return sorted(set(found))
