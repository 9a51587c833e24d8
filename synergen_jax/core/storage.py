"""Any path a user passes: a local folder or a bucket (`gs://`, and what else etils/fsspec reaches).

Every file the framework reads or writes goes through `etils.epath`; this module holds what epath
leaves to us:

  * `path(p)` refuses a path that only looks remote (`gs:/b/x`, `gs:b`): epath would take it for a
    local relative folder, and a run must never quietly write next to the checkout instead.
  * `write_bytes` / `write_text` make a file readable only when whole. Locally that is a temporary
    name renamed over the target; an object store has no rename, but an object appears only when its
    upload completes, so there one upload is the atomic step.
  * `check_reachable(p)` turns a missing bucket, missing credentials or a refused permission into one
    ConfigError naming the path and what to do, before any compile or data work.
  * `STORAGE_EMULATOR_HOST` (a GCS emulator, e.g. fake-gcs-server on loopback) is passed on to every
    client the project uses: gcsfs reads it itself; tensorstore (Orbax's checkpoints) reads
    TENSORSTORE_GCS_HTTP_URL; ArrayRecord reads CLOUD_STORAGE_EMULATOR_ENDPOINT; and gcsfs's probe of
    a bucket's layout (a gRPC call an emulator does not answer, retried for about a minute) is off.
"""

from __future__ import annotations

import os
import re
import uuid

from etils import epath

from synergen_jax.core.errors import ConfigError

_EMULATOR_SETTINGS = ("TENSORSTORE_GCS_HTTP_URL", "CLOUD_STORAGE_EMULATOR_ENDPOINT")


def use_emulator_from_env() -> None:
  """Points every GCS client at $STORAGE_EMULATOR_HOST when it is set (settings a user made win).

  Runs when this module is imported, which is before any client is made: gcsfs reads its layout
  probe switch when it is imported, tensorstore and ArrayRecord read theirs per request."""
  host = os.environ.get("STORAGE_EMULATOR_HOST")
  if not host:
    return
  url = host if "://" in host else f"http://{host}"
  for name in _EMULATOR_SETTINGS:
    os.environ.setdefault(name, url)
  os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")


use_emulator_from_env()

_LOOKS_REMOTE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def is_remote(p) -> bool:
  """True for `scheme://...` paths (gs://, s3://, ...)."""
  return "://" in str(p)


def path(p, what: str = "path") -> epath.Path:
  """`p` as an epath.Path; ConfigError for a malformed remote path (`what` names the flag)."""
  s = os.fspath(p)
  if not is_remote(s) and _LOOKS_REMOTE.match(s) and not re.match(r"^[A-Za-z]:[\\/]", s):
    raise ConfigError(f"{what}={s!r} looks like a bucket path without '//': write it as "
                      f"{s.split(':', 1)[0]}://{s.split(':', 1)[1].lstrip('/')}")
  return epath.Path(s)


def absolute(p, what: str = "path") -> epath.Path:
  """`p` made absolute where it is local (Orbax wants absolute paths); a bucket path untouched
  (os.path.abspath would turn gs://b into <cwd>/gs:/b)."""
  target = path(p, what)
  return target if is_remote(target) else epath.Path(os.path.abspath(os.fspath(target)))


def write_bytes(p, data: bytes) -> None:
  """Writes `p` so that no reader ever sees it half-written (see the module docstring)."""
  target = path(p)
  if is_remote(target):
    target.write_bytes(data)            # one upload: the object appears only when complete
    return
  tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
  tmp.write_bytes(data)
  os.replace(tmp, target)


def write_text(p, text: str) -> None:
  write_bytes(p, text.encode("utf-8"))


def upload(local_file: str, p) -> None:
  """Copies a finished local file to `p` (any file system), readable only when whole."""
  target = path(p)
  if is_remote(target):
    epath.Path(local_file).copy(target, overwrite=True)
  else:
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    epath.Path(local_file).copy(tmp, overwrite=True)
    os.replace(tmp, target)


def _bucket_of(s: str) -> str:
  scheme, rest = s.split("://", 1)
  return f"{scheme}://{rest.split('/', 1)[0]}"


def explain(exc: BaseException, p, what: str = "path") -> ConfigError | None:
  """A ConfigError saying what to do about `exc` raised while reaching `p`; None if unknown."""
  s, text = os.fspath(p), f"{type(exc).__name__}: {exc}"
  bucket = _bucket_of(s) if is_remote(s) else None
  if isinstance(exc, ImportError) and bucket:
    return ConfigError(f"{what}={s}: no client for {bucket.split('://')[0]}:// paths ({exc}); "
                       "install the gcp extra: pip install -e '.[gcp]'")
  if "DefaultCredentialsError" in text or "credentials were not found" in text or "401" in text:
    return ConfigError(f"{what}={s}: no credentials for {bucket}; run `gcloud auth application-default "
                       "login` (or set GOOGLE_APPLICATION_CREDENTIALS to a service account key)")
  if isinstance(exc, PermissionError) or "403" in text or "Forbidden" in text:
    return ConfigError(f"{what}={s}: permission denied on {bucket or s}; grant this account "
                       "roles/storage.objectAdmin on the bucket (or use one it may write)")
  if bucket and isinstance(exc, FileNotFoundError):
    return ConfigError(f"{what}={s}: bucket {bucket} does not exist (or this account cannot see it); "
                       f"create it: gcloud storage buckets create {bucket}")
  return None


def check_reachable(p, what: str = "path") -> None:
  """For a bucket path: the bucket exists and this account may list it; else one ConfigError.

  Local paths are left to the code that opens them (their errors already name the file)."""
  target = path(p, what)
  if not is_remote(target):
    return
  bucket = epath.Path(_bucket_of(os.fspath(target)))
  try:
    if not bucket.exists():
      raise FileNotFoundError(os.fspath(bucket))
  except Exception as exc:              # the client's own error types vary: map them by meaning
    error = explain(exc, target, what)
    if error is None:
      raise
    raise error from exc
