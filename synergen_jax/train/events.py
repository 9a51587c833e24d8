"""TensorBoard events in the workdir, on any file system: `tensorboard --logdir <workdir>` works for a
local folder and for a bucket (`gs://...`) alike.

tensorboardX appends to its events file as it goes, and an object store cannot append. For a bucket
workdir the events are written to a local staging folder, and the events file is copied whole to
the workdir (core/storage.upload: a reader sees the previous copy or the new one, never half of
one) when asked (each held-out pass, the end of the run) and at most every `every_secs` otherwise.
Once a staged file passes ROTATE_BYTES it is copied a last time and a new one is started, so a long
run never uploads more than that per copy. A local workdir is written in place, as tensorboardX
always did.

Events are written synchronously (tensorboardX's EventsWriter and summary builders, not its
SummaryWriter): SummaryWriter hands events to a background thread whose `flush()` does not wait for
the queue, so a copy taken right after it could miss the last scalars.

Every writer's file gets a name of its own (time, host, process and a random tag), so a resumed run
(a new process, or a second writer in the same second) adds files beside the earlier runs' instead of
replacing them; TensorBoard reads all of them as one run.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid

import numpy as np

from synergen_jax.core import storage

ROTATE_BYTES = 16 << 20


class EventFiles:
  """Scalars, images and text for TensorBoard; `sync` copies staged events to a bucket workdir."""

  def __init__(self, workdir: str, every_secs: float = 60.0):
    self.workdir, self.every_secs = workdir, every_secs
    self.remote = storage.is_remote(workdir)
    self._staging = tempfile.mkdtemp(prefix="synergen_events_") if self.remote else None
    self._last_sync = time.monotonic()
    self._writer, self._folder = None, None
    self._open()

  def _open(self) -> None:
    from tensorboardX.event_file_writer import EventsWriter
    # One staging subfolder per file: whatever it holds is the one file this writer is writing.
    self._folder = (tempfile.mkdtemp(dir=self._staging) if self.remote else self.workdir)
    os.makedirs(self._folder, exist_ok=True)
    suffix = f".{os.getpid()}.{uuid.uuid4().hex[:8]}"
    self._writer = EventsWriter(os.path.join(self._folder, "events"), suffix)

  def _write(self, step: int, summary) -> None:
    from tensorboardX.proto import event_pb2
    self._writer.write_event(event_pb2.Event(wall_time=time.time(), step=step, summary=summary))

  def scalars(self, step: int, values: dict) -> None:
    from tensorboardX import summary
    for k, v in values.items():
      self._write(step, summary.scalar(k, float(v)))

  def image(self, step: int, tag: str, pixels: np.ndarray) -> None:
    """uint8 [H, W, C], C = 1 or 3."""
    from tensorboardX import summary
    self._write(step, summary.image(tag, pixels, dataformats="HWC"))

  def text(self, step: int, tag: str, markdown: str) -> None:
    from tensorboardX import summary
    self._write(step, summary.text(tag, markdown))

  def sync(self, force: bool = False) -> None:
    """Flushes the events file; for a bucket workdir, copies it out if forced or `every_secs` have
    passed."""
    if not force and time.monotonic() - self._last_sync < self.every_secs:
      return
    self._writer.flush()
    self._last_sync = time.monotonic()
    if not self.remote:
      return
    self._copy_out()
    if self._staged_bytes() > ROTATE_BYTES:
      self._writer.close()
      self._copy_out()              # the closed file's last records
      shutil.rmtree(self._folder, ignore_errors=True)
      self._open()

  def _staged_bytes(self) -> int:
    return sum(os.path.getsize(os.path.join(self._folder, n)) for n in os.listdir(self._folder))

  def _copy_out(self) -> None:
    for name in os.listdir(self._folder):
      storage.upload(os.path.join(self._folder, name), storage.path(self.workdir) / name)

  def close(self) -> None:
    self._writer.close()
    if self.remote:
      self._copy_out()
      shutil.rmtree(self._staging, ignore_errors=True)
