"""The prepared-record codec: one example <-> the bytes of one ArrayRecord entry.

`prepare` (prepare/writer.py) encodes, the Grain pipeline (data/pipeline.py) decodes; neither imports
the other. A record is a msgpack dict:

  kinds        int8  [P]        TEXT (0) or IMAGE (1) per part, in sequence order
  loss         int8  [P]        whether the part's predictions carry loss
  text         int32 [sum len]  the text parts' token ids, concatenated
  text_lens    int32 [n_text]   length of each text part
  codes        int32 [n_img, h, w]  each image part's code grid
  label, source_index, task (TASK_IDS), caption: provenance, for evaluation and tests

FORMAT_VERSION goes into meta.json; the pipeline refuses data of another version.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from flax import serialization

from synergen_jax.core.batch import IMAGE, TEXT
from synergen_jax.data.layout import Image, Part, Text

# 2: the index also counts loss-bearing text tokens and images (the packer's per-row budgets).
FORMAT_VERSION = 2
# Pair tasks (the task mix) then document tasks (data/documents.py); ids are only ever appended.
TASK_IDS = dict(caption=0, generation=1, interleaved=2, chat=3, text=4)
TASK_NAMES = {v: k for k, v in TASK_IDS.items()}


def encode_record(parts: Sequence[Part], *, label: int, source_index: int, task: str,
                  caption: str) -> bytes:
  texts = [np.asarray(p.tokens, np.int32) for p in parts if isinstance(p, Text)]
  grids = [np.asarray(p.codes, np.int32) for p in parts if isinstance(p, Image)]
  return serialization.msgpack_serialize(dict(
      kinds=np.asarray([TEXT if isinstance(p, Text) else IMAGE for p in parts], np.int8),
      loss=np.asarray([p.loss for p in parts], np.int8),
      text=np.concatenate(texts) if texts else np.zeros(0, np.int32),
      text_lens=np.asarray([len(t) for t in texts], np.int32),
      codes=np.stack(grids) if grids else np.zeros((0, 0, 0), np.int32),
      label=np.int32(label), source_index=np.int32(source_index), task=np.int8(TASK_IDS[task]),
      caption=caption))


def decode_record(data: bytes) -> dict:
  return serialization.msgpack_restore(data)


def record_parts(record: dict) -> list[Part]:
  """A decoded record's parts, in sequence order, as `data/layout.py` lays them out."""
  parts, offset, n_text, n_image = [], 0, 0, 0
  for kind, loss in zip(record["kinds"], record["loss"]):
    if kind == IMAGE:
      parts.append(Image(record["codes"][n_image], bool(loss)))
      n_image += 1
    else:
      n = int(record["text_lens"][n_text])
      parts.append(Text(record["text"][offset:offset + n], bool(loss)))
      offset, n_text = offset + n, n_text + 1
  return parts
