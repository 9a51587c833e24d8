"""Interleaved documents' image URLs -> local images, fetched once, before prepare.

OBELICS-style documents (`{"texts": [...], "images": [...]}`, data/formats.py) name their images by
http(s) URL, which prepare never downloads (it would count them as missing files). `fetch_documents`
reads the document files, fetches every URL into a content-addressed image store, and writes the same
documents again with each fetched URL replaced by the image's path (relative to the document file, so
the output folder can be moved or copied to a bucket whole); prepare then reads the output
(`--config.data.path='OUT/*.jsonl'`: the input files' names and format; image paths the documents
already had are written absolute, from `image_root` or their file's folder):

  OUT/<input file name>           the documents with local paths (jsonl, jsonl.gz or parquet as given)
  OUT/images/ab/abcdef....        the fetched bytes, named by the URL's sha256 (written whole:
                                  a killed run leaves no partial image)
  OUT/fetch/failed.jsonl          {"url", "reason"} of each URL that failed (appended, every run)
  OUT/fetch/summary.json          the last run's outcome counts and settings

Each URL is fetched by one of `workers` threads (bounded concurrency) with a `timeout` per attempt;
a timeout, a connection error, HTTP 408/429 or 5xx is retried `retries` times with exponential
backoff (`backoff`, x2 each time, with jitter). Outcomes are counted by reason, never fatal:

  fetched          downloaded now and decodable as an image
  already_fetched  in the store from an earlier run (not requested again)
  not_found        HTTP 404 / 410
  http_error       another HTTP status (after retries for the transient ones)
  timeout          every attempt timed out
  connection_error every attempt failed to connect (refused, reset, DNS)
  not_an_image     the body is not an image PIL can read (an HTML error page, corrupt bytes)
  too_large        the body is longer than `max_bytes`
  failed_before    failed for good in an earlier run (not_found, not_an_image, too_large, http_error
                   other than the transient ones): skipped unless `retry_failed`

A rerun fetches only what is missing: stored images are skipped, transient failures (timeout,
connection_error, 408/429/5xx) are tried again, failures for good are skipped. A URL that was not
fetched stays a URL in the written documents, and prepare drops that image (counted in meta.json's
dropped_images as missing_file) while keeping the document's text and other images.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import gzip
import hashlib
import io
import json
import os
import posixpath
import random
import socket
import time
import urllib.error
import urllib.request
from typing import Callable, Iterable, Iterator

from PIL import Image as PILImage

from synergen_jax.core import storage
from synergen_jax.core.errors import DataError
from synergen_jax.data.paths import expand_paths
from synergen_jax.data.sources import image_ref, parent_folder

OUTCOMES = ("fetched", "already_fetched", "not_found", "http_error", "timeout", "connection_error",
            "not_an_image", "too_large", "failed_before")
# Worth trying again later (a rerun, or retries now); anything else failed for good.
TRANSIENT = ("timeout", "connection_error")
TRANSIENT_STATUS = (408, 429, 500, 502, 503, 504)
USER_AGENT = "synergen_jax-fetch/1 (+image URLs of interleaved documents)"


@dataclasses.dataclass(frozen=True)
class FetchSettings:
  workers: int = 16              # URLs in flight at once
  timeout: float = 10.0          # seconds per attempt (connect and each read)
  retries: int = 2               # more attempts after a transient failure
  backoff: float = 1.0           # seconds before the first retry, doubled after each
  max_bytes: int = 32 << 20      # bodies above this are too_large
  retry_failed: bool = False     # try again URLs that failed for good in an earlier run

  def check(self) -> None:
    if self.workers < 1 or self.timeout <= 0 or self.retries < 0 or self.backoff < 0 or self.max_bytes < 1:
      raise DataError(f"fetch settings {self}: need workers >= 1, timeout > 0, retries >= 0, "
                      "backoff >= 0, max_bytes >= 1")


def is_url(value) -> bool:
  return isinstance(value, str) and value.startswith(("http://", "https://"))


def _join(folder: str, *names: str) -> str:
  return posixpath.join(folder, *names) if storage.is_remote(folder) else os.path.join(folder, *names)


def image_name(url: str) -> str:
  """The store's relative path of `url`'s image: images/ab/<sha256 of the URL, 32 hex>."""
  digest = hashlib.sha256(url.encode("utf-8")).hexdigest()[:32]
  return posixpath.join("images", digest[:2], digest)


# ---------------------------------------------------------------------------------------------------
# One URL.
# ---------------------------------------------------------------------------------------------------

class _Failure(Exception):
  def __init__(self, reason: str, transient: bool):
    super().__init__(reason)
    self.reason, self.transient = reason, transient


def _get(url: str, s: FetchSettings) -> bytes:
  request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
  try:
    with urllib.request.urlopen(request, timeout=s.timeout) as response:
      body = response.read(s.max_bytes + 1)
  except urllib.error.HTTPError as e:
    if e.code in (404, 410):
      raise _Failure("not_found", False) from None
    raise _Failure("http_error", e.code in TRANSIENT_STATUS) from None
  except (socket.timeout, TimeoutError):
    raise _Failure("timeout", True) from None
  except urllib.error.URLError as e:
    if isinstance(e.reason, (socket.timeout, TimeoutError)):
      raise _Failure("timeout", True) from None
    raise _Failure("connection_error", True) from None
  except (ConnectionError, OSError, ValueError):   # reset mid-body, a malformed URL
    raise _Failure("connection_error", True) from None
  if len(body) > s.max_bytes:
    raise _Failure("too_large", False)
  return body


def _is_image(data: bytes) -> bool:
  try:
    with PILImage.open(io.BytesIO(data)) as image:
      image.verify()              # headers and structure, without decoding every pixel
    return True
  except Exception:               # PIL raises many types for bytes that are not an image
    return False


def fetch_one(url: str, s: FetchSettings, sleep: Callable[[float], None] = time.sleep
              ) -> tuple[str, bytes | None]:
  """(outcome, image bytes or None): retries transient failures with exponential backoff."""
  for attempt in range(s.retries + 1):
    try:
      data = _get(url, s)
    except _Failure as f:
      if not f.transient or attempt == s.retries:
        return f.reason, None
      sleep(s.backoff * 2 ** attempt * random.uniform(0.5, 1.0))
      continue
    return ("fetched", data) if _is_image(data) else ("not_an_image", None)
  raise AssertionError("unreachable")


# ---------------------------------------------------------------------------------------------------
# Document files.
# ---------------------------------------------------------------------------------------------------

def _read_documents(path: str) -> tuple[list, str]:
  """(records, kind): jsonl lines (JSON values; an unparsable line is kept as its text, so the
  written file has it too and prepare counts it as bad_json) or parquet rows."""
  lower = path.lower()
  if lower.endswith(".parquet"):
    import pyarrow.parquet as pq
    with storage.path(path).open("rb") as f:
      return pq.read_table(f).to_pylist(), "parquet"
  data = storage.path(path).read_bytes()
  if lower.endswith(".gz"):
    data = gzip.decompress(data)
  records = []
  for line in data.decode("utf-8").splitlines():
    try:
      records.append(json.loads(line) if line.strip() else line)
    except json.JSONDecodeError:
      records.append(line)
  return records, "jsonl.gz" if lower.endswith(".gz") else "jsonl"


def _write_documents(path: str, records: list, kind: str) -> None:
  if kind == "parquet":
    import pyarrow as pa
    import pyarrow.parquet as pq
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(records), buf)
    data = buf.getvalue()
  else:
    text = "\n".join(r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in records)
    data = text.encode("utf-8") + b"\n"
    if kind == "jsonl.gz":
      data = gzip.compress(data, mtime=0)
  storage.write_bytes(path, data)


def document_urls(records: Iterable) -> Iterator[str]:
  for record in records:
    if isinstance(record, dict) and isinstance(record.get("images"), list):
      yield from (u for u in record["images"] if is_url(u))


def _localize(records: list, local: dict[str, str], root: str) -> list:
  """The records with each fetched URL replaced by its image's path, and each relative image path
  they had made absolute from `root` (the written file is elsewhere)."""
  def one(image):
    if is_url(image):
      return local.get(image, image)
    return image_ref(image, root) if isinstance(image, str) and image else image

  out = []
  for record in records:
    if isinstance(record, dict) and isinstance(record.get("images"), list):
      record = dict(record, images=[one(i) for i in record["images"]])
    out.append(record)
  return out


# ---------------------------------------------------------------------------------------------------
# The run.
# ---------------------------------------------------------------------------------------------------

def _read_failed(out_dir: str) -> dict[str, str]:
  path = storage.path(_join(out_dir, "fetch", "failed.jsonl"))
  failed = {}
  if path.exists():
    for line in path.read_text().splitlines():
      try:
        entry = json.loads(line)
        failed[entry["url"]] = entry["reason"]
      except (json.JSONDecodeError, KeyError, TypeError):
        continue                   # a line cut by a killed run
  return failed


def _fetch_and_store(url: str, out_dir: str, settings: FetchSettings) -> str:
  """In a worker thread: the outcome; the image is in the store when it is `fetched` (so no more than
  `workers` images are ever held in memory)."""
  outcome, data = fetch_one(url, settings)
  if data is not None:
    target = storage.path(_join(out_dir, image_name(url)))
    target.parent.mkdir(parents=True, exist_ok=True)
    storage.write_bytes(os.fspath(target), data)
  return outcome


def fetch_documents(pattern: str, out_dir: str, settings: FetchSettings = FetchSettings(),
                    log: Callable[[str], None] | None = None, image_root: str | None = None) -> dict:
  """Fetches the image URLs of the interleaved documents `pattern` names (data/paths.py patterns)
  into `out_dir` and writes the documents with local paths (see the module docstring). Relative
  image paths the documents already had are written absolute, from `image_root` (as
  config.data.image_root), else from their file's folder. Returns the outcome counts (also in
  out_dir/fetch/summary.json)."""
  settings.check()
  files = expand_paths(pattern)
  names = [posixpath.basename(f.rstrip("/")) for f in files]
  twice = sorted(n for n, k in collections.Counter(names).items() if k > 1)
  if twice:
    raise DataError(f"--docs {pattern!r}: several files are named {twice}; their outputs in "
                    f"{out_dir} would overwrite each other (fetch each folder separately)")
  same = [f for f, n in zip(files, names) if _join(out_dir, n) == f]
  if same:
    raise DataError(f"--out {out_dir!r} holds the documents themselves ({same[0]}): they would be "
                    "overwritten; fetch into another folder")
  counts = collections.Counter({k: 0 for k in OUTCOMES})
  failed_before = _read_failed(out_dir)
  storage.path(_join(out_dir, "fetch")).mkdir(parents=True, exist_ok=True)
  failed_log = []
  with concurrent.futures.ThreadPoolExecutor(settings.workers) as pool:
    for n, (path, name) in enumerate(zip(files, names)):
      records, kind = _read_documents(path)
      urls = list(dict.fromkeys(document_urls(records)))
      local, todo = {}, []
      for url in urls:
        stored = _join(out_dir, image_name(url))
        if storage.path(stored).exists():
          counts["already_fetched"] += 1
          local[url] = image_name(url)
        elif url in failed_before and failed_before[url] not in TRANSIENT and not settings.retry_failed:
          counts["failed_before"] += 1
        else:
          todo.append(url)
      for url, outcome in zip(todo, pool.map(lambda u: _fetch_and_store(u, out_dir, settings), todo)):
        counts[outcome] += 1
        if outcome == "fetched":
          local[url] = image_name(url)
        else:
          failed_log.append(json.dumps(dict(url=url, reason=outcome)))
      root = image_root or parent_folder(path)
      _write_documents(_join(out_dir, name), _localize(records, local, root), kind)
      if log:
        log(f"fetch: {name} ({n + 1}/{len(files)}): {len(urls)} image URLs, {len(local)} local; "
            f"so far {dict((k, v) for k, v in counts.items() if v)}")
  if failed_log:
    old = storage.path(_join(out_dir, "fetch", "failed.jsonl"))
    previous = old.read_text() if old.exists() else ""
    storage.write_text(os.fspath(old), previous + "\n".join(failed_log) + "\n")
  summary = dict(counts=dict(counts), files=len(files), docs=pattern,
                 settings=dataclasses.asdict(settings))
  storage.write_text(_join(out_dir, "fetch", "summary.json"), json.dumps(summary, indent=2))
  return summary
