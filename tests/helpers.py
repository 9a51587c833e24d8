"""Helpers shared by the tests: config loading, random packed batches, multi-process runs."""

import contextlib
import json
import os
import pathlib
import socket

import numpy as np

from synergen_jax.core.config import load_config, validate_config
from synergen_jax.data.layout import Image, Text, fill_row, layout_example, stack_rows

ROOT = pathlib.Path(__file__).resolve().parents[1]


def config_path(name: str) -> str:
  return str(ROOT / "configs" / name)


def tiny(arg: str = ""):
  """(ConfigDict, ModelConfig) of configs/tiny.py with the given get_config argument."""
  config = load_config(config_path("tiny.py") + (":" + arg if arg else ""))
  return config, validate_config(config)


def random_example(mc, rng, max_text: int = 5):
  """A random captioning, generation or interleaved example (text tokens avoid special ids)."""
  def text(loss):
    return Text(rng.integers(6, mc.text_vocab, rng.integers(1, max_text + 1)), loss)

  def image(loss):
    return Image(rng.integers(0, mc.codebook_size, mc.code_grid), loss)

  kind = rng.integers(3)
  if kind == 0:
    parts = [image(False), text(True)]
  elif kind == 1:
    parts = [text(False), image(True)]
  else:
    parts = [text(True), image(True), text(True)]
  return layout_example(parts, mc.fold)


def random_batch(mc, rows: int, seq_len: int, seed: int = 0, max_examples: int = 3):
  """Rows of packed random examples; each row holds 1..max_examples examples and padding."""
  rng = np.random.default_rng(seed)
  return stack_rows([
      fill_row((random_example(mc, rng) for _ in range(rng.integers(1, max_examples + 1))),
               seq_len, mc.fold) for _ in range(rows)])



def init_params(mc, batch, seed: int = 0, **model_kwargs):
  """Plain (unboxed) parameters of SynerGenVL(mc) initialised on `batch`."""
  import flax.linen as nn
  import jax

  from synergen_jax.model.synergen_vl import SynerGenVL
  return nn.unbox(jax.jit(SynerGenVL(mc, **model_kwargs).init)(jax.random.key(seed), batch))


def attention_inputs(seed, batch, length, heads, kv_heads, head_dim, packed, dtype):
  """Random q/k/v [batch, length, heads, head_dim] and, if packed, segment ids of 1-3 examples per
  row followed by padding (id 0), cut anywhere (not on block boundaries)."""
  import jax.numpy as jnp
  rng = np.random.default_rng(seed)
  q = rng.normal(size=(batch, length, heads, head_dim))
  k = rng.normal(size=(batch, length, kv_heads, head_dim))
  v = rng.normal(size=(batch, length, kv_heads, head_dim))
  seg = None
  if packed:
    seg = np.zeros((batch, length), np.int32)
    for row in range(batch):
      cuts = np.sort(rng.choice(np.arange(1, length), 3, replace=False))
      for s, (a, b) in enumerate(zip([0, *cuts[:-1]], cuts), start=1):
        seg[row, a:b] = s
    seg = jnp.asarray(seg)
  cast = lambda x: jnp.asarray(x, dtype)
  return cast(q), cast(k), cast(v), seg


def check_flash_against_reference(flash, q, k, v, seg, causal, dtype, tol):
  """A flash kernel `flash(q, k, v)` against the XLA reference in float32 from the same (possibly
  bf16-rounded) inputs: the output, and dq/dk/dv of a random projection of it."""
  import jax
  import jax.numpy as jnp
  from synergen_jax.kernels.attention import xla_attention
  ref = lambda q, k, v: xla_attention(q, k, v, segment_ids=seg, causal=causal)
  f32 = lambda x: x.astype(jnp.float32)
  want = ref(f32(q), f32(k), f32(v))
  got = jax.jit(flash)(q, k, v)
  assert got.dtype == dtype
  np.testing.assert_allclose(f32(got), want, atol=tol * float(jnp.max(jnp.abs(want))), rtol=tol)
  cot = jnp.asarray(np.random.default_rng(1).normal(size=q.shape), jnp.float32)
  loss = lambda fn, cast: lambda q, k, v: jnp.sum(f32(fn(cast(q), cast(k), cast(v))) * cot)
  grads = jax.jit(jax.grad(loss(flash, lambda x: x.astype(dtype)), argnums=(0, 1, 2)))(
      f32(q), f32(k), f32(v))
  want_grads = jax.grad(loss(ref, f32), argnums=(0, 1, 2))(f32(q), f32(k), f32(v))
  for name, g, w in zip("qkv", grads, want_grads):
    np.testing.assert_allclose(g, w, atol=tol * float(jnp.max(jnp.abs(w))) * 2, rtol=tol * 2,
                               err_msg=f"d{name}")


# Pallas' Mosaic GPU interpreter runs host callbacks that dispatch JAX ops; in the long test process
# (8 fake devices, 2 cores, whatever earlier tests left running) that deadlocked once. Its tests run
# in a fresh one-device child process instead (tests/kernels/test_flash_mgpu.py starts it).
MGPU_INTERPRET_CHILD = os.environ.get("SYNERGEN_MGPU_INTERPRET") == "1"


def mgpu_interpret_mark():
  """skipif mark: these tests run only in the Mosaic GPU interpreter's child process."""
  import pytest
  return pytest.mark.skipif(
      not MGPU_INTERPRET_CHILD,
      reason="runs in the one-device child process of test_flash_mgpu.py::"
             "test_interpret_mode_checks_pass_in_a_fresh_process")


def mgpu_interpret(test):
  return mgpu_interpret_mark()(test)


# ---------------------------------------------------------------------------------------------------
# Multi-process and cluster runs of configs/tiny.py.
# ---------------------------------------------------------------------------------------------------

# The flags every multi-process test passes: a constant learning rate (a run's losses then do not
# depend on config.train.steps, so a rerun to any step can be compared with one reference) and two
# logical data shards (the same batches for 1 process x 8 devices and 2 processes x 4).
RUN_FLAGS = ["--config.train.log_every=1", "--config.train.eval_every=0", "--config.train.eval_batches=1",
             "--config.optim.schedule=constant", "--config.optim.warmup_steps=0", "--config.data.shards=2"]


def run_config(tiny_data, steps: int):
  """tiny_data's config with RUN_FLAGS applied, for in-process runs."""
  config = tiny_data["config"].copy_and_resolve_references()
  config.train.update(steps=steps, log_every=1, eval_every=0, eval_batches=1)
  config.optim.update(schedule="constant", warmup_steps=0)
  config.data.shards = 2
  return config


def losses_of(workdir) -> dict:
  """{step: loss} from a workdir's metrics.jsonl (process 0 writes it)."""
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  return {r["step"]: r["loss"] for r in rows if "loss" in r}


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def wait_for_step(workdir, step: int, procs, timeout: float = 300):
  """Blocks until metrics.jsonl has `step` logged; fails if a process in `procs` ends first."""
  import time
  deadline = time.time() + timeout
  path = os.path.join(workdir, "metrics.jsonl")
  while not (os.path.exists(path) and max(losses_of(workdir), default=0) >= step):
    ended = [p.args for p in procs if p.poll() is not None]
    assert not ended and time.time() < deadline, f"ended or timed out before step {step}: {ended}"
    time.sleep(0.3)


def calls(cluster, tool=None) -> list:
  """The argv of every recorded call of the fake cluster tools (tests/cluster/bin), or of one."""
  path = cluster["state"] / "calls.jsonl"
  rows = [json.loads(line) for line in open(path)] if path.exists() else []
  return [r["argv"] for r in rows if tool is None or r["tool"] == tool]


def upload_tree(local_dir, remote_dir) -> str:
  """Copies a local folder's files into a bucket path (each file one upload); returns remote_dir."""
  from synergen_jax.core import storage
  for root, _, files in os.walk(local_dir):
    for name in files:
      rel = os.path.relpath(os.path.join(root, name), local_dir)
      storage.upload(os.path.join(root, name), f"{remote_dir}/{rel}")
  return remote_dir


def read_events(data: bytes) -> list:
  """TensorBoard events (tensorboardX protos) from an events file's bytes. TFRecord framing: length
  (u64), its masked crc (u32), the record, the record's crc (u32)."""
  import struct
  from tensorboardX.proto import event_pb2
  out, i = [], 0
  while i < len(data):
    (n,) = struct.unpack("<Q", data[i:i + 8])
    out.append(event_pb2.Event.FromString(data[i + 12:i + 12 + n]))
    i += 12 + n + 4
  return out


def events_in(folder) -> dict:
  """{events file name: [(step, tag, summary value)]} of every events file in a folder."""
  from synergen_jax.core import storage
  found = {}
  if not storage.path(folder).exists():
    return found
  for path in storage.path(folder).iterdir():
    if path.name.startswith("events.out.tfevents."):
      found[path.name] = [(e.step, v.tag, v) for e in read_events(path.read_bytes())
                          if e.HasField("summary") for v in e.summary.value]
  return found


@contextlib.contextmanager
def two_processes(command, tmp_path, **env):
  """`command` started as processes 0 and 1 of one run on this machine (the SYNERGEN_* variables, a
  free coordinator port, 4 CPU devices each), process i's output in tmp_path/p{i}.log; yields the
  Popen objects and kills any still running on leaving."""
  import subprocess
  base = dict(os.environ, SYNERGEN_NUM_PROCESSES="2", SYNERGEN_COORDINATOR=f"localhost:{free_port()}",
              XLA_FLAGS="--xla_force_host_platform_device_count=4", **env)
  logs = [open(tmp_path / f"p{i}.log", "w") for i in range(2)]
  procs = [subprocess.Popen(command, cwd=ROOT, env=dict(base, SYNERGEN_PROCESS_ID=str(i)), stdout=logs[i],
                            stderr=subprocess.STDOUT) for i in range(2)]
  try:
    yield procs
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
    for log in logs:
      log.close()


def write_webdataset(path, n: int = 12) -> str:
  """n noise images of a few sizes and aspect ratios with captions ("noise k"), as one webdataset
  shard (KEY.png + KEY.txt), for runs that read web-scale data."""
  import io
  import tarfile

  from PIL import Image as PILImage
  with tarfile.open(path, "w") as tar:
    for k in range(n):
      rng = np.random.default_rng(k)
      pixels = rng.integers(0, 256, (16 + 8 * (k % 3), 16 + 8 * (k % 2)), dtype=np.uint8)
      buf = io.BytesIO()
      PILImage.fromarray(pixels).save(buf, format="PNG")
      for name, data in ((f"{k:05d}.png", buf.getvalue()), (f"{k:05d}.txt", f"noise {k}".encode())):
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
  return str(path)


def remote_module(name: str):
  """A module of the export's remote code (synergen_jax/convert/hf_remote/NAME.py), imported as
  transformers imports it: a package of its own, relative imports and all."""
  import importlib
  import importlib.util
  import sys

  from synergen_jax.convert import full_export
  package = "synergen_export_remote_code"
  if package not in sys.modules:
    folder = full_export.REMOTE_DIR
    spec = importlib.util.spec_from_file_location(package, os.path.join(folder, "__init__.py"),
                                                  submodule_search_locations=[folder])
    sys.modules[package] = importlib.util.module_from_spec(spec)
  return importlib.import_module(f"{package}.{name}")
