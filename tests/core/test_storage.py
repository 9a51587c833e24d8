"""core/storage.py against a real GCS emulator (fake-gcs-server on loopback): bucket paths are read
and written like local ones, a killed upload leaves nothing behind, and an unreachable bucket or a
malformed path is one clear error before any work."""

import os
import subprocess
import sys
import time

import pytest

from synergen_jax.core import storage
from synergen_jax.core.errors import ConfigError


@pytest.mark.parametrize("bad", ["gs:/bucket/run", "gs:bucket/run", "s3:/b/x"])
def test_a_path_that_only_looks_remote_is_refused(bad):
  with pytest.raises(ConfigError, match=r"workdir=.*looks like a bucket path without '//'"):
    storage.path(bad, "workdir")


def test_local_and_windows_style_paths_pass():
  assert str(storage.path("runs/a:b")) == "runs/a:b"  # a colon after a slash is a file name
  assert storage.path("/tmp/x").name == "x"


def test_write_replaces_whole_and_leaves_no_temporary(tmp_path, gcs_bucket):
  for root in (str(tmp_path), gcs_bucket):
    target = storage.path(root) / "sub" / "config.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    storage.write_text(target, "first")
    storage.write_text(target, "second")
    assert target.read_text() == "second"
    assert [p.name for p in target.parent.iterdir()] == ["config.json"]


def test_upload_copies_a_finished_file(tmp_path, gcs_bucket):
  local = tmp_path / "part.bin"
  local.write_bytes(os.urandom(1 << 20))
  storage.upload(str(local), f"{gcs_bucket}/data/part.bin")
  assert storage.path(f"{gcs_bucket}/data/part.bin").read_bytes() == local.read_bytes()


def test_an_upload_killed_midway_leaves_no_object(gcs_bucket):
  """What 'readable only when whole' rests on for buckets: an object that was being written when
  its writer died (kill -9, past the first uploaded chunk) does not exist."""
  target = f"{gcs_bucket}/big.bin"
  child = subprocess.Popen([sys.executable, "-c", f"""
import os, sys, time
from synergen_jax.core import storage
f = storage.path({target!r}).open("wb")
f.write(os.urandom(80 << 20)); f.flush()
print("written", flush=True)
time.sleep(600)
"""], stdout=subprocess.PIPE, text=True)
  try:
    assert child.stdout.readline().strip() == "written"
    child.kill()
    child.wait(timeout=30)
  finally:
    if child.poll() is None:
      child.kill()
  time.sleep(0.5)
  assert not storage.path(target).exists()


def test_a_missing_bucket_is_one_error_naming_it(gcs_bucket):
  storage.check_reachable(f"{gcs_bucket}/run", "workdir")                    # exists: no error
  with pytest.raises(ConfigError, match=r"workdir=gs://no-such-bucket-here/run: bucket "
                     r"gs://no-such-bucket-here does not exist.*gcloud storage buckets create"):
    storage.check_reachable("gs://no-such-bucket-here/run", "workdir")


def test_credentials_and_permission_errors_say_what_to_do():
  from google.auth.exceptions import DefaultCredentialsError
  no_creds = storage.explain(DefaultCredentialsError("Your default credentials were not found."),
                             "gs://b/run", "workdir")
  assert "gcloud auth application-default login" in str(no_creds) and "gs://b" in str(no_creds)
  denied = storage.explain(PermissionError("403 Forbidden"), "gs://b/run/x", "data.path")
  assert str(denied).startswith("data.path=gs://b/run/x: permission denied on gs://b")
  assert storage.explain(ValueError("something else"), "gs://b/x") is None


def test_the_emulator_host_reaches_every_client(monkeypatch):
  # A plain dict for os.environ: the process's real environment (which tensorstore's threads read,
  # for the session's emulator) never sees this test's closed port.
  env = {"STORAGE_EMULATOR_HOST": "http://127.0.0.1:9",
         "CLOUD_STORAGE_EMULATOR_ENDPOINT": "http://mine:1"}                  # a user's own wins
  monkeypatch.setattr(os, "environ", env)
  storage.use_emulator_from_env()
  assert env["TENSORSTORE_GCS_HTTP_URL"] == "http://127.0.0.1:9"
  assert env["CLOUD_STORAGE_EMULATOR_ENDPOINT"] == "http://mine:1"
  assert env["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] == "false"
