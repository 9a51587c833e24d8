"""Step-wise text decoding at fixed shapes: one compiled prefill, one compiled step per token.

The same computation as Decoder.generate_text (its prefill, its one-slot steps, the same per-row key
splits), unrolled into Python so that each token can be streamed as soon as it is sampled and a batch
whose rows are all finished or abandoned stops at once. Every batch has `rows` rows padded to
`prompt_len` slots with a cache of prompt_len + max_new slots, and each row samples with its own
temperature and top-p (decode.sample_rows), so it compiles once per top-k and a row's tokens do not
depend on the other rows.
"""

from __future__ import annotations

from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from synergen_jax.infer.decode import Decoder, left_pad, row_keys, sample_rows, split_key
from synergen_jax.model.synergen_vl import SynerGenVL


class TextStepper:

  def __init__(self, decoder: Decoder, rows: int, prompt_len: int, max_new: int, top_k: int = 0):
    self.decoder, self.rows, self.prompt_len, self.max_new = decoder, rows, prompt_len, max_new
    self.top_k = top_k
    # Jitted per instance (the server keeps a few, one per top-k, and drops the oldest).
    self._prefill = jax.jit(self._prefill_fn)
    self._step = jax.jit(self._step_fn, donate_argnums=(1,))

  def _logits(self, params, h):
    return self.decoder.model.apply({"params": params}, h[:, None],
                                    method=SynerGenVL.text_logits)[:, 0]

  def _prefill_fn(self, params, batch, keys, temperature, top_p):
    d = self.decoder
    h, cache = d.prefill(params, batch, self.prompt_len + self.max_new)
    keys, key = split_key(keys)
    return sample_rows(self._logits(params, h), key, temperature, top_p, self.top_k), cache, keys

  def _step_fn(self, params, cache, token, position, keys, temperature, top_p):
    d = self.decoder
    h, cache = d.extend(params, cache, position, token)
    keys, key = split_key(keys)
    return cache, sample_rows(self._logits(params, h), key, temperature, top_p, self.top_k), keys

  def run(self, prompts: Sequence[dict[str, np.ndarray]], seeds: Sequence[int],
          temperatures: Sequence[float], top_ps: Sequence[float],
          on_tokens: Callable[[np.ndarray], bool]) -> None:
    """Decodes `prompts` (exactly `rows` of them) with one seed, temperature (0: greedy) and top-p
    per row; `on_tokens` gets each step's [rows] sampled ids and returns whether any row still wants
    more (at most max_new steps)."""
    if not len(prompts) == len(seeds) == len(temperatures) == len(top_ps) == self.rows:
      raise ValueError(f"TextStepper: {len(prompts)} prompts / {len(seeds)} seeds / "
                       f"{len(temperatures)} temperatures / {len(top_ps)} top-p for {self.rows} "
                       "rows")
    d = self.decoder
    batch = jax.tree.map(jnp.asarray, left_pad(prompts, self.prompt_len))
    temperature = jnp.asarray(temperatures, jnp.float32)
    top_p = jnp.asarray(top_ps, jnp.float32)
    with d.under_mesh():
      token, cache, keys = self._prefill(d.params, batch, row_keys(seeds), temperature, top_p)
      start = batch["positions"][:, -1] + 1
      for i in range(self.max_new):
        if not on_tokens(np.asarray(token)) or i + 1 == self.max_new:
          return
        cache, token, keys = self._step(d.params, cache, token, start + i, keys, temperature, top_p)
