"""Image URLs of interleaved documents fetched before prepare (data/url_fetch.py), against an HTTP
server on loopback that serves good, slow, missing, flaky and corrupt images."""

import collections
import http.server
import io
import json
import os
import socket
import threading
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from grain.sources import ArrayRecordDataSource
from PIL import Image as PILImage

from synergen_jax.core.batch import IMAGE
from synergen_jax.data import images
from synergen_jax.data.records import decode_record
from synergen_jax.data.url_fetch import FetchSettings, fetch_documents, fetch_one
from synergen_jax.prepare.writer import prepare


def _png(seed, size=(20, 24)):
  pixels = np.random.default_rng(seed).integers(0, 256, size + (3,), dtype=np.uint8)
  buf = io.BytesIO()
  PILImage.fromarray(pixels).save(buf, format="PNG")
  return buf.getvalue()


class _Server:
  """/img/N.png good; /slow.png sleeps past the fetch timeout while `slow`; /missing.png 404;
  /flaky.png 503 once, then good; /corrupt.png a PNG header and junk; /page.html an HTML page."""

  def __init__(self):
    self.hits, self.slow, self.lock = collections.Counter(), True, threading.Lock()
    server = self

    class Handler(http.server.BaseHTTPRequestHandler):
      def log_message(self, *args):
        pass

      def send(self, status, body=b"", kind="image/png"):
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

      def do_GET(self):
        with server.lock:
          server.hits[self.path] += 1
          hits = server.hits[self.path]
        if self.path.startswith("/img/"):
          return self.send(200, _png(int(self.path[5:-4])))
        if self.path == "/slow.png":
          if server.slow:
            time.sleep(1.0)
          return self.send(200, _png(50))
        if self.path == "/flaky.png":
          return self.send(503) if hits == 1 else self.send(200, _png(60))
        if self.path == "/corrupt.png":
          return self.send(200, b"\x89PNG\r\n\x1a\n" + b"junk" * 50)
        if self.path == "/page.html":
          return self.send(200, b"<html>not here</html>", "text/html")
        self.send(404, b"no", "text/plain")

    self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    self.httpd.daemon_threads = True
    self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
    threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def server():
  s = _Server()
  yield s
  s.httpd.shutdown()
  s.httpd.server_close()


SETTINGS = FetchSettings(workers=4, timeout=0.3, retries=1, backoff=0.05)


def _documents(tmp_path, url):
  """Two jsonl documents with URLs (and one local image), one parquet document."""
  (tmp_path / "in").mkdir()
  (tmp_path / "in" / "local.png").write_bytes(_png(7))     # relative to its document file
  docs = [{"texts": ["a page", None, "slow", None, "gone", None, "html", None],
           "images": [None, f"{url}/img/1.png", None, f"{url}/slow.png", None, f"{url}/missing.png",
                      None, f"{url}/page.html"]},
          {"texts": [None, "two pictures", None, None],
           "images": [f"{url}/corrupt.png", None, f"{url}/img/2.png", f"{url}/flaky.png"]},
          {"texts": ["a local picture", None], "images": [None, "local.png"]}]
  (tmp_path / "in" / "docs.jsonl").write_text("\n".join(json.dumps(d) for d in docs))
  pq.write_table(pa.Table.from_pylist([{"texts": ["from parquet", None],
                                        "images": [None, f"{url}/img/3.png"]}]),
                 tmp_path / "in" / "more.parquet")
  return str(tmp_path / "in" / "*.{jsonl,parquet}")


def test_fetch_counts_by_reason_and_prepare_keeps_the_images(server, tiny_data, tmp_path):
  pattern = _documents(tmp_path, server.url)
  out = str(tmp_path / "out")
  counts = fetch_documents(pattern, out, SETTINGS)["counts"]
  assert {k: v for k, v in counts.items() if v} == dict(fetched=4, timeout=1, not_found=1,
                                                         not_an_image=2)
  assert server.hits["/slow.png"] == 2 and server.hits["/flaky.png"] == 2     # retried
  assert server.hits["/missing.png"] == 1                                      # never retried
  assert json.loads((tmp_path / "out" / "fetch" / "summary.json").read_text())["counts"] == counts

  config = tiny_data["config"].copy_and_resolve_references()
  config.data.update(name="interleaved", path=os.path.join(out, "*.{jsonl,parquet}"), eval_count=0)
  meta = prepare(config, str(tmp_path / "prepared"), tiny_data["image_tokenizer"])
  assert meta["dropped_images"] == dict(missing_file=4)     # the four URLs that failed
  records = [decode_record(r) for r in ArrayRecordDataSource(
      [os.path.join(tmp_path / "prepared", f) for f in meta["splits"]["train"]["shards"]])]
  by_images = sorted(records, key=lambda r: int(np.sum(r["kinds"] == IMAGE)))
  assert [int(np.sum(r["kinds"] == IMAGE)) for r in by_images] == [1, 1, 1, 2]
  vq = tiny_data["image_tokenizer"]

  def codes(seed):
    return vq.encode(images.fit(images.decode(_png(seed)), vq.image_size, vq.channels, "resize")[None])[0]

  two = by_images[-1]              # img/2 then flaky (fetched on its retry)
  np.testing.assert_array_equal(two["codes"][0], codes(2))
  np.testing.assert_array_equal(two["codes"][1], codes(60))

  # A rerun requests only what is missing: the timeout again (now fast), nothing else.
  before = dict(server.hits)
  server.slow = False
  counts = fetch_documents(pattern, out, SETTINGS)["counts"]
  assert {k: v for k, v in counts.items() if v} == dict(already_fetched=4, fetched=1,
                                                         failed_before=3)
  assert {p: n - before.get(p, 0) for p, n in server.hits.items() if n != before.get(p, 0)} == {
      "/slow.png": 1}
  doc = json.loads((tmp_path / "out" / "docs.jsonl").read_text().splitlines()[0])
  assert doc["images"][3].startswith("images/") and doc["images"][5].endswith("/missing.png")
  assert doc["texts"] == ["a page", None, "slow", None, "gone", None, "html", None]
  local = json.loads((tmp_path / "out" / "docs.jsonl").read_text().splitlines()[2])["images"][1]
  assert local == str(tmp_path / "in" / "local.png")      # still found from the new folder


def test_connection_errors_and_large_bodies(server):
  with socket.socket() as s:          # a port nobody listens on
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  quick = FetchSettings(timeout=0.5, retries=0)
  assert fetch_one(f"http://127.0.0.1:{port}/x.png", quick) == ("connection_error", None)
  assert fetch_one(f"{server.url}/img/4.png", FetchSettings(max_bytes=100, retries=0))[0] == "too_large"
  slept = []
  assert fetch_one(f"{server.url}/img/5.png", quick, sleep=slept.append) == ("fetched", _png(5))
  assert fetch_one(f"http://127.0.0.1:{port}/x.png", FetchSettings(retries=3, backoff=0.1),
                   sleep=slept.append)[0] == "connection_error"
  assert len(slept) == 3 and all(0.05 * 2 ** k <= t <= 0.1 * 2 ** k for k, t in enumerate(slept))


def test_output_folder_must_not_be_the_input(tmp_path):
  (tmp_path / "docs.jsonl").write_text('{"texts": ["x"], "images": [null]}')
  with pytest.raises(Exception, match="would be overwritten"):
    fetch_documents(str(tmp_path / "docs.jsonl"), str(tmp_path))
