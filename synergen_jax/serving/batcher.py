"""Dynamic batching: requests that arrive together share one batch on the model.

Each request becomes one or more jobs (one per image, one per chat answer). Jobs wait in one bounded
FIFO queue (a submit that would overflow it is refused with 429). The batching loop takes the oldest
job, waits up to `window_s` from its arrival for more jobs of its group (the same compiled program:
the same kind, and for chat the same top-k; temperature, top-p and guidance are per row) until
`max_batch` of them are there, and runs them as one batch in the model thread while new jobs
queue. A cancelled job (timeout, client gone) leaves the queue at once; in a running batch its row
stops counting, and a batch whose rows are all gone stops.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import time
from typing import Any, Callable

from absl import logging

from synergen_jax.serving.errors import ApiError


@dataclasses.dataclass(eq=False)
class Job:
  group: tuple                     # jobs of one group can share a batch
  payload: Any                     # image: prompt ids; chat: the laid-out prompt
  seed: int                        # the row's PRNG seed: its result depends on nothing else
  events: asyncio.Queue            # what the model thread reports, read by the request's handler
  loop: asyncio.AbstractEventLoop
  answer: Any = None               # chat: completion.Answer
  settings: tuple = ()             # the row's own sampling: chat (temperature, top_p); image (cfg,)
  cancelled: bool = False
  arrived: float = dataclasses.field(default_factory=time.monotonic)

  def send(self, event) -> None:
    """From any thread: hand an event to the waiting handler."""
    self.loop.call_soon_threadsafe(self.events.put_nowait, event)


class Batcher:

  def __init__(self, run_batch: Callable[[tuple, list[Job]], None], *, max_batch: int,
               window_s: float, max_queue: int):
    self.run_batch, self.max_batch, self.window_s, self.max_queue = (
        run_batch, max_batch, window_s, max_queue)
    self.waiting: list[Job] = []
    self.batches = self.rows = 0       # statistics, shown by /health
    self.busy = False
    self._wakeup = asyncio.Event()
    self._model_thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="model")
    self._task: asyncio.Task | None = None

  def start(self) -> None:
    self._task = asyncio.get_running_loop().create_task(self._loop())

  async def stop(self) -> None:
    if self._task is not None:
      self._task.cancel()
    self._model_thread.shutdown(wait=False, cancel_futures=True)

  def submit(self, jobs: list[Job]) -> None:
    """All of a request's jobs or none."""
    if len(self.waiting) + len(jobs) > self.max_queue:
      raise ApiError(429, f"the server is busy ({len(self.waiting)} jobs queued, at most "
                     f"{self.max_queue}); retry later", code="queue_full")
    self.waiting += jobs
    self._wakeup.set()

  def cancel(self, jobs: list[Job]) -> None:
    for job in jobs:
      job.cancelled = True
    gone = set(map(id, jobs))
    self.waiting = [j for j in self.waiting if id(j) not in gone]

  async def _loop(self) -> None:
    loop = asyncio.get_running_loop()
    while True:
      while not self.waiting:
        self._wakeup.clear()
        await self._wakeup.wait()
      group = self.waiting[0].group
      deadline = self.waiting[0].arrived + self.window_s
      while (sum(j.group == group for j in self.waiting) < self.max_batch and self.waiting and
             time.monotonic() < deadline):
        self._wakeup.clear()
        try:
          await asyncio.wait_for(self._wakeup.wait(), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
          break
      batch = [j for j in self.waiting if j.group == group][:self.max_batch]
      if not batch:
        continue                       # the first job was cancelled while the window was open
      self._take(batch)
      self.batches, self.rows, self.busy = self.batches + 1, self.rows + len(batch), True
      try:
        await loop.run_in_executor(self._model_thread, self._run, group, batch)
      finally:
        self.busy = False

  def _take(self, batch: list[Job]) -> None:
    taken = set(map(id, batch))
    self.waiting = [j for j in self.waiting if id(j) not in taken]

  def _run(self, group: tuple, batch: list[Job]) -> None:
    try:
      self.run_batch(group, batch)
    except Exception as e:  # noqa: BLE001 - reported to every request of the batch, server stays up
      logging.exception("batch of %d %s jobs failed", len(batch), group[0])
      for job in batch:
        job.send(("error", ApiError(500, f"the model failed on this batch: {type(e).__name__}: {e}")))
