"""Attention implementations side by side: forward and forward+backward time and TFLOP/s.

  python -m bench.attention [--lengths 1024,4096,8192,16384 --impls xla,pallas_gpu,pallas_mgpu,cudnn
                             --batch 1 --heads 16 --kv_heads 8 --head_dim 128 --dtype bfloat16]

Causal, with and without packing (four equal segments per row; cuDNN takes no segment ids, so its
packed rows are skipped). FLOPs count the useful work, the visible (query, key) pairs: the causal
half of QK^T and PV (4 * B * H * T^2 * D / 2 for the forward, 2.5x that for forward+backward), and
a quarter of that for the packed rows, where a query sees only its own example; an implementation
that computes masked blocks anyway is scored on the same useful work. The last two columns compare
forward+backward times within a (T, packed) group: against cuDNN (the kernels' target is <= 1.1 at
T = 8k on an H100) and the XLA reference's time over this one (target >= 3). A row whose
implementation fails (out of memory, unsupported shape or platform) prints the reason.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from synergen_jax.kernels.attention import attention

FLAGS = flags.FLAGS
flags.DEFINE_string("lengths", "1024,4096,8192,16384", "sequence lengths")
flags.DEFINE_string("impls", "xla,pallas_gpu,pallas_mgpu,cudnn", "implementations to time (on a TPU: xla,pallas_tpu)")
flags.DEFINE_integer("batch", 1, "rows")
flags.DEFINE_integer("heads", 16, "query heads")
flags.DEFINE_integer("kv_heads", 8, "key/value heads")
flags.DEFINE_integer("head_dim", 128, "head dimension")
flags.DEFINE_string("dtype", "bfloat16", "input dtype")
flags.DEFINE_integer("iters", 5, "timed calls after one warm-up call")


def _time(fn, *args) -> float:
  jax.block_until_ready(fn(*args))
  t0 = time.perf_counter()
  for _ in range(FLAGS.iters):
    out = fn(*args)
  jax.block_until_ready(out)
  return (time.perf_counter() - t0) / FLAGS.iters


def main(argv):
  del argv
  dtype = jnp.dtype(FLAGS.dtype)
  b, h, kh, d = FLAGS.batch, FLAGS.heads, FLAGS.kv_heads, FLAGS.head_dim
  print(f"device: {jax.devices()[0].device_kind}; batch {b}, heads {h}/{kh}, head_dim {d}, {dtype}, "
        "causal")
  print("| T | packed | impl | fwd ms | fwd TFLOP/s | fwd+bwd ms | fwd+bwd TFLOP/s | fwd+bwd / cuDNN "
        "| XLA / this |")
  print("|---|---|---|---|---|---|---|---|---|")
  for t in map(int, FLAGS.lengths.split(",")):
    keys = jax.random.split(jax.random.key(0), 3)
    q = jax.random.normal(keys[0], (b, t, h, d), dtype)
    k = jax.random.normal(keys[1], (b, t, kh, d), dtype)
    v = jax.random.normal(keys[2], (b, t, kh, d), dtype)
    for packed in (False, True):
      seg = jnp.asarray(np.repeat(np.arange(1, 5), t // 4)[None].repeat(b, 0)) if packed else None
      flops = 4 * b * h * t * t * d / 2 / (4 if packed else 1)
      rows, times = [], {}
      for impl in FLAGS.impls.split(","):
        if impl == "cudnn" and packed:
          continue
        fwd = jax.jit(lambda q, k, v: attention(q, k, v, segment_ids=seg, impl=impl))
        loss = lambda q, k, v: jnp.sum(attention(q, k, v, segment_ids=seg, impl=impl).astype(
            jnp.float32))
        bwd = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
        try:
          tf, tb = _time(fwd, q, k, v), _time(bwd, q, k, v)
          times[impl] = tb
          rows.append((impl, f"{tf * 1e3:.2f} | {flops / tf / 1e12:.3g} | {tb * 1e3:.2f} | "
                             f"{2.5 * flops / tb / 1e12:.3g}"))
        except Exception as e:  # noqa: BLE001 - a failing implementation is a row, not a crash
          rows.append((impl, f"failed: {type(e).__name__}: {str(e)[:80]} | | |"))
      for impl, cells in rows:
        ratio = lambda base: (f"{times[impl] / times[base]:.2f}" if impl in times and base in times
                              else "")
        speedup = (f"{times['xla'] / times[impl]:.2f}" if impl in times and "xla" in times else "")
        print(f"| {t} | {packed} | {impl} | {cells} | {ratio('cudnn')} | {speedup} |", flush=True)


if __name__ == "__main__":
  app.run(main)
