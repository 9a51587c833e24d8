"""Does the code cache spare a later stage the image tokenizer? Prepares the same images as stage 1
(one tile) and then as stage 2 (up to 6 tiles + a thumbnail), with and without
`config.data.code_cache`.

  python -m bench.code_cache [--out /tmp/bench_prepare] [--count 300] [--size 256]

Synthetic JPEGs twice the tokenizer's size in webdataset shards (so stage 2 cuts each into 2x2
tiles plus a thumbnail, the thumbnail being stage 1's image) and a random-weight image tokenizer of
the size's shape (from bench/prepare.py: speed does not depend on the weights). Prints one table: the prepare command's
seconds, tiles encoded and tiles taken from the cache, for S1 (cold cache), S2 without the cache,
S2 after S1 with it, and S2 rerun with it. S2's examples are compared record for record with and
without the cache.
"""

from __future__ import annotations

import json
import os
import shutil

from absl import app, flags

from bench.prepare import command, random_tokenizer, run, write_shards

FLAGS = flags.FLAGS
# --out (the scratch folder) is bench/prepare.py's flag; this benchmark works in its code_cache/.
flags.DEFINE_integer("count", 300, "images")
flags.DEFINE_integer("size", 256, "image side: 32 (the demo's shape) or 256 (32x32 codes)")


def _records(folder: str) -> list[bytes]:
  import grain
  meta = json.load(open(os.path.join(folder, "meta.json")))
  files = [os.path.join(folder, s) for s in meta["splits"]["train"]["shards"]]
  return list(grain.sources.ArrayRecordDataSource(files))


def main(argv):
  del argv
  out, size = os.path.join(FLAGS.out, "code_cache"), FLAGS.size
  pattern = write_shards(os.path.join(out, f"shards_{2 * size}_{FLAGS.count}"), FLAGS.count, 2 * size)
  vq = random_tokenizer(os.path.join(out, f"vq_{size}"), size)
  cache = os.path.join(out, "codes")
  for name in ("codes", "s1", "s2_plain", "s2_cached", "s2_again"):
    shutil.rmtree(os.path.join(out, name), ignore_errors=True)
  tiles = lambda n: [f"--config.data.max_tiles={n}", f"--config.data.thumbnail={n > 1}"]
  runs = [("S1, cold cache", "s1", tiles(1) + [f"--config.data.code_cache={cache}"]),
          ("S2, no cache", "s2_plain", tiles(6)),
          ("S2 after S1, cache", "s2_cached", tiles(6) + [f"--config.data.code_cache={cache}"]),
          ("S2 again, cache", "s2_again", tiles(6) + [f"--config.data.code_cache={cache}"])]
  rows = []
  for label, name, extra in runs:
    folder = os.path.join(out, name)
    r = run(command(pattern, size, folder, vq, *extra))
    meta = json.load(open(os.path.join(folder, "meta.json")))
    rows.append((label, r["seconds"], meta["tiles"]["encoded"], meta["tiles"]["reused"]))
  same = (_records(os.path.join(out, "s2_plain")) == _records(os.path.join(out, "s2_cached"))
          == _records(os.path.join(out, "s2_again")))
  print(f"\n{FLAGS.count} images of {2 * size}x{2 * size}, tiles of {size}x{size}; S2 records equal with and without the cache: "
        f"{same}\n")
  print("| prepare | seconds | tiles encoded | tiles from the cache |")
  print("|---|---|---|---|")
  for label, seconds, encoded, reused in rows:
    print(f"| {label} | {seconds:.1f} | {encoded:,} | {reused:,} |")
  if not same:
    raise SystemExit("S2's records differ with the cache")


if __name__ == "__main__":
  app.run(main)
