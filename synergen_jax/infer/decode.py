"""Decoding with KV caches: text (greedy / temperature / top-k / top-p, stop tokens) and images.

Prompts are laid out by `data/layout.py` (the same slots training sees) and left-padded to a common
length: padding has segment id 0, so it is never attended to, and every row's positions start at 0 at
its first real slot. All rows then share one cache write index.

Text: one prefill over the prompts, then one cached step per token until every row has produced a
stop token or `max_new_tokens` (a `lax.while_loop`, so finished batches stop early).

Images, per window (paper Eq. 3 at inference): the LLM state of the last slot (<boi>, then each
window) goes to the unfold head, which samples the window's r codes one at a time with its own small
cache; the window is folded back in as the next LLM input. Classifier-free guidance runs the
conditional and the unconditional prompts as the two halves of one batch and samples every code from
`l_u + s * (l_c - l_u)`; both halves are fed the same sampled code.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from synergen_jax.core.config import ModelConfig
from synergen_jax.core.batch import IMAGE, TEXT, windows_to_grid
from synergen_jax.data.layout import Image, SpecialTokens, Text, layout_example
from synergen_jax.model.synergen_vl import SynerGenVL
from synergen_jax.parallel.sharding import LOGICAL_RULES

PROMPT_FIELDS = ("text_tokens", "image_codes", "window_ids", "modality", "positions")


@dataclasses.dataclass(frozen=True)
class Sampling:
  """temperature 0 = greedy; top_k 0 and top_p 1.0 = off."""
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0

  def __post_init__(self):
    if self.temperature < 0 or self.top_k < 0 or not 0.0 < self.top_p <= 1.0:
      raise ValueError(f"sampling needs temperature >= 0, top_k >= 0, 0 < top_p <= 1; got {self}")


GREEDY = Sampling(temperature=0.0)


def row_keys(seeds: Sequence[int]) -> jax.Array:
  """One PRNG key per row: a row's samples then depend on its own seed only, not on which other
  rows share its batch (what makes a resumed batch job reproduce the uninterrupted one)."""
  return jax.vmap(jax.random.key)(jnp.asarray(seeds, jnp.uint32))


def split_key(rng: jax.Array) -> tuple[jax.Array, jax.Array]:
  """jax.random.split for one key or for a [N] array of per-row keys."""
  if rng.ndim == 0:
    return tuple(jax.random.split(rng))
  pairs = jax.vmap(jax.random.split)(rng)
  return pairs[:, 0], pairs[:, 1]


def sample_logits(logits: jax.Array, rng: jax.Array, sampling: Sampling) -> jax.Array:
  """[N, V] float logits -> [N] int32 ids; `rng` is one key or [N] per-row keys (row_keys)."""
  if sampling.temperature == 0.0:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  logits = _top_k(logits / sampling.temperature, sampling.top_k)
  if sampling.top_p < 1.0:
    drop = _outside_nucleus(logits, sampling.top_p)
    logits = jnp.where(drop, jnp.finfo(logits.dtype).min, logits)
  if rng.ndim:
    return jax.vmap(jax.random.categorical)(rng, logits).astype(jnp.int32)
  return jax.random.categorical(rng, logits, axis=-1).astype(jnp.int32)


def sample_rows(logits: jax.Array, keys: jax.Array, temperature: jax.Array, top_p: jax.Array,
                top_k: int = 0) -> jax.Array:
  """[N, V] float logits -> [N] int32 ids, each row with its own temperature and top-p ([N] arrays,
  traced: one compiled program serves every setting; temperature 0 = greedy) and its own key; top_k
  is one static value. Each row's id is `sample_logits`'s for that row's Sampling."""
  greedy = jnp.argmax(logits, axis=-1).astype(jnp.int32)
  divisor = jnp.where(temperature > 0, temperature, 1.0)[:, None].astype(logits.dtype)
  scaled = _top_k(logits / divisor, top_k)
  nucleus = top_p < 1.0

  def cut(x):
    drop = _outside_nucleus(x, top_p[:, None].astype(x.dtype)) & nucleus[:, None]
    return jnp.where(drop, jnp.finfo(x.dtype).min, x)
  scaled = jax.lax.cond(jnp.any(nucleus), cut, lambda x: x, scaled)   # no sort when nobody asks
  sampled = jax.vmap(jax.random.categorical)(keys, scaled).astype(jnp.int32)
  return jnp.where(temperature > 0, sampled, greedy)


def _top_k(logits: jax.Array, k: int) -> jax.Array:
  if not k:
    return logits
  kth = jax.lax.top_k(logits, min(k, logits.shape[-1]))[0][..., -1:]
  return jnp.where(logits < kth, jnp.finfo(logits.dtype).min, logits)


def _outside_nucleus(logits: jax.Array, top_p) -> jax.Array:
  """[N, V] bool: the tokens past the smallest prefix (by probability) whose mass reaches top_p
  (a float or an [N, 1] array; the most probable token is always kept)."""
  order = jnp.argsort(-logits, axis=-1)
  probs = jax.nn.softmax(jnp.take_along_axis(logits, order, axis=-1), axis=-1)
  drop_sorted = (jnp.cumsum(probs, axis=-1) - probs) >= top_p
  rows = jnp.arange(logits.shape[0])[:, None]
  return jnp.zeros_like(drop_sorted).at[rows, order].set(drop_sorted)


# ---------------------------------------------------------------------------------------------------
# Prompts.
# ---------------------------------------------------------------------------------------------------

def caption_prompt(codes: Sequence[np.ndarray], prompt_ids: Sequence[int], fold,
                   special: SpecialTokens) -> dict[str, np.ndarray]:
  """<s> <boi> [windows] <eoi> (one span per tile) prompt -> the caption follows."""
  parts = [Image(np.asarray(c)) for c in codes] + ([Text(list(prompt_ids))] if prompt_ids else [])
  return layout_example(parts, fold, special, add_eos=False)


def generation_prompt(prompt_ids: Sequence[int], fold, special: SpecialTokens) -> dict[str, np.ndarray]:
  """<s> prompt <boi> -> the first window follows."""
  return layout_example([Text([*prompt_ids, special.boi])], fold, special, add_eos=False)


def left_pad(prompts: Sequence[dict[str, np.ndarray]], length: int | None = None) -> dict[str, np.ndarray]:
  """Stacks laid-out prompts right-aligned in rows of `length` slots, with segment ids 1 / 0 (pad)."""
  longest = max(len(p["text_tokens"]) for p in prompts)
  length = length or longest
  if longest > length:
    raise ValueError(f"left_pad: a prompt of {longest} slots does not fit {length}")
  r = prompts[0]["image_codes"].shape[1]
  out = {k: np.zeros((len(prompts), length, r) if k == "image_codes" else (len(prompts), length),
                     np.int32) for k in PROMPT_FIELDS + ("segment_ids",)}
  for row, p in enumerate(prompts):
    n = len(p["text_tokens"])
    for k in PROMPT_FIELDS:
      out[k][row, length - n:] = p[k][:n]
    out["segment_ids"][row, length - n:] = 1
  return out


# ---------------------------------------------------------------------------------------------------
# The decoder.
# ---------------------------------------------------------------------------------------------------

def _empty_cache(model, params, batch, method):
  """Zeros shaped like the cache that a sizing call with `batch`'s shapes creates; the call itself
  only runs under eval_shape, so nothing but the zeros is computed."""
  shapes = jax.eval_shape(lambda p, b: model.apply({"params": p}, *b, method=method,
                                                   mutable=["cache"])[1]["cache"], params, batch)
  return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def _keys(seed: int | Sequence[int], rows: int) -> jax.Array:
  if isinstance(seed, (int, np.integer)):
    return jax.random.key(seed)
  if len(seed) != rows:
    raise ValueError(f"{len(seed)} seeds for {rows} prompts: give one seed, or one per prompt")
  return row_keys(seed)


class Decoder:
  """Jitted text and image decoding for one model; `params` is the {"params": ...} variables dict.

  With a `mesh`, the parameters should already be placed on it (e.g. by `parallel.sharding`'s
  rules); prefill and steps then run under the mesh with the model's logical-axis constraints, the
  batch (prompt rows) split over data x fsdp like a training batch.
  """

  def __init__(self, mc: ModelConfig, params, special: SpecialTokens, mesh=None):
    self.mc, self.special, self.mesh = mc, special, mesh
    self.params = params["params"] if "params" in params else params
    self.model = SynerGenVL(mc, decode=True)
    # Jitted per instance, not with `self` as a static argument of a class-level jit: the global
    # jit cache would then keep every Decoder, and its parameters, alive after it is dropped.
    self._text = jax.jit(self._text_fn, static_argnums=(3, 4, 5))
    self._images = jax.jit(self.images_fn, static_argnums=(3, 4, 5))

  def under_mesh(self):
    """The mesh and logical-axis rules the decoder's programs run under (nothing without a mesh)."""
    stack = contextlib.ExitStack()
    if self.mesh is not None:
      stack.enter_context(jax.set_mesh(self.mesh))
      stack.enter_context(nn.logical_axis_rules(LOGICAL_RULES))
    return stack

  # -- pieces every loop uses --------------------------------------------------------------------

  def _slots(self, params, batch, cache):
    """LLM over new slots, appending to `cache`: (last slot's hidden [B, D], new cache)."""
    hidden, v = self.model.apply({"params": params, "cache": cache}, batch,
                                 method=SynerGenVL.hidden_states, mutable=["cache"])
    return hidden[:, -1], v["cache"]

  def _llm_cache(self, params, rows: int, length: int):
    r = self.mc.fold_ratio
    sizing = {k: jnp.zeros((rows, length, r) if k == "image_codes" else (rows, length), jnp.int32)
              for k in PROMPT_FIELDS + ("segment_ids",)}
    return _empty_cache(self.model, params, (sizing,), SynerGenVL.hidden_states)

  def prefill(self, params, batch, length: int):
    """The LLM over a batch of prompts into a fresh KV cache of `length` slots: (last slot's hidden
    [B, D], cache). With `extend`, what a caller stepping text itself (the server) builds on."""
    rows = batch["text_tokens"].shape[0]
    return self._slots(params, batch, self._llm_cache(params, rows, length))

  def extend(self, params, cache, position, token):
    """One text slot per row (`token` [B] at `position` [B]) appended to `cache`: (hidden, cache)."""
    return self._slots(params, self._one_slot(token.shape[0], position, token=token), cache)

  def _unfold_cache(self, params, rows: int):
    r = self.mc.fold_ratio
    sizing = (jnp.zeros((rows, self.mc.llm.d_model), jnp.float32), jnp.zeros((rows, r), jnp.int32))
    return _empty_cache(self.model, params, sizing, SynerGenVL.image_logits)

  def _one_slot(self, rows, position, *, token=None, codes=None, window=0):
    r = self.mc.fold_ratio
    is_image = codes is not None
    return dict(
        text_tokens=(jnp.full((rows, 1), self.special.pad, jnp.int32) if is_image else token[:, None]),
        image_codes=(codes[:, None, :] if is_image else jnp.zeros((rows, 1, r), jnp.int32)),
        window_ids=jnp.full((rows, 1), window, jnp.int32),
        modality=jnp.full((rows, 1), IMAGE if is_image else TEXT, jnp.int32),
        positions=position[:, None].astype(jnp.int32), segment_ids=jnp.ones((rows, 1), jnp.int32))

  # -- text ---------------------------------------------------------------------------------------

  def _text_fn(self, params, batch, rng, max_new: int, stops: tuple[int, ...], sampling: Sampling):
    rows, length = batch["text_tokens"].shape
    h, cache = self._slots(params, batch, self._llm_cache(params, rows, length + max_new))
    logits_of = lambda h: self.model.apply({"params": params}, h[:, None],   # [B, 1, D]: the head's
                                           method=SynerGenVL.text_logits)[:, 0]  # constraints want rank 3
    rng, key = split_key(rng)
    token = sample_logits(logits_of(h), key, sampling)
    start = batch["positions"][:, -1] + 1
    out = jnp.full((rows, max_new), self.special.pad, jnp.int32)
    stop_ids = jnp.asarray(stops, jnp.int32)

    def unfinished(carry):
      i, _, _, _, done, _ = carry
      return (i < max_new) & ~jnp.all(done)

    def step(carry):
      i, token, cache, out, done, rng = carry
      out = out.at[:, i].set(jnp.where(done, self.special.pad, token))
      done = done | jnp.isin(token, stop_ids)
      h, cache = self._slots(params, self._one_slot(rows, start + i, token=token), cache)
      rng, key = split_key(rng)
      return i + 1, sample_logits(logits_of(h), key, sampling), cache, out, done, rng

    carry = (jnp.int32(0), token, cache, out, jnp.zeros((rows,), bool), rng)
    return jax.lax.while_loop(unfinished, step, carry)[3]

  def generate_text(self, prompts: Sequence[dict[str, np.ndarray]], max_new_tokens: int, *,
                    stop_tokens: Sequence[int] | None = None, sampling: Sampling = GREEDY,
                    seed: int | Sequence[int] = 0, pad_to: int | None = None) -> list[list[int]]:
    """Laid-out prompts -> generated ids per prompt, up to and excluding the first stop token.
    `seed`: one for the batch, or one per prompt (see row_keys)."""
    stops = tuple(stop_tokens if stop_tokens is not None else (self.special.eos,))
    batch = jax.tree.map(jnp.asarray, left_pad(prompts, pad_to))
    with self.under_mesh():
      out = np.asarray(self._text(self.params, batch, _keys(seed, len(prompts)), max_new_tokens, stops,
                                  sampling))
    results = []
    for row in out:
      ids = row.tolist()
      cut = next((k for k, t in enumerate(ids) if t in stops), len(ids))
      results.append(ids[:cut])
    return results

  # -- images -------------------------------------------------------------------------------------

  def images_fn(self, params, batch, rng, rows: int, cfg_scale: float, sampling: Sampling):
    """Window codes [rows, N, r] of one image per prompt row; the pure function `generate_images`
    jits (rows, cfg_scale and sampling static), public for callers keeping their own programs.
    cfg_scale may also be a [rows] array, one guidance per row (traced: one program for every
    value)."""
    total, length = batch["text_tokens"].shape
    guided = total == 2 * rows           # second half: the unconditional prompts
    n_windows, r = self.mc.windows_per_image, self.mc.fold_ratio
    h, cache = self._slots(params, batch, self._llm_cache(params, total, length + n_windows))
    unfold_empty = self._unfold_cache(params, total)
    both = (lambda x: jnp.concatenate([x, x])) if guided else (lambda x: x)

    scale = cfg_scale[:, None] if jnp.ndim(cfg_scale) else cfg_scale

    def pick(logits, key):
      if guided:
        cond, uncond = logits[:rows], logits[rows:]
        logits = uncond + scale * (cond - uncond)
      return sample_logits(logits, key, sampling)

    def unfold(method, ucache, *args):
      logits, v = self.model.apply({"params": params, "cache": ucache}, *args, method=method,
                                   mutable=["cache"])
      return logits, v["cache"]

    def window(h, rng):
      logits, ucache = unfold(SynerGenVL.unfold_first, unfold_empty, h)
      rng, key = split_key(rng)
      codes = jnp.zeros((rows, r), jnp.int32).at[:, 0].set(pick(logits, key))

      def next_code(j, carry):
        codes, ucache, rng = carry
        logits, ucache = unfold(SynerGenVL.unfold_next, ucache, both(codes[:, j - 1]), j)
        rng, key = split_key(rng)
        return codes.at[:, j].set(pick(logits, key)), ucache, rng
      codes, _, rng = jax.lax.fori_loop(1, r, next_code, (codes, ucache, rng))
      return codes, rng

    start = batch["positions"][:, -1] + 1

    def next_window(w, carry):
      h, cache, windows, rng = carry
      codes, rng = window(h, rng)
      h, cache = self._slots(params, self._one_slot(total, start + w, codes=both(codes), window=w),
                             cache)
      return h, cache, windows.at[:, w].set(codes), rng

    windows = jnp.zeros((rows, n_windows, r), jnp.int32)
    return jax.lax.fori_loop(0, n_windows, next_window, (h, cache, windows, rng))[2]

  def generate_images(self, prompts: Sequence[Sequence[int]], *, uncond_prompt: Sequence[int] | None,
                      cfg_scale: float = 7.5, sampling: Sampling = Sampling(),
                      seed: int | Sequence[int] = 0,
                      pad_to: int | None = None) -> np.ndarray:
    """Text prompt ids (without <s>/<boi>) -> code grids [N, h, w].

    With `uncond_prompt` (the "<UNCOND>" prompt's ids) and cfg_scale != 1, every code is sampled with
    classifier-free guidance; without it, from the conditional logits alone. `seed`: one for the
    batch, or one per prompt (see row_keys).
    """
    fold, special = self.mc.fold, self.special
    laid = [generation_prompt(p, fold, special) for p in prompts]
    guided = uncond_prompt is not None and cfg_scale != 1.0
    if guided:
      laid += [generation_prompt(uncond_prompt, fold, special)] * len(prompts)
    batch = jax.tree.map(jnp.asarray, left_pad(laid, pad_to))
    with self.under_mesh():
      windows = self._images(self.params, batch, _keys(seed, len(prompts)), len(prompts),
                             float(cfg_scale), sampling)
    return np.asarray(windows_to_grid(np.asarray(windows), self.mc.code_grid, self.mc.fold))
