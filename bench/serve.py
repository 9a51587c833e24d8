"""Throughput and latency of the server (`python -m synergen_jax.serve`) under concurrent clients.

  python -m bench.serve --workdir workdirs/demo/sft [--clients 1,8,64 --requests 128]

For each of image generation (one image per request) and chat (a question about a digit image, up to
--max_tokens tokens at temperature 1), and each client count, `--requests` requests are sent by that
many concurrent clients over loopback (aiohttp), each client sending its next request when the last
one is answered. The server runs twice: batched (--max_batch rows, requests that arrive together
share a batch) and one request at a time (--max_batch 1). Latency is per request, queueing included;
throughput is requests answered per second of wall time. Prints a markdown table.
"""

from __future__ import annotations

import asyncio
import base64
import io
import os
import socket
import subprocess
import sys
import time

import aiohttp
import numpy as np
from absl import app, flags
from PIL import Image

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "a trained workdir")
flags.DEFINE_string("clients", "1,8,64", "concurrent client counts")
flags.DEFINE_integer("requests", 128, "requests per (kind, client count)")
flags.DEFINE_integer("max_batch", 8, "rows per batch of the batched server")
flags.DEFINE_integer("max_tokens", 16, "chat answer length limit")
flags.DEFINE_integer("port", 8765, "port the server binds (loopback)")

PROMPTS = ("zero", "three", "seven", "a nine")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _digit_url() -> str:
  digit = np.zeros((28, 28), np.uint8)
  digit[5:23, 12:16] = 255
  out = io.BytesIO()
  Image.fromarray(digit).save(out, format="PNG")
  return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


def _body(kind: str, i: int, image_url: str) -> tuple[str, dict]:
  if kind == "image":
    return "/v1/images/generations", dict(prompt=PROMPTS[i % 4], n=1, seed=i)
  return "/v1/chat/completions", dict(seed=i, temperature=1.0, max_tokens=FLAGS.max_tokens, messages=[
      {"role": "user", "content": [{"type": "image_url", "image_url": {"url": image_url}},
                                   {"type": "text", "text": "What digit is this?"}]}])


async def _level(url: str, kind: str, clients: int, total: int) -> dict:
  image_url, latencies, next_index = _digit_url(), [], iter(range(total))

  async def client(session):
    for i in next_index:
      route, body = _body(kind, i, image_url)
      started = time.perf_counter()
      async with session.post(url + route, json=body) as response:
        assert response.status == 200, await response.text()
        await response.read()
      latencies.append(time.perf_counter() - started)

  connector = aiohttp.TCPConnector(limit=clients)
  async with aiohttp.ClientSession(connector=connector,
                                   timeout=aiohttp.ClientTimeout(total=600)) as session:
    started = time.perf_counter()
    await asyncio.gather(*(client(session) for _ in range(clients)))
    wall = time.perf_counter() - started
  ms = np.asarray(latencies) * 1000
  return dict(rps=total / wall, p50=float(np.percentile(ms, 50)), p99=float(np.percentile(ms, 99)))


def _serve(max_batch: int) -> subprocess.Popen:
  proc = subprocess.Popen(
      [sys.executable, "-m", "synergen_jax.serve", "--workdir", FLAGS.workdir, "--port",
       str(FLAGS.port), "--max_batch", str(max_batch), "--max_queue", "1024",
       "--max_tokens", str(FLAGS.max_tokens), "--timeout_s", "600"],
      cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT))
  deadline = time.time() + 600
  while time.time() < deadline:
    assert proc.poll() is None, "the server exited"
    try:
      with socket.create_connection(("127.0.0.1", FLAGS.port), timeout=1):
        return proc
    except OSError:
      time.sleep(0.5)
  raise TimeoutError("the server did not start")


def main(argv):
  del argv
  url = f"http://127.0.0.1:{FLAGS.port}"
  counts = [int(c) for c in FLAGS.clients.split(",")]
  rows = []
  for label, max_batch in (("batched", FLAGS.max_batch), ("one at a time", 1)):
    proc = _serve(max_batch)
    try:
      for kind in ("image", "chat"):
        asyncio.run(_level(url, kind, max(counts), max(counts)))    # warm: every program compiled
        for clients in counts:
          r = asyncio.run(_level(url, kind, clients, max(FLAGS.requests, clients)))
          rows.append((kind, clients, label, max_batch, r))
          print(f"{kind} {clients} clients {label}: {r}", file=sys.stderr, flush=True)
    finally:
      proc.terminate()
      proc.wait(30)
  print("| task | clients | server | rows per batch | requests/s | p50 ms | p99 ms |")
  print("|---|---|---|---|---|---|---|")
  for kind, clients, label, max_batch, r in sorted(rows, key=lambda x: (x[0] != "image", x[1])):
    print(f"| {kind} | {clients} | {label} | {max_batch} | {r['rps']:.1f} | {r['p50']:.0f} | "
          f"{r['p99']:.0f} |")


if __name__ == "__main__":
  flags.mark_flags_as_required(["workdir"])
  app.run(main)
