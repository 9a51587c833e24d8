"""What the tests of the three Pallas flash-attention kernels know about each kernel, in one table.

`KERNELS` maps an `attention(impl=...)` name to its `Kernel`: the interpret-mode cases checked
against the XLA reference (with their tolerances), the entry-point check, the calls it refuses and the
words its error names them by, the segment-skipping case, and how its per-shard path under a mesh is
checked. test_flash_kernels.py and test_segment_skipping.py write each test once and parametrize it
over this table (pytest ids start with the impl); what only one kernel has (Triton lowering for CUDA,
AOT compilation for a TPU chip, Mosaic GPU's wgmma lowering and the child process that runs its
interpreter) stays in test_flash_gpu.py, test_flash_tpu.py and test_flash_mgpu.py.

Pallas' Mosaic GPU interpreter runs only in the fresh one-device child process that
test_flash_mgpu.py::test_interpret_mode_checks_pass_in_a_fresh_process starts (it once deadlocked
in the 8-device test process; see helpers.mgpu_interpret): every test that runs it carries
`INTERPRET_IN_CHILD`, the `mgpu_interpret` marker the child selects its tests by (`-m`, registered in
tests/kernels/conftest.py) and the skip of the main process.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any

import jax.numpy as jnp
import pytest

from helpers import mgpu_interpret_mark

INTERPRET_IN_CHILD = (pytest.mark.mgpu_interpret, mgpu_interpret_mark())


@dataclasses.dataclass(frozen=True)
class Case:
  """Forward and dq/dk/dv of the kernel in interpret mode against the XLA reference (inputs from
  helpers.attention_inputs with seed length + heads, rows = the kernel's `batch`)."""
  length: int
  heads: int
  kv_heads: int
  head_dim: int
  causal: bool
  packed: bool
  block_q: int
  block_k: int
  dtype: Any
  tol: float

  @property
  def id(self):
    return "T{}_h{}_kv{}_d{}_causal{}_packed{}_b{}x{}_{}".format(
        self.length, self.heads, self.kv_heads, self.head_dim, self.causal, self.packed,
        self.block_q, self.block_k, jnp.dtype(self.dtype).name)


def alternating_dtypes(shapes, dtypes):
  """Cases of the (length, heads, kv_heads, head_dim, causal, packed, block_q, block_k) shapes, shape
  i in (dtype, tol) i mod len(dtypes): every dtype meets masking, GQA and blocking, and each shape
  runs once (interpret mode is the suite's slowest part; a shape in both dtypes mostly repeats)."""
  return tuple(Case(*shape, *dtypes[i % len(dtypes)]) for i, shape in enumerate(shapes))


@dataclasses.dataclass(frozen=True)
class Entry:
  """attention(impl=..., interpret=True) on attention_inputs(0, *inputs) equals the XLA reference
  of the same inputs in float32 within atol."""
  inputs: tuple      # (batch, length, heads, kv_heads, head_dim, packed, dtype)
  atol: float


@dataclasses.dataclass(frozen=True)
class Reject:
  """A call the kernel refuses with a ValueError that names the kernel and matches `match`.

  Inputs are attention_inputs(0, *inputs) (unpacked); `q_len` keeps q's first rows, `head_dim`
  q/k/v's first features, `q_dtype` casts q; `entry` calls attention(impl=...) instead of the
  kernel's flash_attention, with `kwargs` either way."""
  id: str
  match: str
  inputs: tuple      # (batch, length, heads, kv_heads, head_dim, dtype)
  kwargs: dict
  q_len: int | None = None
  head_dim: int | None = None
  q_dtype: Any = None
  entry: bool = False


@dataclasses.dataclass(frozen=True)
class MeshLowering:
  """Lowered under a (data, fsdp, tensor) = (2, 2, 2) mesh for the kernel's compiler, with q
  [4, 256, 8, 64] and k/v [4, 256, 4, 64] bf16: the forward, dK/dV and dQ custom calls take one
  device's shard (a row; 4 query and 2 kv heads, in the layout the kernel runs on)."""
  platform: str
  custom_call: str
  q_shard: str
  kv_shard: str
  unbatched: tuple = ()  # operands without a row axis (TPU: the flattened scalar-prefetch ranges)


@dataclasses.dataclass(frozen=True)
class Kernel:
  impl: str
  module: str
  batch: int                   # rows of the reference cases' inputs
  cases: tuple[Case, ...]
  entry: Entry
  rejects: tuple[Reject, ...]
  segment_skip: tuple          # test_segment_skipping.py: (dtype, tol, block)
  mesh: MeshLowering
  # The output and gradients of the kernel's interpreter inside the entry point's shard_map over
  # fake CPU devices are checked (Pallas' TPU and Mosaic GPU interpreters deadlock there).
  interprets_under_a_mesh: bool = False
  interpret_marks: tuple = ()  # marks of every test that runs the kernel's interpreter

  def flash_attention(self):
    return importlib.import_module(self.module).flash_attention


F32, BF16, F16 = jnp.float32, jnp.bfloat16, jnp.float16
F32_BF16 = ((F32, 2e-5), (BF16, 3e-2))

KERNELS = {kernel.impl: kernel for kernel in [
    Kernel(
        impl="pallas_gpu", module="synergen_jax.kernels.flash_gpu", batch=2,
        cases=alternating_dtypes([  # (length, heads, kv_heads, head_dim, causal, packed, block_q, block_k)
            (96, 4, 4, 64, True, True, 32, 32),       # length not a power of two
            (64, 4, 2, 64, False, True, 32, 16),      # GQA 2, unequal blocks
            (64, 4, 1, 128, True, False, 16, 32),     # GQA 4, head_dim 128
            (48, 2, 2, 64, False, False, 16, 16),
        ], F32_BF16),
        entry=Entry((2, 32, 4, 2, 64, True, F32), atol=2e-5),
        rejects=(
            Reject("length_not_a_multiple_of_block_q", "multiple of block_q=32",
                   (2, 48, 2, 2, 64, F32), dict(block_q=32, interpret=True)),
            Reject("q_len_not_kv_len", "q_len == kv_len",
                   (2, 48, 2, 2, 64, F32), dict(interpret=True), q_len=16),
            Reject("triton_head_dim", "head_dim in 16..256",   # checked for Triton, not interpret
                   (2, 48, 2, 2, 64, F32), dict(), head_dim=48),
            # The entry point hands the configured block sizes to the kernel.
            Reject("entry_point_block_sizes", "block_k=32",
                   (2, 48, 2, 2, 64, F32), dict(interpret=True, block_q=16, block_k=32), entry=True),
        ),
        segment_skip=(F32, 2e-5, 64),
        mesh=MeshLowering("cuda", "__gpu$xla.gpu.triton", "1x256x4x64", "1x256x2x64"),
        interprets_under_a_mesh=True,
    ),
    Kernel(
        impl="pallas_mgpu", module="synergen_jax.kernels.flash_mgpu", batch=2,
        cases=(  # interpret mode with the race detector on
            Case(192, 4, 4, 64, True, True, 64, 64, BF16, 3e-2),      # length not a power of two
            Case(128, 4, 2, 128, False, True, 64, 64, F16, 1e-2),     # GQA 2, head_dim 128, f16
            Case(256, 4, 1, 64, True, False, 64, 128, BF16, 3e-2),    # GQA 4, the forward's 128-key blocks
            Case(128, 2, 1, 128, False, False, 64, 128, BF16, 3e-2),  # one key block per row
        ),
        entry=Entry((1, 128, 4, 2, 64, True, BF16), atol=3e-2),
        rejects=(
            Reject("float32", "bfloat16 or float16",
                   (1, 192, 2, 2, 64, BF16), dict(interpret=True), q_dtype=F32),
            Reject("head_dim", r"head_dim in \(64, 128\)",
                   (1, 192, 2, 2, 64, BF16), dict(interpret=True), head_dim=32),
            Reject("block_q_128", "block_q=64 .* got block_q=128",
                   (1, 192, 2, 2, 64, BF16), dict(block_q=128, block_k=64, interpret=True)),
            Reject("block_k_192", r"block_k in \(64, 128\)",
                   (1, 192, 2, 2, 64, BF16), dict(block_k=192, interpret=True)),
            Reject("length_not_a_multiple_of_block_k",       # 192 rows, default 128-key blocks
                   "multiple of block_q=64 and block_k=128",
                   (1, 192, 2, 2, 64, BF16), dict(interpret=True)),
            Reject("q_len_not_kv_len", "q_len == kv_len",
                   (1, 192, 2, 2, 64, BF16), dict(interpret=True), q_len=64),
            # The entry point hands the configured block sizes to the kernel.
            Reject("entry_point_block_sizes", "got block_q=128, block_k=64",
                   (1, 192, 2, 2, 64, BF16), dict(interpret=True, block_q=128, block_k=64),
                   entry=True),
        ),
        segment_skip=(BF16, 3e-2, 64),
        mesh=MeshLowering("cuda", "mosaic_gpu_v2", "1x256x4x64", "1x256x2x64"),
        interpret_marks=INTERPRET_IN_CHILD,
    ),
    Kernel(
        impl="pallas_tpu", module="synergen_jax.kernels.flash_tpu", batch=1,
        cases=alternating_dtypes([  # (length, heads, kv_heads, head_dim, causal, packed, block_q, block_k)
            (384, 2, 2, 64, True, True, 128, 128),      # length not a power of two
            (256, 2, 1, 128, False, True, 64, 128),     # GQA 2, head_dim 128, unequal blocks
            (256, 4, 1, 64, True, False, 128, 128),     # GQA 4
            (256, 3, 1, 64, True, True, 256, 128),      # GQA 3 (not a power of two), q block over 2 k blocks
            (17, 4, 2, 8, True, True, 17, 17),          # whole-length blocks (the unfold head's short rows)
        ], F32_BF16),
        entry=Entry((1, 128, 4, 2, 64, True, F32), atol=2e-5),
        rejects=(
            Reject("length_not_a_multiple_of_block_q",
                   "length 192 must be a multiple of block_q=128",
                   (1, 192, 2, 2, 64, F32), dict(interpret=True)),
            Reject("block_k_64", "block_k a multiple of 128",
                   (1, 192, 2, 2, 64, F32), dict(block_q=64, block_k=64, interpret=True)),
            Reject("q_len_not_kv_len", "q_len == kv_len",
                   (1, 192, 2, 2, 64, F32), dict(interpret=True), q_len=64),
            Reject("bfloat16_block_q_8",
                   r"block_q of 16 unless .* \(Mosaic tiles bfloat16 as \(16, 128\)\)",
                   (1, 256, 2, 2, 64, BF16), dict(block_q=8, interpret=True)),
            # The entry point hands the configured block sizes to the kernel.
            Reject("entry_point_block_sizes", "block_k=64",
                   (1, 256, 2, 2, 64, BF16), dict(interpret=True, block_q=128, block_k=64),
                   entry=True),
        ),
        segment_skip=(F32, 2e-5, 128),
        # The kernels run on [batch, heads, length, head_dim]; their block ranges are
        # scalar-prefetched flat: 1 row x 2 q blocks x (first, last).
        mesh=MeshLowering("tpu", "tpu_custom_call", "1x4x256x64", "1x2x256x64", unbatched=("4",)),
    ),
]}


def params(items=None, *, interprets=True, where=lambda kernel: True):
  """pytest.params over KERNELS (those `where` holds for): (kernel,) with id "<impl>", or with
  `items(kernel) -> [(id, item), ...]` (kernel, item) with id "<impl>-<id>". A test that
  `interprets` carries the kernel's interpret marks."""
  out = []
  for kernel in KERNELS.values():
    if not where(kernel):
      continue
    marks = kernel.interpret_marks if interprets else ()
    if items is None:
      out.append(pytest.param(kernel, marks=marks, id=kernel.impl))
    else:
      out += [pytest.param(kernel, item, marks=marks, id=f"{kernel.impl}-{name}")
              for name, item in items(kernel)]
  return out
