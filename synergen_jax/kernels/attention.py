"""The one attention entry point of the framework.

`attention(q, k, v, segment_ids=..., causal=..., impl=...)` with layout [batch, length, heads,
head_dim]; k/v may have fewer heads than q (grouped-query attention, never materialised as repeated
heads). Implementations:

* `xla`: the reference. Plain einsums in float32 softmax; builds the [B, K, G, T, S] score tensor, so it
  is for tests, CPUs and short sequences.
* `pallas_gpu`: our Pallas (Triton) flash attention, forward and backward (`kernels/flash_gpu.py`);
  `interpret=True` runs it with Pallas' interpreter on any backend (how the CPU tests run it).
* `pallas_mgpu`: our Pallas (Mosaic GPU) flash attention for Hopper, forward and backward
  (`kernels/flash_mgpu.py`): wgmma, TMA, bf16/f16; `interpret=True` runs it in Pallas' Mosaic GPU
  interpret mode on any backend.
* `pallas_tpu`: our Pallas (Mosaic TPU) flash attention, forward and backward
  (`kernels/flash_tpu.py`); `interpret=True` runs it in Pallas' TPU interpret mode on any backend.
* `cudnn`: `jax.nn.dot_product_attention(implementation="cudnn")` (GPU only; no segment ids).

`auto` picks per platform and logs its choice once: `pallas_tpu` on TPU (its kernels compile for TPU
chips ahead of time and match the reference in interpret mode, and XLA's reference would build the
full score tensor), `xla` elsewhere until the GPU kernels (which compile for H100, see
bench/gpu_compile.py) have been timed on a GPU: which of them is faster there is not known yet.
"""

from __future__ import annotations

import logging

import flax.linen as nn
import jax
import jax.numpy as jnp

IMPLS = ("auto", "xla", "cudnn", "pallas_gpu", "pallas_mgpu", "pallas_tpu")   # config.model.attention_impl
GPU_KERNELS = ("pallas_gpu", "pallas_mgpu")
_logged_auto_choice: set[str] = set()


def auto_impl(platform: str) -> str:
  """What impl="auto" means on a platform ("tpu", "gpu"/"cuda", "cpu")."""
  return "pallas_tpu" if platform == "tpu" else "xla"


def _choose_auto() -> str:
  platform = jax.default_backend()
  choice = auto_impl(platform)
  if platform not in _logged_auto_choice:
    _logged_auto_choice.add(platform)
    logging.info("attention impl=auto on %s: using %r", platform, choice)
  return choice


def attention(q: jax.Array, k: jax.Array, v: jax.Array, *, segment_ids: jax.Array | None = None,
              causal: bool = True, impl: str = "auto", interpret: bool = False,
              block_q: int | None = None, block_k: int | None = None) -> jax.Array:
  """Scaled dot-product attention.

  Args:
    q: [batch, q_len, heads, head_dim].
    k, v: [batch, kv_len, kv_heads, head_dim]; heads must be a multiple of kv_heads.
    segment_ids: optional [batch, length] ints (q_len == kv_len); a query only sees keys of its own
      segment. Padding should carry its own id (0) so every query sees at least itself.
    causal: mask keys after the query. With q_len < kv_len the queries are the last q_len positions
      (the KV-cache decoding case).
    impl: one of IMPLS.
    interpret: run the chosen Pallas kernel in interpret mode (any backend; for tests).
    block_q, block_k: the Pallas kernels' block sizes (None = their per-backend default; the model
      passes config.model.attention_block_q/k). The other implementations ignore them.
  Returns:
    [batch, q_len, heads, head_dim] in q's dtype.
  """
  if impl not in IMPLS:
    raise ValueError(f"attention impl={impl!r} is unknown; choose one of {IMPLS}")
  if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
    raise ValueError(f"attention expects [batch, length, heads, head_dim]; got q{q.shape} k{k.shape} "
                     f"v{v.shape}")
  if k.shape != v.shape or q.shape[0] != k.shape[0] or q.shape[-1] != k.shape[-1]:
    raise ValueError(f"attention shapes disagree: q{q.shape} k{k.shape} v{v.shape}")
  if q.shape[2] % k.shape[2]:
    raise ValueError(f"attention: {q.shape[2]} query heads are not a multiple of {k.shape[2]} kv heads")
  if segment_ids is not None and (segment_ids.shape != q.shape[:2] or q.shape[1] != k.shape[1]):
    raise ValueError(f"attention: segment_ids{segment_ids.shape} must be [batch, length] with "
                     f"q_len == kv_len; got q{q.shape} k{k.shape}")
  if impl == "auto":
    impl = _choose_auto()
  if impl.startswith("pallas_"):
    kernel = _pallas_kernel(impl)
    run = lambda q, k, v, seg: kernel(q, k, v, segment_ids=seg, causal=causal, interpret=interpret,
                                      block_q=block_q, block_k=block_k)
    return _per_shard(run, q, k, v, segment_ids)
  if impl == "cudnn":
    if segment_ids is not None:
      raise ValueError("attention impl='cudnn' takes no segment_ids (packed rows); use pallas_gpu")
    return jax.nn.dot_product_attention(q, k, v, is_causal=causal, implementation="cudnn")
  return xla_attention(q, k, v, segment_ids=segment_ids, causal=causal)


def _pallas_kernel(impl):
  if impl == "pallas_gpu":
    from synergen_jax.kernels.flash_gpu import flash_attention
  elif impl == "pallas_mgpu":
    from synergen_jax.kernels.flash_mgpu import flash_attention
  else:
    from synergen_jax.kernels.flash_tpu import flash_attention
  return flash_attention


def _per_shard(run, q, k, v, segment_ids):
  """Runs a Pallas kernel on each device's shard under the current mesh (XLA cannot partition a
  custom kernel itself): rows split like the `batch` activation axis, heads like `act_heads` /
  `act_kv_heads` (whole GQA groups stay together, since both head counts split the same way)."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or mesh.size == 1:
    return run(q, k, v, segment_ids)
  spec = lambda names: nn.logical_to_mesh_axes(names)
  q_spec = spec(("batch", "length", "act_heads", None))
  kv_spec = spec(("batch", "length", "act_kv_heads", None))
  seg_spec = spec(("batch", "length"))
  if segment_ids is None:
    return jax.shard_map(lambda q, k, v: run(q, k, v, None), in_specs=(q_spec, kv_spec, kv_spec),
                         out_specs=q_spec, check_vma=False)(q, k, v)
  return jax.shard_map(run, in_specs=(q_spec, kv_spec, kv_spec, seg_spec), out_specs=q_spec,
                       check_vma=False)(q, k, v, segment_ids)


def xla_attention(q, k, v, *, segment_ids=None, causal=True):
  """Reference attention; GQA by grouping query heads, softmax in float32."""
  batch, q_len, heads, head_dim = q.shape
  kv_len, kv_heads = k.shape[1], k.shape[2]
  groups = heads // kv_heads
  qg = q.reshape(batch, q_len, kv_heads, groups, head_dim)
  scores = jnp.einsum("btkgd,bskd->bkgts", qg, k, preferred_element_type=jnp.float32)
  scores = scores * (head_dim ** -0.5)
  mask = jnp.ones((batch, 1, 1, q_len, kv_len), dtype=bool)
  if causal:
    q_pos = jnp.arange(q_len)[:, None] + (kv_len - q_len)
    mask = mask & (q_pos >= jnp.arange(kv_len)[None, :])[None, None, None]
  if segment_ids is not None:
    same = segment_ids[:, :, None] == segment_ids[:, None, :]
    mask = mask & same[:, None, None]
  scores = jnp.where(mask, scores, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
  out = jnp.einsum("bkgts,bskd->btkgd", probs, v, preferred_element_type=jnp.float32)
  return out.reshape(batch, q_len, heads, head_dim).astype(q.dtype)


def decode_attention(q: jax.Array, k_cache: jax.Array, v_cache: jax.Array,
                     mask: jax.Array) -> jax.Array:
  """Attention of a few new queries against a KV cache (prefill chunks and decoding steps).

  q: [batch, q_len, heads, head_dim]; k_cache, v_cache: [batch, cache_len, kv_heads, head_dim];
  mask: [batch, q_len, cache_len] bool, True where a query may see a cache slot (the caller combines
  causality with which slots hold real tokens). A decoding step reads the whole cache once and is
  bandwidth-bound, so this stays a plain XLA einsum on every platform.
  """
  if mask.shape != (q.shape[0], q.shape[1], k_cache.shape[1]):
    raise ValueError(f"decode_attention: mask{mask.shape} must be [batch, q_len, cache_len] = "
                     f"{(q.shape[0], q.shape[1], k_cache.shape[1])}")
  batch, q_len, heads, head_dim = q.shape
  kv_heads = k_cache.shape[2]
  qg = q.reshape(batch, q_len, kv_heads, heads // kv_heads, head_dim)
  scores = jnp.einsum("btkgd,bskd->bkgts", qg, k_cache, preferred_element_type=jnp.float32)
  scores = jnp.where(mask[:, None, None], scores * (head_dim ** -0.5), jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(scores, axis=-1).astype(v_cache.dtype)
  out = jnp.einsum("bkgts,bskd->btkgd", probs, v_cache, preferred_element_type=jnp.float32)
  return out.reshape(batch, q_len, heads, head_dim).astype(q.dtype)
