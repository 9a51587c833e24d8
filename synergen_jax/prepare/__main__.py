"""Pre-tokenizes the configured dataset into ArrayRecord parts + meta.json (prepare/writer.py).

  python -m synergen_jax.prepare --config configs/demo.py --out data/mnist5k --vq_workdir workdirs/vq
  python -m synergen_jax.prepare --config my.py --config.data.name=webdataset \\
      --config.data.path='laion/{00000..09999}.tar' --out data/laion --workers 8 \\
      --num_shards 4 --shard_index 0          # one of 4 hosts; or let the launcher's environment say
  python -m synergen_jax.prepare --config my.py ... --out data/laion --merge   # after all shards
  python -m synergen_jax.prepare --config configs/synergen_vl_2b.py:stage=1,raw=gs://b/raw \
      --out gs://b/prep/s1 --check        # each recipe component: files found, records decodable

The image tokenizer comes from --vq_workdir (else config.vq.workdir): train one with
python -m synergen_jax.train_vq or import a release with python -m synergen_jax.convert.vq_import.
The config's code grid, codebook size, channels and image size follow it (prepare/image_side.py).
Every folder may be a bucket path (gs://). Rerunning the same command after a crash writes only
the unfinished parts. Without --num_shards and
--shard_index they come from the launcher's environment (`launcher_shard`): every process prepares
its share, on its own (no collective: nothing to wait for), and the last one to finish merges.
Prints the example counts per split and task and the skipped records by reason.
"""

from __future__ import annotations

import json
import sys

import jax
from absl import app, flags, logging

from synergen_jax.core import cli, storage
from synergen_jax.core.errors import DataError
from synergen_jax.data.inputs import launcher_shard
from synergen_jax.prepare import image_side
from synergen_jax.prepare.check import check_recipe
from synergen_jax.prepare.writer import merge_only, prepare
from synergen_jax.vq.tokenizer import ImageTokenizer

cli.define_config_flag()
flags.DEFINE_string("out", None, "output folder for parts and meta.json")
flags.DEFINE_string("vq_workdir", None, "image tokenizer workdir (default: config.vq.workdir)")
flags.DEFINE_integer("workers", 0, "processes decoding and resizing images (0: in this process)")
flags.DEFINE_integer("num_shards", None, "processes splitting the input shards (default: from the "
                     "launcher's environment, else 1)")
flags.DEFINE_integer("shard_index", None, "this process's share, in [0, num_shards) (default: from "
                     "the launcher's environment, else 0)")
flags.DEFINE_bool("merge", False, "only merge the parts already written into meta.json")
flags.DEFINE_bool("check", False, "list what each component of the config's recipe expects on disk "
                  "and what is there (files, a sample of records decoded), then stop: no encoding")
flags.DEFINE_integer("check_records", 200, "--check: records read and decoded per component")



def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  FLAGS = flags.FLAGS
  config = FLAGS.config
  vq_workdir = FLAGS.vq_workdir or config.vq.workdir
  if FLAGS.check:
    sys.exit(_check(config, vq_workdir))
  if not vq_workdir:
    raise DataError("prepare needs an image tokenizer: pass --vq_workdir DIR (a train_vq workdir) or "
                    "set config.vq.workdir")
  for what, path in (("--out", FLAGS.out), ("--vq_workdir", vq_workdir),
                     ("config.data.tokenizer", config.data.tokenizer)):
    if path:
      storage.check_reachable(path, what)          # a missing bucket: one error, before any work
  for line in image_side.follow(config, cli.overrides(), vq_workdir):
    print(f"prepare: {line}", flush=True)
  vq = ImageTokenizer.load(vq_workdir, config.vq.encode_batch, devices=jax.local_devices())
  if FLAGS.merge:
    meta = merge_only(config, FLAGS.out, vq)
  else:
    num_shards, shard_index = launcher_shard()
    num_shards = FLAGS.num_shards if FLAGS.num_shards is not None else num_shards
    shard_index = FLAGS.shard_index if FLAGS.shard_index is not None else shard_index
    meta = prepare(config, FLAGS.out, vq, workers=FLAGS.workers, num_shards=num_shards,
                   shard_index=shard_index, log=lambda line: print(line, flush=True))
  if meta is None:
    print(f"prepare: this process's parts are written; merge when the others are done with: "
          f"python -m synergen_jax.prepare ... --out {FLAGS.out} --merge")
    return
  print(json.dumps({k: meta[k] for k in ("source", "splits", "skipped", "skipped_total",
                                         "dropped_images", "text_vocab", "seconds")}, indent=1))


def _check(config, vq_workdir) -> int:
  """--check: 0 when every component has files and usable records, else 1."""
  if vq_workdir:
    image_side.follow(config, cli.overrides(), vq_workdir)
  image_size = config.model.code_grid[0] * config.vq.downsample
  results = check_recipe(cli.config_spec(), config, cli.overrides(), image_size,
                         flags.FLAGS.check_records, log=lambda line: print(line, flush=True))
  failed = [r.name for r in results if not r.ok]
  print(f"prepare --check: {len(results) - len(failed)} of {len(results)} components ready"
        + (f"; not ready: {', '.join(failed)}" if failed else ""))
  return 1 if failed else 0


if __name__ == "__main__":
  flags.mark_flags_as_required(["config", "out"])
  app.run(main)
