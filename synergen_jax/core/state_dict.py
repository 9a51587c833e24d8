"""State dicts (flat tensor names -> arrays) against the parameter trees they fill, once for every
importer: vq/vqgan.py and vq/emu3.py (released image tokenizers), convert/vq_weights.py (our VQ in
torch layout) and convert/importer.py (HF LLMs).

A parameter path is the "/"-joined keys of a nested dict ("encoder/conv_in/kernel"); each importer
maps its paths to the state dict's own names. A state dict is checked whole before anything is
converted, so one CheckpointError lists every unknown, missing and misshaped tensor, not the first.
"""

from __future__ import annotations

from typing import Any, Callable, Collection, Mapping

import jax
import numpy as np

from synergen_jax.core.errors import CheckpointError

SHOWN = 5       # names listed per kind of problem; the counts say how many there are in all

Shape = tuple[int, ...]


def flatten(tree) -> dict[str, Any]:
  """A nested parameter tree (arrays or jax.ShapeDtypeStruct leaves) -> {"a/b/c": leaf}."""
  return {jax.tree_util.keystr(path, simple=True, separator="/"): leaf
          for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def nest(flat: Mapping[str, Any]) -> dict:
  """{"a/b/c": leaf} -> {"a": {"b": {"c": leaf}}}, the inverse of `flatten` for dicts of dicts."""
  tree: dict = {}
  for path, value in flat.items():
    node = tree
    *parents, leaf = path.split("/")
    for p in parents:
      node = node.setdefault(p, {})
      if not isinstance(node, dict):     # "a/b" and "a/b/c" both given: no tree holds both
        raise ValueError(f"parameter path {path!r} runs through the leaf {p!r}")
    if isinstance(node.get(leaf), dict):
      raise ValueError(f"parameter path {path!r} is also a parent of other paths")
    node[leaf] = value
  return tree


def problems(state: Mapping[str, Any], expected: Mapping[str, Shape], *,
             ignored: Collection[str] = (), implied_by: str = "config",
             compared: Callable[[str, Shape], Shape] | None = None, shown: int = SHOWN) -> list[str]:
  """Why `state` cannot fill parameters of the `expected` shapes (both keyed by the state dict's
  names): tensors nothing expects (other than `ignored` ones), expected tensors it lacks, and tensors
  of another shape. `compared(name, shape)` maps a file's shape to the one compared (a layout both
  spellings share, e.g. a 1x1 conv read as a linear weight); messages show the file's shape."""
  def shape(name):
    return tuple(np.shape(state[name]))

  def fits(name):
    file_shape = shape(name)
    return (compared(name, file_shape) if compared else file_shape) == tuple(expected[name])

  unknown = sorted(set(state) - set(expected) - set(ignored))
  missing = sorted(set(expected) - set(state))
  misshaped = sorted(n for n in set(expected) & set(state) if not fits(n))
  out = []
  if unknown:
    out.append(f"{len(unknown)} unknown tensors {unknown[:shown]}")
  if missing:
    out.append(f"{len(missing)} missing tensors {missing[:shown]}")
  if misshaped:
    out.append(f"{len(misshaped)} misshaped tensors " + ", ".join(
        f"{n} {shape(n)} ({implied_by} implies {tuple(expected[n])})" for n in misshaped[:shown]))
  return out


def check(state: Mapping[str, Any], expected: Mapping[str, Shape], what: str, **kwargs) -> None:
  """Raises CheckpointError("<what>: <problems>") unless `state` fits `expected` exactly; `what`
  names the file and the network its config implies. kwargs: those of `problems`."""
  found = problems(state, expected, **kwargs)
  if found:
    raise CheckpointError(f"{what}: " + "; ".join(found))
