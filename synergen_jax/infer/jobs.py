"""Batch jobs over a jsonl of records: images for prompts, answers for (image, question) records.

One record per line, every line of a file of one kind:

  {"prompt": "a red bus", "id": "bus-1", "num": 4}        text -> `num` images (default: --per_prompt)
  {"image": "photos/1.jpg", "question": "What colour?"}  image -> answer ("question" optional:
                                                          without it, the caption prompt)

Answers of a run trained on conversations are asked through its chat template and end at
`<|im_end|>` (infer/chat.py); JobSettings.chat overrides.

Other fields are kept in the index (e.g. a benchmark's answers). "id" defaults to the line number;
ids must be unique. Image paths are relative to the jsonl's folder unless absolute.

Output in OUT_DIR: `images/<id>_<k>.png` for generation, and index files, one line per finished
item (`{"id", "sample", "file", "seed", ...}` or `{"id", "answer", ...}`). Every item's randomness
comes from its own seed (derived from --seed, the id and the sample number) and every prompt is
padded to the length the whole file needs, so an image does not depend on which items share its batch:
a job that is stopped and rerun skips the finished items (those in an index whose file exists) and
produces the same results as one uninterrupted run.

Several processes (SYNERGEN_PROCESS_ID / SYNERGEN_NUM_PROCESSES, as the launchers set them) split
the items between them, each writing `index-<process>-of-<count>.jsonl`; resuming reads every index
file whatever the process count was. Within a process the batch is split over all local devices
(loader.local_mesh). No collective is needed, so jax.distributed is not initialised. Whatever scores
a job (the suites of eval/) calls `wait_for_job` in process 0 first: it returns once every
process's share is in the index files, so nothing is scored on part of the items.

OUT_DIR may be a bucket (gs://...). Every PNG is written whole or not at all (core/storage.py); an
object cannot be appended to, so there each batch's index lines go into an object of their own,
`index-<process>-of-<count>-part-<n>.jsonl`, written after the batch's images: an item counts as
done when an index lists it and its file exists, on disk and on a bucket alike.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import re
import time
from typing import Callable, Iterator

import numpy as np
from PIL import Image as PILImage

from synergen_jax.core import storage
from synergen_jax.core.errors import DataError
from synergen_jax.data import images as image_ops
from synergen_jax.data import jsonl
from synergen_jax.infer import tasks
from synergen_jax.infer.decode import GREEDY, Sampling
from synergen_jax.infer.loader import Loaded

GENERATE, ANSWER = "generate", "answer"


@dataclasses.dataclass(frozen=True)
class Item:
  """One unit of work: sample k of a prompt, or the answer to one image record."""
  id: str
  sample: int
  record: dict
  seed: int


def read_records(path: str) -> tuple[str, list[dict]]:
  """(kind, records with their "id") from a jsonl file; errors name the file, line and field."""
  kind, records, ids = None, [], set()
  for where, line_no, record in jsonl.records(path):
    this = GENERATE if "prompt" in record else ANSWER if "image" in record else None
    if this is None:
      raise DataError(f"{where}: a record needs \"prompt\" (generation) or \"image\" (answers)")
    if kind is not None and this != kind:
      raise DataError(f"{where}: {this} record in a file of {kind} records; use one kind per file")
    kind = this
    field = "prompt" if this == GENERATE else "image"
    if not isinstance(record[field], str) or not record[field]:
      raise DataError(f"{where}: \"{field}\" must be a non-empty string, got {record[field]!r}")
    if "question" in record and not isinstance(record["question"], str):
      raise DataError(f"{where}: \"question\" must be a string, got {record['question']!r}")
    if "num" in record and (not isinstance(record["num"], int) or record["num"] < 1):
      raise DataError(f"{where}: \"num\" must be a positive integer, got {record['num']!r}")
    record = dict(record, id=str(record.get("id", f"{line_no:08d}")))
    if record["id"] in ids or "/" in record["id"]:
      raise DataError(f"{where}: id {record['id']!r} is " +
                      ("used twice" if record["id"] in ids else "not a file name (no '/')"))
    ids.add(record["id"])
    records.append(record)
  return kind, records


def item_seed(seed: int, item_id: str, sample: int) -> int:
  """A 32-bit seed from the job's seed, the item's id and its sample number (stable across runs,
  processes and Python versions: not hash())."""
  digest = hashlib.sha256(f"{seed}\0{item_id}\0{sample}".encode()).digest()
  return int.from_bytes(digest[:4], "little")


def items_of(kind: str, records: list[dict], num: int, seed: int) -> list[Item]:
  if kind == ANSWER:
    return [Item(r["id"], 0, r, item_seed(seed, r["id"], 0)) for r in records]
  return [Item(r["id"], k, r, item_seed(seed, r["id"], k))
          for r in records for k in range(r.get("num", num))]


def share(items: list, process: int, count: int) -> list:
  """This process's items: every count-th one, so each process gets prompts of all lengths."""
  return items[process::count]


def process_share() -> tuple[int, int]:
  return int(os.environ.get("SYNERGEN_PROCESS_ID", 0)), int(os.environ.get("SYNERGEN_NUM_PROCESSES", 1))


def image_file(item: Item) -> str:
  """The image's name relative to OUT_DIR ('/' on every file system: it is stored in the index)."""
  return f"images/{item.id}_{item.sample}.png"


def _index_lines(path) -> Iterator[dict]:
  """The entries of one index file; a line cut short by a stop in mid-write is skipped."""
  for line in path.read_text().splitlines():
    try:
      yield json.loads(line)
    except json.JSONDecodeError:
      continue


def _present(out, files: set[str]) -> set[str]:
  """Which of `files` (relative to out) exist: one listing per folder, not one request per file
  (on a bucket each existence check is a round trip, and a job has tens of thousands of images)."""
  by_folder: dict[str, dict[str, str]] = {}
  for f in files:
    folder, _, name = f.rpartition("/")
    by_folder.setdefault(folder, {})[name] = f
  present = set()
  for folder, names in by_folder.items():
    where = out / folder if folder else out
    if where.exists():
      listed = {p.name for p in where.iterdir()}
      present.update(f for name, f in names.items() if name in listed)
  return present


def read_index(out_dir) -> dict[tuple[str, int], dict]:
  """Every finished item of every index file in out_dir (a folder or a bucket path): (id, sample) ->
  its index line. An item whose image file is missing is not finished (it runs again)."""
  out = storage.path(out_dir, "out_dir")
  files = sorted(out.glob("index-*.jsonl"), key=os.fspath)      # none yet: an empty list
  entries = [entry for f in files for entry in _index_lines(f)]
  present = _present(out, {e["file"] for e in entries if "file" in e})
  return {(e["id"], e["sample"]): e for e in entries if "file" not in e or e["file"] in present}


def _batches(items: list, size: int) -> Iterator[list]:
  for start in range(0, len(items), size):
    yield items[start:start + size]


def png_bytes(pixels: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  PILImage.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(buffer, format="PNG")
  return buffer.getvalue()


def save_png(pixels: np.ndarray, path) -> None:
  """Readable only when whole, on disk and on a bucket, so a stop never leaves half a PNG."""
  storage.write_bytes(path, png_bytes(pixels))


def _ends_with_newline(path) -> bool:
  with open(path, "rb") as f:
    f.seek(-1, os.SEEK_END)
    return f.read(1) == b"\n"


class _AppendedIndex:
  """A local index: one file per process, appended to and flushed after each batch."""

  def __init__(self, out, process: int, count: int):
    self.path = out / f"index-{process:05d}-of-{count:05d}.jsonl"
    self.file = open(self.path, "a")
    if self.file.tell() and not _ends_with_newline(self.path):
      self.file.write("\n")       # after a line cut short by a stop: start a fresh one

  def add(self, lines: list[str]) -> None:
    self.file.write("".join(lines))
    self.file.flush()

  def close(self) -> None:
    self.file.close()


class _BucketIndex:
  """A bucket index: objects cannot be appended to, so each batch's lines are a new object, numbered
  after this process's existing parts (a rerun never overwrites the parts of an earlier run)."""

  def __init__(self, out, process: int, count: int):
    self.out, self.prefix = out, f"index-{process:05d}-of-{count:05d}-part-"
    pattern = re.compile(re.escape(self.prefix) + r"(\d+)\.jsonl$")
    numbers = [int(m.group(1)) for p in out.glob(self.prefix + "*.jsonl")
               if (m := pattern.match(p.name))]
    self.next = max(numbers, default=-1) + 1

  def add(self, lines: list[str]) -> None:
    storage.write_text(self.out / f"{self.prefix}{self.next:06d}.jsonl", "".join(lines))
    self.next += 1

  def close(self) -> None:
    pass


@dataclasses.dataclass
class JobSettings:
  num: int = 1                     # images per prompt without a "num" field
  cfg_scale: float = 7.5
  sampling: Sampling = Sampling()
  answer_sampling: Sampling = GREEDY
  max_new_tokens: int = 32
  seed: int = 0
  batch_size: int = 8              # rows per step on each local device
  chat: bool | None = None         # answers through the chat template (None: as the run trained)


def run_job(loaded: Loaded, records_path: str, out_dir: str, settings: JobSettings,
            log: Callable[[str], None] = print) -> dict:
  """Runs (or resumes) the job; returns {"kind", "items", "done_before", "generated", "seconds",
  "per_second"} for this process."""
  storage.check_reachable(out_dir, "out_dir")     # a missing bucket: one clear error, before any work
  out = storage.path(out_dir, "out_dir")
  kind, records = read_records(records_path)
  process, count = process_share()
  items = items_of(kind, records, settings.num, settings.seed)
  done = read_index(out)
  mine = share(items, process, count)
  todo = [it for it in mine if (it.id, it.sample) not in done]
  (out / "images").mkdir(parents=True, exist_ok=True)     # on a bucket: nothing to make
  devices = loaded.mesh.devices.size if loaded.mesh is not None else 1
  rows = settings.batch_size * devices
  log(f"sample: {len(items)} {kind} items in {records_path}; this process ({process} of {count}) "
      f"has {len(mine)}, {len(todo)} still to do, {rows} per batch on "
      f"{devices} device(s)")
  common = dict(cfg_scale=settings.cfg_scale, job_seed=settings.seed)
  if kind == GENERATE:
    pad_to = tasks.generation_pad_to(loaded, [r["prompt"] for r in records])
    step = lambda batch: _generate(loaded, batch, settings, rows, pad_to)
  else:
    base = _records_folder(records_path)
    chat = tasks.use_chat(loaded, settings.chat)
    pad_to = tasks.caption_pad_to(loaded, [r.get("question") for r in records], chat)
    step = lambda batch: _answer(loaded, batch, settings, rows, pad_to, base, chat)
  t0, finished = time.time(), 0
  index = (_BucketIndex if storage.is_remote(out) else _AppendedIndex)(out, process, count)
  try:
    for batch in _batches(todo, rows):
      lines = []
      for item, entry in zip(batch, step(batch)):
        if "pixels" in entry:      # the image first: an index line never names a missing file
          save_png(entry.pop("pixels"), out / image_file(item))
          entry["file"] = image_file(item)
        extra = {k: v for k, v in item.record.items() if k not in ("id", "num")}
        lines.append(json.dumps(dict(id=item.id, sample=item.sample, seed=item.seed, **entry,
                                     **extra, **common)) + "\n")
      index.add(lines)
      finished += len(batch)
      log(f"sample: {finished}/{len(todo)} ({finished / (time.time() - t0):.2f} items/s)")
  finally:
    index.close()
  seconds = time.time() - t0
  return dict(kind=kind, items=len(mine), done_before=len(mine) - len(todo), generated=finished,
              seconds=seconds, per_second=finished / seconds if finished else None)


# How long process 0 waits for the others while no new item appears: a process that died leaves
# its share unfinished, and waiting forever would hide that.
WAIT_STALL_S = 1800


def wait_for_job(out_dir, records_path: str, settings: JobSettings, stall_s: float = WAIT_STALL_S,
                 poll_s: float = 5.0, log: Callable[[str], None] = print,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> dict[tuple[str, int], dict]:
  """The index entries of every item of the job, (id, sample) -> entry, in the records' order, once
  all processes have finished their shares: the index files are read every poll_s seconds until each
  item is listed with its file. Entries of other jobs in the same folder are left out. Raises
  TimeoutError after stall_s seconds without a newly finished item, naming what each process owes
  (the share of the current process count: item i belongs to process i % count)."""
  kind, records = read_records(records_path)
  items = items_of(kind, records, settings.num, settings.seed)
  _, count = process_share()
  last_missing, last_change = None, clock()
  while True:
    done = read_index(out_dir)
    missing = [i for i, it in enumerate(items) if (it.id, it.sample) not in done]
    if not missing:
      return {(it.id, it.sample): done[(it.id, it.sample)] for it in items}
    if len(missing) != last_missing:
      last_missing, last_change = len(missing), clock()
      log(f"sample: waiting for the other processes: {len(missing)} of {len(items)} items to go")
    elif clock() - last_change > stall_s:
      owed: dict[int, list[Item]] = {}
      for i in missing:
        owed.setdefault(i % count, []).append(items[i])
      detail = "; ".join(f"process {p}: {len(its)} (first: id {its[0].id!r} sample {its[0].sample})"
                         for p, its in sorted(owed.items()))
      raise TimeoutError(f"{out_dir}: {len(missing)} of {len(items)} items still unfinished after "
                         f"{stall_s:.0f} s without progress ({detail}); rerun the processes that "
                         "stopped (they resume), then score again")
    sleep(poll_s)


def _records_folder(records_path: str) -> str:
  """Where relative image paths of answer records start: the jsonl's folder."""
  if storage.is_remote(records_path):
    return os.fspath(storage.path(records_path).parent)
  return os.path.dirname(os.path.abspath(records_path))


def _image_path(base: str, image: str) -> str:
  """`image` as given when absolute or a bucket path, else relative to `base`."""
  if storage.is_remote(image) or os.path.isabs(image):
    return image
  return os.fspath(storage.path(base) / image)


def _generate(loaded: Loaded, batch: list[Item], settings: JobSettings, rows: int, pad_to: int):
  codes = tasks.generate_codes(loaded, [it.record["prompt"] for it in batch],
                               cfg_scale=settings.cfg_scale, sampling=settings.sampling,
                               seeds=[it.seed for it in batch], pad_to=pad_to, rows=rows)
  return [dict(pixels=p) for p in loaded.image_tokenizer.decode(codes)]


def _answer(loaded: Loaded, batch: list[Item], settings: JobSettings, rows: int, pad_to: int,
            base: str, chat: bool):
  tile_codes = []
  for it in batch:
    path = _image_path(base, it.record["image"])
    try:
      pixels = image_ops.decode(path)       # a local file or a bucket object
    except Exception as e:
      raise DataError(f"record {it.id!r}: cannot read image {path}: {e}") from None
    tile_codes.append(tasks.image_codes(loaded, pixels))
  answers = tasks.caption(loaded, tile_codes, question=[it.record.get("question") for it in batch],
                          sampling=settings.answer_sampling, max_new_tokens=settings.max_new_tokens,
                          seeds=[it.seed for it in batch], pad_to=pad_to, rows=rows, chat=chat)
  return [dict(answer=a) for a in answers]
