"""Decoding for the previews, with the training forward pass on the training mesh (no KV cache).

The KV-cached decoder lives in infer/, a layer above the trainer (tests/test_layers.py), and it wants
its parameters placed for decoding. A preview instead runs on the train state's own parameters where
they already are (sharded over the training mesh, on any number of processes) and with the model the
train step compiled: each new window or token reruns the model over a short fixed-length buffer,
where causal attention makes the not-yet-written slots invisible. That is one full pass per window
and per token instead of one slot, cheap for a few images and a buffer of tens to hundreds of slots,
and every shape is fixed, so each loop compiles once per run. tests/train/test_previews.py checks
that it gives the KV-cached decoder's greedy images and captions.

A buffer row is a prompt right-aligned to slot `start` (left padding has segment id 0, so no real
slot sees it), then the slots to fill, laid out in advance: image slots for a generated image, text
slots for a caption. Every process must call these functions (the loops run on the whole mesh);
every process gets the results.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from synergen_jax.core.batch import IMAGE, windows_to_grid, zeros
from synergen_jax.data.layout import SpecialTokens, Text, layout_example
from synergen_jax.model.synergen_vl import SynerGenVL
from synergen_jax.parallel.distributed import compiled_together
from synergen_jax.parallel.sharding import LOGICAL_RULES, batch_sharding

PROMPT_FIELDS = ("text_tokens", "image_codes", "window_ids", "modality", "positions", "segment_ids")


def row_multiple(mesh) -> int:
  """Rows of a buffer must split evenly over the mesh axes the batch is sharded on."""
  return int(np.prod([mesh.shape[a] for a in dict(LOGICAL_RULES)["batch"] if a in mesh.axis_names]))


def buffer_length(needed: int, seq_len: int, unit: int = 512) -> int:
  """The buffer's slots: config.data.seq_len (a length the attention kernels are known to take),
  halved while it stays a multiple of `unit` (every kernel's blocks divide that) and holds `needed`."""
  length = seq_len
  while length % (2 * unit) == 0 and length // 2 >= needed:
    length //= 2
  return length


def generation_prompt(ids: Sequence[int], fold, special: SpecialTokens) -> dict[str, np.ndarray]:
  """<s> prompt <boi>: the first window follows."""
  return layout_example([Text([*ids, special.boi])], fold, special, add_eos=False)


def layout_buffer(prompts: Sequence[dict], start: int, follow: int, length: int, r: int,
                  image: bool, pad: int) -> dict[str, np.ndarray]:
  """Prompts right-aligned to `start`, then `follow` image (or text) slots to be filled in."""
  out = zeros(len(prompts), length, r, fields=PROMPT_FIELDS)
  new = np.arange(follow)
  for row, p in enumerate(prompts):
    n = len(p["text_tokens"])
    for k in PROMPT_FIELDS[:-1]:
      out[k][row, start - n:start] = p[k]
    out["segment_ids"][row, start - n:start + follow] = 1
    out["positions"][row, start:start + follow] = n + new
    out["text_tokens"][row, start:start + follow] = pad
    if image:
      out["modality"][row, start:start + follow] = IMAGE
      out["window_ids"][row, start:start + follow] = new
  return out


def _fill_rows(items: list, multiple: int) -> list:
  return items + [items[0]] * (-len(items) % multiple)


def _on_mesh(host: dict, mesh) -> dict:
  """Host arrays (the same on every process) -> global arrays, rows split like a training batch."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_callback(v.shape, sharding, lambda index, v=v: v[index])
          for k, v in host.items()}


_compiled: set = set()


def _run(fn, params, batch, name: str):
  if fn not in _compiled:          # several processes: all compile before any runs (a collective)
    compiled_together(fn, params, batch, name=name)
    _compiled.add(fn)
  return np.asarray(jax.device_get(fn(params, batch)))


@functools.lru_cache(maxsize=8)
def _image_loop(model, mesh, start: int, windows: int, half: int | None, cfg_scale: float,
                seed: int, temperature: float):
  """Jitted: buffer -> [rows, windows, r] codes. With `half`, rows [half:] are the unconditional
  prompts of classifier-free guidance and both halves are fed the codes sampled for the first."""
  r = model.cfg.fold_ratio
  both = (lambda c: jnp.concatenate([c, c])) if half else (lambda c: c)

  def pick(logits, key):
    if half:
      logits = logits[half:] + cfg_scale * (logits[:half] - logits[half:])
    ids = (jnp.argmax(logits, -1) if temperature == 0 else
           jax.random.categorical(key, logits / temperature))
    return ids.astype(jnp.int32)

  def run(params, batch):
    rows = half or batch["text_tokens"].shape[0]

    def window(w, image_codes):
      hidden = model.apply(params, dict(batch, image_codes=image_codes),
                           method=SynerGenVL.hidden_states)
      h = lax.dynamic_index_in_dim(hidden, start - 1 + w, 1, keepdims=False)      # [R, D]

      def code(j, codes):
        logits = model.apply(params, h, both(codes), method=SynerGenVL.image_logits)  # [R, r, K]
        key = jax.random.fold_in(jax.random.key(seed), w * r + j)
        return codes.at[:, j].set(pick(lax.dynamic_index_in_dim(logits, j, 1, keepdims=False), key))
      codes = lax.fori_loop(0, r, code, jnp.zeros((rows, r), jnp.int32))
      return lax.dynamic_update_index_in_dim(image_codes, both(codes), start + w, 1)

    image_codes = lax.fori_loop(0, windows, window, batch["image_codes"])
    return image_codes[:rows, start:start + windows]
  return jax.jit(run, out_shardings=jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))


@functools.lru_cache(maxsize=8)
def _text_loop(model, mesh, start: int, tokens: int):
  """Jitted, greedy: buffer -> [rows, tokens] ids."""
  def run(params, batch):
    def token(t, text_tokens):
      hidden = model.apply(params, dict(batch, text_tokens=text_tokens),
                           method=SynerGenVL.hidden_states)
      h = lax.dynamic_slice_in_dim(hidden, start - 1 + t, 1, axis=1)             # [R, 1, D]
      logits = model.apply(params, h, method=SynerGenVL.text_logits)[:, 0]
      return lax.dynamic_update_index_in_dim(text_tokens, jnp.argmax(logits, -1).astype(jnp.int32),
                                             start + t, 1)
    text_tokens = lax.fori_loop(0, tokens, token, batch["text_tokens"])
    return text_tokens[:, start:start + tokens]
  return jax.jit(run, out_shardings=jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec()))


def generate_codes(model, params, mesh, prompts: Sequence[Sequence[int]], *, special: SpecialTokens,
                   uncond: Sequence[int] | None, cfg_scale: float, length: int, seed: int = 0,
                   temperature: float = 1.0) -> np.ndarray:
  """Text prompt ids (no <s>/<boi>) -> code grids [N, h, w]: with `uncond` (the unconditional
  prompt's ids) and cfg_scale != 1 every code is drawn with classifier-free guidance; sampled at
  `temperature` from `seed` (the same codes for the same parameters), or greedy at 0."""
  mc = model.cfg
  windows, multiple = mc.windows_per_image, row_multiple(mesh)
  laid = _fill_rows([generation_prompt(p, mc.fold, special) for p in prompts], multiple)
  guided = uncond is not None and cfg_scale != 1.0
  if guided:
    laid += [generation_prompt(uncond, mc.fold, special)] * len(laid)
  start = max(len(p["text_tokens"]) for p in laid)
  if start + windows > length:
    raise ValueError(f"a generation prompt of {start} slots and {windows} windows exceed the "
                     f"buffer's {length} slots")
  host = layout_buffer(laid, start, windows, length, mc.fold_ratio, True, special.pad)
  fn = _image_loop(model, mesh, start, windows, len(laid) // 2 if guided else None,
                   float(cfg_scale), int(seed), float(temperature))
  out = _run(fn, params, _on_mesh(host, mesh), "preview images")
  return windows_to_grid(out[:len(prompts)], mc.code_grid, mc.fold)


def generate_text(model, params, mesh, prompts: Sequence[dict], *, special: SpecialTokens,
                  max_tokens: int, length: int) -> list[list[int]]:
  """Laid-out prompts (e.g. image + caption prompt, no </s>) -> greedy ids up to the first </s>."""
  laid = _fill_rows(list(prompts), row_multiple(mesh))
  start = max(len(p["text_tokens"]) for p in laid)
  if start + max_tokens > length:
    raise ValueError(f"a text prompt of {start} slots and {max_tokens} new tokens exceed the "
                     f"buffer's {length} slots")
  r = model.cfg.fold_ratio
  host = layout_buffer(laid, start, max_tokens, length, r, False, special.pad)
  out = _run(_text_loop(model, mesh, start, max_tokens), params, _on_mesh(host, mesh),
             "preview captions")
  ids = [row.tolist() for row in out[:len(prompts)]]
  return [row[:row.index(special.eos)] if special.eos in row else row for row in ids]
