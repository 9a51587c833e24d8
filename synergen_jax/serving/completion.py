"""One chat answer as it grows token by token: where it stops and what text is new.

It stops at a stop id (not part of the answer; finish_reason "stop"), at a stop string (cut before
it; "stop") or after max_tokens tokens ("length"). Text is emitted as deltas of the decoded answer;
the last (longest stop string - 1) characters are held back until they cannot begin a stop string,
so a streamed answer never shows text that the stop string later removes, and the deltas always add
up to the final answer.
"""

from __future__ import annotations

from typing import Callable, Sequence


class Answer:

  def __init__(self, decode: Callable[[list[int]], str], stop_ids: Sequence[int],
               stop_strings: Sequence[str], max_tokens: int):
    self._decode, self._stop_ids = decode, frozenset(stop_ids)
    self._stops, self._max_tokens = tuple(stop_strings), max_tokens
    self._hold = max((len(s) for s in self._stops), default=1) - 1
    self.ids: list[int] = []
    self.text = ""                   # what has been emitted so far
    self.finish: str | None = None   # "stop" | "length" once done

  def add(self, token: int) -> str:
    """Takes the next sampled token; returns the new text to emit (maybe "")."""
    if self.finish is not None:
      return ""
    if token in self._stop_ids:
      self.finish = "stop"
      return self._emit(self._full(), final=True)
    self.ids.append(int(token))
    full = self._full()
    cuts = [i for i in (full.find(s) for s in self._stops) if i >= 0]
    if cuts:
      self.finish = "stop"
      return self._emit(full[:min(cuts)], final=True)
    if len(self.ids) >= self._max_tokens:
      self.finish = "length"
      return self._emit(full, final=True)
    return self._emit(full, final=False)

  def _full(self) -> str:
    return self._decode(self.ids).lstrip()

  def _emit(self, full: str, final: bool) -> str:
    if not full.startswith(self.text):   # a partial multi-byte piece changed its rendering: wait
      if not final:
        return ""
      full = self.text + full[len(self.text):]
    upto = len(full) if final else max(len(self.text), len(full) - self._hold)
    delta = full[len(self.text):upto]
    self.text += delta
    return delta
