"""What a streaming source yields: pairs, documents, or a counted skip.

Random-access sources (data/sources.py) hold (image, caption) pairs that `prepare` turns into tasks by
`config.data.tasks`. Web-scale formats (data/formats.py) are read as streams of input shards and
yield one of:

  RawExample   an (image, caption) pair: the task mix applies (caption / generation / interleaved)
  Document     a finished example: spans of text and images in order, each with its own loss flag
               (interleaved web documents, chat conversations, plain text)
  Skipped      a record that cannot be used, with the reason it is counted under in meta.json
               (a stream cannot raise for one record and go on, so it yields the skip instead)

A Document's text spans are raw strings: `prepare` tokenizes them, and special pieces written inside
them (`<|im_start|>`) become their ids. An ImageSpan with loss=True is an image the model learns to
generate (one tile, `config.data.image_fit`); with loss=False an image it reads (dynamic-resolution
tiles when `config.data.max_tiles` > 1).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator, Optional, Sequence, Union

from synergen_jax.data.sources import RawExample

DOCUMENT_TASKS = ("interleaved", "chat", "text")


@dataclasses.dataclass(frozen=True)
class TextSpan:
  text: str
  loss: bool = False


@dataclasses.dataclass(frozen=True)
class ImageSpan:
  image: Any                # uint8 array, bytes or a path: decoded by images.decode
  loss: bool = False


@dataclasses.dataclass(frozen=True)
class Document:
  spans: tuple              # TextSpan | ImageSpan, in sequence order
  task: str                 # one of DOCUMENT_TASKS
  key: str = ""             # where it came from ("shard-00003.tar/000123"), for error messages


@dataclasses.dataclass(frozen=True)
class Skipped:
  reason: str               # the meta.json `skipped` key: "undecodable_image", "truncated_tar", ...
  where: str                # file and record, for the log


Item = Union[RawExample, Document, Skipped]


@dataclasses.dataclass(frozen=True)
class InputShard:
  """One unit of input that `prepare` writes as one output part and can skip when already done.

  `name` is stable across runs (it names the output file), `read()` streams the shard's items from
  the start, and `split` is "train" or "eval". A shard of a random-access source also lists the
  source index of each item it yields (`source_indices`); a stream's items are numbered from 0.
  """
  name: str
  split: str
  read: Callable[[], Iterator[Item]]
  source_indices: Optional[Sequence[int]] = None
