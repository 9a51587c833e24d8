"""Example -> model slots: the one place that knows the sequence format and the target shift.

An example is a list of parts, each `Text(tokens, loss)` or `Image(codes[h, w], loss)`. It becomes

  <s> text ... <boi> [window_0 .. window_{N-1}] <eoi> text ... </s>

with one slot per text token and one per fh x fw window of image codes. Slot t predicts slot t+1:
a text slot's successor is a text target, an image slot's successor an image (window) target; <boi>
predicts the first window and the last window predicts <eoi>. A part with `loss=True` puts weight 1
on the predictions *of its own slots* (an image part also on its closing <eoi>, so a generator learns
to stop). `pack` lays examples side by side in fixed-length rows with segment ids and positions
restarting per example.
"""

from __future__ import annotations

import dataclasses
from typing import Iterable, Sequence, Union

import numpy as np

from synergen_jax.core.batch import IMAGE, SLOT_FIELDS, TEXT, grid_to_windows, zeros


@dataclasses.dataclass(frozen=True)
class SpecialTokens:
  pad: int = 0
  bos: int = 1
  eos: int = 2
  boi: int = 3
  eoi: int = 4
  uncond: int = 5


@dataclasses.dataclass(frozen=True)
class Text:
  tokens: Sequence[int]
  loss: bool = False


@dataclasses.dataclass(frozen=True)
class Image:
  codes: np.ndarray          # [h, w] code grid
  loss: bool = False


Part = Union[Text, Image]


def layout_example(parts: Sequence[Part], fold, special: SpecialTokens = SpecialTokens(),
                   add_bos: bool = True, add_eos: bool = True) -> dict[str, np.ndarray]:
  """Returns per-slot arrays of length L (image_codes / image_targets are [L, r])."""
  r = fold[0] * fold[1]
  tokens, codes, windows, modality, loss_here = [], [], [], [], []

  def text_slot(tok, loss):
    tokens.append(tok); codes.append(np.zeros(r, np.int32)); windows.append(0)
    modality.append(TEXT); loss_here.append(loss)

  if add_bos:
    text_slot(special.bos, False)
  for part in parts:
    if isinstance(part, Text):
      if len(part.tokens) == 0:
        raise ValueError("layout_example: empty text part")
      for tok in part.tokens:
        text_slot(int(tok), part.loss)
    elif isinstance(part, Image):
      grid = np.asarray(part.codes)
      if grid.ndim != 2 or grid.shape[0] % fold[0] or grid.shape[1] % fold[1]:
        raise ValueError(f"layout_example: code grid {grid.shape} does not fold by {fold}")
      text_slot(special.boi, False)
      for i, window in enumerate(grid_to_windows(grid, fold)):
        tokens.append(special.pad); codes.append(np.asarray(window, np.int32)); windows.append(i)
        modality.append(IMAGE); loss_here.append(part.loss)
      text_slot(special.eoi, part.loss)
    else:
      raise TypeError(f"layout_example: unknown part {type(part).__name__}")
  if add_eos:
    text_slot(special.eos, any(p.loss for p in parts if isinstance(p, Text)))

  n = len(tokens)
  out = dict(text_tokens=np.asarray(tokens, np.int32), image_codes=np.stack(codes).astype(np.int32),
             window_ids=np.asarray(windows, np.int32), modality=np.asarray(modality, np.int32),
             positions=np.arange(n, dtype=np.int32))
  # Slot t predicts slot t+1, weighted by whether slot t+1 carries loss.
  nxt_mod = np.append(out["modality"][1:], TEXT)
  nxt_loss = np.append(np.asarray(loss_here[1:], bool), False)
  out["text_targets"] = np.append(out["text_tokens"][1:], special.pad).astype(np.int32)
  out["text_weights"] = ((nxt_mod == TEXT) & nxt_loss).astype(np.float32)
  out["image_targets"] = np.concatenate([out["image_codes"][1:], np.zeros((1, r), np.int32)])
  out["image_weights"] = ((nxt_mod == IMAGE) & nxt_loss).astype(np.float32)
  return out


def pack(examples: Sequence[dict[str, np.ndarray]], seq_len: int, fold) -> dict[str, np.ndarray]:
  """Places laid-out examples one after another in one row of seq_len slots (no splitting)."""
  row = {k: v[0] for k, v in zeros(1, seq_len, fold[0] * fold[1]).items()}
  start = 0
  for seg, ex in enumerate(examples, start=1):
    n = len(ex["text_tokens"])
    if start + n > seq_len:
      raise ValueError(f"pack: example {seg - 1} of {n} slots does not fit the {seq_len - start} "
                       f"slots left in a row of {seq_len}")
    for k in SLOT_FIELDS:
      row[k][start:start + n] = ex[k]
    row["segment_ids"][start:start + n] = seg
    start += n
  return row


def fill_row(examples: Iterable[dict[str, np.ndarray]], seq_len: int, fold) -> dict[str, np.ndarray]:
  """Packs examples in order until the next one does not fit (that one is dropped: for synthetic
  and test data only; the data pipeline's packer carries it over to the next row)."""
  chosen, used = [], 0
  for ex in examples:
    if used + len(ex["text_tokens"]) > seq_len:
      break
    chosen.append(ex)
    used += len(ex["text_tokens"])
  return pack(chosen, seq_len, fold)


def stack_rows(rows: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
  return {k: np.stack([row[k] for row in rows]) for k in rows[0]}
