"""Raw items -> pixels at the tokenizer's size, in worker processes, in order, in bounded memory.

`prepare` streams each input shard through `decode_stream`: every pair or document has its images
decoded (`images.decode`) and fit (`images.fit`: `config.data.image_fit`; understanding images also
cut into dynamic-resolution tiles when `config.data.max_tiles` > 1). With `workers` > 0 this runs in
a process pool; at most `in_flight` items are submitted and not yet consumed, so memory does not grow
with the shard's size, and results come back in stream order, so the output does not depend on the
number of workers.

What a broken image does:
  pair (RawExample)         the pair is skipped, counted under the image's reason
  chat conversation         skipped, counted under the image's reason (its question refers to it)
  interleaved document      the image is removed and counted in `dropped_images` by reason; the
                            document is kept when any text or image with loss remains
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import multiprocessing
from typing import Iterable, Iterator

import numpy as np

from synergen_jax.data import images as image_ops
from synergen_jax.data.documents import Document, Skipped, TextSpan
from synergen_jax.core.errors import BadRecord
from synergen_jax.data.sources import RawExample


@dataclasses.dataclass(frozen=True)
class FitSettings:
  image_size: int
  channels: int
  image_fit: str
  background: int
  max_tiles: int
  thumbnail: bool


  @classmethod
  def from_config(cls, config, image_size: int, background: int) -> "FitSettings":
    d = config.data
    return cls(image_size, config.vq.channels, d.image_fit, background, d.max_tiles, bool(d.thumbnail))


@dataclasses.dataclass
class DecodedPair:
  gen: np.ndarray                 # [S, S, C]: the generation image
  tiles: list                     # [S, S, C] each: the understanding tiles (just `gen` at max_tiles 1)
  caption: str
  label: int
  key: str


@dataclasses.dataclass
class DecodedImage:
  pixels: list                    # one [S, S, C] for a generated image, the tiles for a read one
  loss: bool


@dataclasses.dataclass
class DecodedDocument:
  spans: list                     # TextSpan | DecodedImage
  task: str
  key: str
  dropped: collections.Counter    # images removed from this document, by reason


def _tiles(pixels, s: FitSettings):
  if s.max_tiles == 1:
    return [image_ops.fit(pixels, s.image_size, s.channels, s.image_fit, s.background)]
  return [image_ops.fit(t, s.image_size, s.channels, "exact")
          for t in image_ops.dynamic_tiles(pixels, s.image_size, s.max_tiles, s.thumbnail)]


def _pair(item: RawExample, key: str, s: FitSettings):
  caption = (item.text or "").strip()
  if not caption:
    return Skipped("empty_text", f"{key}: empty caption")
  try:
    pixels = image_ops.decode(item.image)
    gen = image_ops.fit(pixels, s.image_size, s.channels, s.image_fit, s.background)
    tiles = [gen] if s.max_tiles == 1 else _tiles(pixels, s)
  except BadRecord as e:
    return Skipped(e.reason, f"{key}: {e}")
  return DecodedPair(gen, tiles, caption, item.label, key)


def _document(doc: Document, s: FitSettings):
  spans, dropped = [], collections.Counter()
  for span in doc.spans:
    if isinstance(span, TextSpan):
      if span.text:
        spans.append(span)
      continue
    try:
      pixels = image_ops.decode(span.image)
      spans.append(DecodedImage(
          [image_ops.fit(pixels, s.image_size, s.channels, s.image_fit, s.background)]
          if span.loss else _tiles(pixels, s), span.loss))
    except BadRecord as e:
      if doc.task == "chat":
        return Skipped(e.reason, f"{doc.key}: {e}")
      dropped[e.reason] += 1
  if not any(span.loss for span in spans):
    return Skipped("no_loss_left" if dropped else "missing_text", f"{doc.key}: nothing to learn from")
  return DecodedDocument(spans, doc.task, doc.key, dropped)


def decode_item(item, key: str, settings: FitSettings):
  """One raw item -> DecodedPair | DecodedDocument | Skipped (a Skipped passes through)."""
  if isinstance(item, Skipped):
    return item
  if isinstance(item, Document):
    return _document(item, settings)
  return _pair(item, key, settings)


def _decode_batch(batch, settings):
  return [decode_item(item, key, settings) for key, item in batch]


def decode_pool(workers: int):
  """The worker pool `decode_stream` submits to (None: decode in this process). One per prepare:
  workers start once (each imports the package) and serve every shard."""
  if workers == 0:
    return contextlib.nullcontext(None)
  # spawn, not fork: the parent has JAX's threads running, and a forked copy of them can deadlock.
  return concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))


def decode_stream(items: Iterable[tuple[str, object]], settings: FitSettings, pool=None, *,
                  in_flight: int = 1024, batch: int = 16) -> Iterator:
  """(key, raw item) pairs -> decoded items in the same order, at most `in_flight` outstanding."""
  if pool is None:
    for key, item in items:
      yield decode_item(item, key, settings)
    return
  pending: collections.deque = collections.deque()
  chunk = []
  max_pending = max(1, in_flight // batch)
  for pair in items:
    chunk.append(pair)
    if len(chunk) == batch:
      pending.append(pool.submit(_decode_batch, chunk, settings)); chunk = []
      while len(pending) >= max_pending:
        yield from pending.popleft().result()
  if chunk:
    pending.append(pool.submit(_decode_batch, chunk, settings))
  while pending:
    yield from pending.popleft().result()


def decode_pairs(source, indices, settings: FitSettings) -> tuple[list[DecodedPair], collections.Counter]:
  """The usable pairs of a random-access source at `indices`, and the skipped ones by reason."""
  pairs, skipped = [], collections.Counter()
  for i in indices:
    try:
      item = source[int(i)]
    except BadRecord as e:
      item = Skipped(e.reason, str(e))
    out = decode_item(item, f"{source.name}[{i}]", settings)
    if isinstance(out, Skipped):
      skipped[out.reason] += 1
    else:
      pairs.append(out)
  return pairs, skipped
