"""Which devices each collective of a compiled program joins, read from its HLO text, and which
collectives cross nodes.

XLA prints a collective's device groups in one of four forms, all in logical ids (positions in the
program's device assignment, which for a jit over a mesh is `mesh.devices.flat`):

  replica_groups={{0,1,2,3},{4,5,6,7}}                          explicit
  replica_groups=[2,4]<=[4,2]T(1,0)                             iota: arange(8).reshape(4,2).T, 2 groups of 4
  replica_groups=mesh['axis_0'=8,'axis_1'=8], device_ids=([8,8]T(1,0)) {'axis_0'}
                                                                a mesh of the ids; a group varies the
                                                                named axes and fixes the others
  source_target_pairs={{0,1},{1,2}}                             collective-permute: each pair a group

An unknown form raises rather than being skipped: a check built on these groups must not pass
because it read none.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

# Collective ops in compiled HLO text: "%x = f32[8,16]{1,0} all-gather(...)", async "-start" forms,
# tuple results "(f32[..], f32[..]) all-reduce(...)".
COLLECTIVE_OPS = ("all-gather", "all-reduce", "reduce-scatter", "all-to-all", "collective-permute")
COLLECTIVE = re.compile(r"=\s+(.+?)\s+(" + "|".join(COLLECTIVE_OPS) + r")(?:-start)?\(")
SHAPE = re.compile(r"\b[a-z]+\d*\[([\d,]*)\]")
SINGLETON_GROUPS = re.compile(r"replica_groups=\{(?:\{\d+\},?)+\}")
OP_NAME = re.compile(r'op_name="([^"]*)"')

_IOTA = re.compile(r"\[([\d,]+)\]<=\[([\d,]+)\](?:T\(([\d,]+)\))?")
_DEVICE_IOTA = re.compile(r"\[([\d,]+)\](?:T\(([\d,]+)\))?$")
_MESH = re.compile(r"mesh\[([^\]]*)\](?:, device_ids=\((.*?)\))? \{([^}]*)\}")
_AXIS = re.compile(r"'([\w.]+)'=(\d+)$")


def _ints(text: str) -> list[int]:
  return [int(t) for t in text.split(",") if t]


def _iota(dims: list[int], perm: list[int] | None) -> np.ndarray:
  ids = np.arange(math.prod(dims)).reshape(dims)
  return ids.transpose(perm) if perm else ids


def _braces(text: str) -> str:
  """The balanced {...} at the start of text."""
  depth = 0
  for i, c in enumerate(text):
    depth += {"{": 1, "}": -1}.get(c, 0)
    if depth == 0:
      return text[:i + 1]
  raise ValueError(f"unbalanced braces in {text[:200]!r}")


def _explicit(text: str, device_count: int) -> list[list[int]]:
  groups = [_ints(g) for g in re.findall(r"\{([\d,]*)\}", _braces(text)[1:-1])]
  return groups or [list(range(device_count))]      # {} = every device in one group


def _mesh_groups(match: re.Match) -> list[list[int]]:
  axes = [_AXIS.match(a.strip()) for a in match.group(1).split(",")]
  if not all(axes):
    raise ValueError(f"mesh axes {match.group(1)!r}: expected 'name'=size items")
  names, sizes = [a.group(1) for a in axes], [int(a.group(2)) for a in axes]
  ids = np.arange(math.prod(sizes))
  if match.group(2):
    device_ids = _DEVICE_IOTA.match(match.group(2))
    if device_ids:
      ids = _iota(_ints(device_ids.group(1)), _ints(device_ids.group(2) or "") or None).reshape(-1)
    elif re.fullmatch(r"[\d,]+", match.group(2)):
      ids = np.asarray(_ints(match.group(2)))
    else:
      raise ValueError(f"device_ids=({match.group(2)}): unknown form")
  grouped = [a.strip().strip("'") for a in match.group(3).split(",") if a.strip()]
  if any(g not in names for g in grouped):
    raise ValueError(f"replica group axes {grouped} are not all of the mesh axes {names}")
  order = [i for i, n in enumerate(names) if n not in grouped] + [names.index(g) for g in grouped]
  size = math.prod(sizes[names.index(g)] for g in grouped)
  return ids.reshape(sizes).transpose(order).reshape(-1, size).tolist()


def device_groups(line: str, device_count: int) -> list[list[int]] | None:
  """The logical device groups of the collective on one HLO line (None: the line has none)."""
  pairs = line.find("source_target_pairs=")
  if pairs >= 0:
    return _explicit(line[pairs + len("source_target_pairs="):], device_count)
  start = line.find("replica_groups=")
  if start < 0:
    return None
  text = line[start + len("replica_groups="):]
  if text.startswith("{"):
    return _explicit(text, device_count)
  iota = _IOTA.match(text)
  if iota:
    return _iota(_ints(iota.group(2)), _ints(iota.group(3) or "") or None).reshape(
        _ints(iota.group(1))).tolist()
  mesh = _MESH.match(text)
  if mesh:
    return _mesh_groups(mesh)
  raise ValueError(f"replica_groups={text[:160]!r}: a form this reader does not know")


def collective_groups(hlo_text: str, device_count: int):
  """(op, [result shapes], JAX op name, logical device groups) of every collective that moves data
  (groups of one device are left out), async "-start" halves included, "-done" halves not."""
  for line in hlo_text.splitlines():
    match = COLLECTIVE.search(line)
    if not match or SINGLETON_GROUPS.search(line):
      continue
    name = OP_NAME.search(line)
    shapes = [tuple(_ints(dims)) for dims in SHAPE.findall(match.group(1))]
    yield match.group(2), shapes, name.group(1) if name else "", device_groups(line, device_count)


def crossing_nodes(hlo_text: str, node_by_position: Sequence[int]):
  """(op, [result shapes], JAX op name) of each collective whose device groups span more than one
  node; node_by_position[i] is the node of logical device i (`mesh.devices.flat[i]`)."""
  found = collective_groups(hlo_text, len(node_by_position))
  return [(op, shapes, name) for op, shapes, name, groups in found
          if any(len({node_by_position[i] for i in group}) > 1 for group in groups)]
