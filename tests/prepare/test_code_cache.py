"""Image codes cached across prepares: a second stage encodes only the tiles it has not seen, and its
examples equal those of a prepare without the cache."""

import json

from helpers import write_webdataset

from synergen_jax.prepare.writer import prepare


def _records(folder):
  import grain
  meta = json.load(open(f"{folder}/meta.json"))
  files = [f"{folder}/{s}" for s in meta["splits"]["train"]["shards"]]
  return meta, list(grain.sources.ArrayRecordDataSource(files))


class CountingTokenizer:
  """The real image tokenizer, counting the tiles it is asked to encode."""

  def __init__(self, vq):
    self.vq, self.tiles = vq, 0
    self.fingerprint, self.grid, self.codebook_size = vq.fingerprint, vq.grid, vq.codebook_size
    self.image_size, self.channels = vq.image_size, vq.channels

  def encode(self, pixels):
    self.tiles += len(pixels)
    return self.vq.encode(pixels)


def test_a_later_stage_encodes_only_new_tiles_and_writes_the_same_examples(tiny_data, tmp_path):
  base = tiny_data["config"].copy_and_resolve_references()
  base.data.update(name="webdataset", path=write_webdataset(tmp_path / "00000.tar"), eval_count=0,
                   code_cache=str(tmp_path / "codes"))
  base.data.tokenizer = f"{tiny_data['data_dir']}/tokenizer.model"   # no retraining per prepare
  s1, s2 = base.copy_and_resolve_references(), base.copy_and_resolve_references()
  s2.data.max_tiles = 4                        # S2: dynamic-resolution tiles + thumbnail

  vq = CountingTokenizer(tiny_data["image_tokenizer"])
  meta1 = prepare(s1, str(tmp_path / "s1"), vq)
  first = vq.tiles
  assert meta1["tiles"] == {"encoded": first, "reused": 0} and first > 0

  vq.tiles = 0
  meta2 = prepare(s2, str(tmp_path / "s2"), vq)
  assert meta2["tiles"]["reused"] >= first     # every S1 image is S2's generation target again
  assert vq.tiles == meta2["tiles"]["encoded"] > 0

  vq.tiles = 0                                  # the same stage again: nothing left to encode
  again = prepare(s2, str(tmp_path / "s2_again"), vq)
  assert vq.tiles == 0 and again["tiles"]["encoded"] == 0

  uncached = s2.copy_and_resolve_references()
  uncached.data.code_cache = None
  plain = prepare(uncached, str(tmp_path / "s2_plain"), tiny_data["image_tokenizer"])
  assert plain["prepare_key"] == meta2["prepare_key"]       # the cache is not part of the data
  assert _records(tmp_path / "s2")[1] == _records(tmp_path / "s2_plain")[1]
  assert _records(tmp_path / "s2_again")[1] == _records(tmp_path / "s2_plain")[1]
