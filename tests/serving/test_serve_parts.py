"""The server's parts without a model: dynamic batching and the queue, how an answer stops and
streams, and which image URLs are refused."""

import asyncio
import time

import pytest

from synergen_jax.serving.batcher import Batcher, Job
from synergen_jax.serving.completion import Answer
from synergen_jax.serving.errors import ApiError
from synergen_jax.serving.image_input import ImageLimits, pixels_of, public_address


def _run_batcher(scenario, **settings):
  """Runs `scenario(batcher, make_job)` against a batcher whose model records each batch."""
  batches = []

  def run_batch(group, jobs):
    time.sleep(0.05)                            # the model is busy for a while
    batches.append((group, [j.payload for j in jobs]))
    for job in jobs:
      job.send(("done", job.payload))

  async def main():
    batcher = Batcher(run_batch, **settings)
    batcher.start()
    loop = asyncio.get_running_loop()
    make = lambda group, payload: Job(group, payload, 0, asyncio.Queue(), loop)
    try:
      return await scenario(batcher, make)
    finally:
      await batcher.stop()

  return asyncio.run(main()), batches


def test_jobs_arriving_together_share_batches_of_their_group_in_order():
  async def scenario(batcher, make):
    jobs = [make(("a",), k) for k in range(10)] + [make(("b",), 100)]
    for job in jobs:
      batcher.submit([job])
    return [await job.events.get() for job in jobs]

  results, batches = _run_batcher(scenario, max_batch=4, window_s=0.05, max_queue=64)
  assert [r[1] for r in results] == list(range(10)) + [100]          # every job answered, its own
  assert batches == [(("a",), [0, 1, 2, 3]), (("a",), [4, 5, 6, 7]), (("a",), [8, 9]),
                     (("b",), [100])]


def test_a_full_queue_refuses_with_429_and_cancelled_jobs_never_run():
  async def scenario(batcher, make):
    first = make(("a",), 0)
    batcher.submit([first])
    await asyncio.sleep(0.01)                   # the first batch is running now
    waiting = [make(("a",), k) for k in (1, 2, 3)]
    batcher.submit(waiting)
    with pytest.raises(ApiError) as refused:
      batcher.submit([make(("a",), 4)])         # over max_queue=3
    batcher.cancel(waiting[:2])                 # e.g. those clients disconnected
    batcher.submit([make(("a",), 5)])           # their slots are free again
    await first.events.get()
    await waiting[2].events.get()
    return refused.value

  error, batches = _run_batcher(scenario, max_batch=8, window_s=0.0, max_queue=3)
  assert error.status == 429 and error.body()["error"]["type"] == "rate_limit_error"
  assert [b[1] for b in batches][0] == [0] and 1 not in sum((b[1] for b in batches), [])
  assert sorted(sum((b[1] for b in batches), [])) == [0, 3, 5]


def _answer(stops=(), max_tokens=100, stop_ids=(0,)):
  pieces = {1: "ab", 2: "c", 3: "d", 4: "END", 5: "x"}
  return Answer(lambda ids: "".join(pieces[i] for i in ids), stop_ids, stops, max_tokens)


def test_an_answer_streams_deltas_that_add_up_and_never_show_a_stop_string():
  answer = _answer(stops=("cdE",))
  deltas = [answer.add(t) for t in (1, 2, 3, 4, 5)]
  assert answer.text == "ab" and answer.finish == "stop"
  assert "".join(deltas) == "ab" and deltas[-1] == ""                 # nothing after the stop
  assert all("c" not in d for d in deltas)                            # held back, then cut


def test_an_answer_ends_at_a_stop_id_or_after_max_tokens():
  answer = _answer()
  assert [answer.add(t) for t in (1, 2, 0, 3)] == ["ab", "c", "", ""]
  assert answer.finish == "stop" and answer.ids == [1, 2]
  answer = _answer(max_tokens=2)
  answer.add(1), answer.add(3)
  assert answer.finish == "length" and answer.text == "abd"


@pytest.mark.parametrize("address, public", [
    ("127.0.0.1", False), ("10.1.2.3", False), ("192.168.0.1", False), ("172.16.5.5", False),
    ("169.254.169.254", False), ("100.64.0.1", False), ("0.0.0.0", False), ("::1", False),
    ("::ffff:127.0.0.1", False), ("fe80::1", False), ("fd00::1", False), ("224.0.0.1", False),
    ("8.8.8.8", True), ("2606:4700::1111", True)])
def test_only_public_addresses_count_as_public(address, public):
  assert public_address(address) is public


@pytest.mark.parametrize("url, allow, says", [
    ("http://example.com/a.png", False, "remote image URLs are off"),
    ("file:///etc/passwd", True, "only data: URLs"),
    ("ftp://example.com/a.png", True, "only data: URLs"),
    ("http://127.0.0.1:1/a.png", True, "not a public address"),
    ("http://[::1]:1/a.png", True, "not a public address"),
    ("http://localhost:1/a.png", True, "non-public address"),     # a name that resolves to loopback
    ("data:image/png;base64,@@@", True, "not valid base64"),
    ("data:image/png;base64,aGVsbG8=", True, "does not decode"),
])
def test_image_urls_that_are_refused(url, allow, says):
  with pytest.raises(ApiError) as refused:
    asyncio.run(pixels_of(url, ImageLimits(allow_remote=allow, fetch_timeout_s=5), "image"))
  assert refused.value.status == 400 and says in refused.value.message
