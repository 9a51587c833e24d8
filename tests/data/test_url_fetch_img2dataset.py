"""URL-list corpora (LAION / COYO parquet) -> webdataset shards with img2dataset, the command
docs/data.md gives, against the loopback server; the shards read as our webdataset format.
img2dataset is the one on PATH (the `web` extra), else the one in .venv-web (.ci/img2dataset_env),
kept apart so that its OpenCV, albumentations and wandb do not change the pinned test set."""

import os
import shutil
import subprocess

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from synergen_jax.data import images
from synergen_jax.data.documents import Skipped
from synergen_jax.data.formats import read_webdataset
from test_url_fetch import _png, server  # noqa: F401  (the module-scoped loopback server)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OWN_ENVIRONMENT = os.path.join(ROOT, ".venv-web", "bin", "img2dataset")


def _img2dataset():
  """The img2dataset command to run, or None."""
  if shutil.which("img2dataset"):
    return "img2dataset"
  return OWN_ENVIRONMENT if os.path.exists(OWN_ENVIRONMENT) else None


def test_img2dataset_writes_shards_we_read(server, tmp_path):  # noqa: F811
  program = _img2dataset()
  if program is None:
    pytest.skip("img2dataset is not installed: pip install img2dataset==1.47.0, or run "
                ".ci/img2dataset_env to build .venv-web")
  urls = [f"{server.url}/img/{10 + k}.png" for k in range(4)] + [f"{server.url}/missing.png",
                                                                  f"{server.url}/corrupt.png"]
  pq.write_table(pa.table({"URL": urls, "TEXT": [f"caption {k}" for k in range(len(urls))]}),
                 tmp_path / "urls.parquet")
  # docs/data.md's command, small: one process, PNG (lossless, so pixels can be compared)
  command = [program, "--url_list", str(tmp_path / "urls.parquet"), "--input_format", "parquet",
             "--url_col", "URL", "--caption_col", "TEXT", "--output_format", "webdataset",
             "--output_folder", str(tmp_path / "shards"), "--processes_count", "1",
             "--thread_count", "4", "--image_size", "20", "--resize_mode", "no",
             "--encode_format", "png", "--encode_quality", "9", "--enable_wandb", "False",
             "--disallowed_header_directives", "[]", "--retries", "1", "--timeout", "5"]
  run = subprocess.run(command, env=dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1"),
                       capture_output=True, text=True, timeout=300)
  assert run.returncode == 0, run.stderr[-2000:]
  samples = [s for s in read_webdataset(str(tmp_path / "shards" / "00000.tar"))]
  assert not any(isinstance(s, Skipped) for s in samples)
  assert sorted(s.text for s in samples) == [f"caption {k}" for k in range(4)]
  for s in samples:
    k = int(s.text.split()[-1])
    np.testing.assert_array_equal(images.decode(s.image), images.decode(_png(10 + k)))
  stats = (tmp_path / "shards" / "00000_stats.json").read_text()
  assert '"successes": 4' in stats and "404" in stats
