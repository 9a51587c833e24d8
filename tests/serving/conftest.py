"""One server (python -m synergen_jax.serve) on loopback over the session's tiny workdir, shared by
the serving tests, and the same workdir loaded in this process for the references."""

import dataclasses
import os
import subprocess
import sys
import time

import pytest
import requests

from helpers import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
API_KEY = "test-key-0123"


@dataclasses.dataclass
class Served:
  url: str                 # http://127.0.0.1:PORT
  key: str
  model: str
  workdir: str
  log: str

  def headers(self) -> dict:
    return {"Authorization": f"Bearer {self.key}"}

  def post(self, route: str, body, **kwargs) -> requests.Response:
    data = body if isinstance(body, (bytes, str)) else None
    return requests.post(self.url + route, json=None if data is not None else body, data=data,
                         headers=self.headers(), timeout=60, **kwargs)


@pytest.fixture(scope="session")
def served(tiny_workdir, tmp_path_factory):
  port = free_port()
  log = str(tmp_path_factory.mktemp("serve") / "serve.log")
  env = dict(os.environ, PYTHONPATH=ROOT, XLA_FLAGS="")     # one CPU device, as a user runs it
  with open(log, "w") as out:
    proc = subprocess.Popen(
        [sys.executable, "-m", "synergen_jax.serve", "--workdir", tiny_workdir, "--port", str(port),
         "--api_key", API_KEY, "--model_name", "tiny", "--max_batch", "8", "--batch_window_ms", "20",
         "--max_body_mb", "1", "--allow_remote_images", "--timeout_s", "60"],
        stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env)
  url = f"http://127.0.0.1:{port}"
  deadline = time.time() + 300
  try:
    while True:
      assert proc.poll() is None, open(log).read()[-3000:]
      assert time.time() < deadline, "the server did not come up in 300 s"
      try:
        if requests.get(url + "/health", timeout=2).ok:
          break
      except requests.ConnectionError:
        time.sleep(0.5)
    yield Served(url, API_KEY, "tiny", tiny_workdir, log)
  finally:
    proc.terminate()
    try:
      proc.wait(20)
    except subprocess.TimeoutExpired:
      proc.kill()


@pytest.fixture(scope="session")
def tiny_loaded(tiny_workdir):
  from synergen_jax.infer import loader
  loaded = loader.load(tiny_workdir)
  loaded.image_tokenizer.batch_size = 8      # the server's: its batches of 8 rows (serving/engine.py)
  return loaded
