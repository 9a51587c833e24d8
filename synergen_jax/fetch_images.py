"""Fetches the image URLs of interleaved (OBELICS-style) documents before prepare.

  python -m synergen_jax.fetch_images --docs 'obelics/*.jsonl' --out obelics_local \
      [--workers 16 --timeout 10 --retries 2 --backoff 1 --retry_failed]
  python -m synergen_jax.prepare --config configs/demo.py --out data/obelics \
      --config.data.name=interleaved --config.data.path='obelics_local/*.jsonl'

Writes OUT/<each input file> (its URLs replaced by local paths where fetched), OUT/images/ and
OUT/fetch/ (outcome counts, failed URLs); a rerun fetches only what is missing (data/url_fetch.py).
A URL that fails is counted by reason, never fatal; the exit status is 0 unless the input cannot be
read. URL-list corpora (LAION, COYO parquet) are downloaded with img2dataset instead (docs/data.md).
"""

from __future__ import annotations

import json

from absl import app, flags

from synergen_jax.data.url_fetch import FetchSettings, fetch_documents

FLAGS = flags.FLAGS
flags.DEFINE_string("docs", None, "interleaved document files: a pattern (globs, brace ranges, gs://)")
flags.DEFINE_string("out", None, "output folder: documents with local paths, images/, fetch/")
flags.DEFINE_integer("workers", FetchSettings.workers, "URLs in flight at once")
flags.DEFINE_float("timeout", FetchSettings.timeout, "seconds per attempt")
flags.DEFINE_integer("retries", FetchSettings.retries, "more attempts after a timeout, a connection "
                     "error, HTTP 408/429/5xx")
flags.DEFINE_float("backoff", FetchSettings.backoff, "seconds before the first retry, doubled after each")
flags.DEFINE_integer("max_bytes", FetchSettings.max_bytes, "larger bodies are counted as too_large")
flags.DEFINE_bool("retry_failed", False, "also try again URLs that failed for good in an earlier run "
                  "(not_found, not_an_image, too_large, http_error)")
flags.mark_flags_as_required(["docs", "out"])


def main(argv):
  del argv
  settings = FetchSettings(workers=FLAGS.workers, timeout=FLAGS.timeout, retries=FLAGS.retries,
                           backoff=FLAGS.backoff, max_bytes=FLAGS.max_bytes,
                           retry_failed=FLAGS.retry_failed)
  summary = fetch_documents(FLAGS.docs, FLAGS.out, settings, log=lambda m: print(m, flush=True))
  print(json.dumps(summary["counts"]))


if __name__ == "__main__":
  app.run(main)
