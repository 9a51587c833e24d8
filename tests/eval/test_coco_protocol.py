"""The MSCOCO FID protocol (eval/coco_protocol.py, suites.coco_fid): the caption draw is fixed by
its seed (distinct images, one of each image's own captions), a bad annotations file or count is
refused by name, the reference crop keeps the centre, and the suite on the tiny model writes the
drawn list, generates at the tokenizer's size, scores the drawn val2014 images only, caches their
statistics and reuses them. A 3-number stand-in replaces Inception (its 2048-d features cost a
compile and a 2048x2048 sqrtm; the network itself is checked against pytorch-fid in test_fid.py)."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from synergen_jax.core.errors import DataError
from synergen_jax.eval import coco_protocol, fid, suites
from synergen_jax.eval.inception import resize_like_torch
from synergen_jax.infer import jobs, loader

CAPTIONS = {1: ["A dog on a  sofa.\n", "a brown dog"], 2: ["a red bus"], 3: ["two cats", "cats", "a cat"],
            5: ["a bowl of fruit"], 8: ["a train at night", " "], 13: ["a kite"]}
SIZES = {1: (40, 60), 2: (64, 48), 3: (50, 50), 5: (30, 70), 8: (45, 45), 13: (80, 32), 21: (20, 20)}


def _annotations(tmp_path):
  """A val2014-style captions file: image 21 has no caption, image 8 one blank and one real."""
  images = [dict(id=i, file_name=f"COCO_val2014_{i:012d}.jpg", height=h, width=w)
            for i, (h, w) in SIZES.items()]
  anns, n = [], 100
  for image_id, texts in CAPTIONS.items():
    for text in texts:
      anns.append(dict(id=n, image_id=image_id, caption=text))
      n += 7
  path = tmp_path / "captions_val2014.json"
  path.write_text(json.dumps(dict(images=images, annotations=anns[::-1])))   # any order in the file
  return str(path)


def test_the_draw_is_fixed_by_its_seed(tmp_path):
  path = _annotations(tmp_path)
  drawn = coco_protocol.draw_captions(path, 4, seed=0)
  assert drawn == coco_protocol.draw_captions(path, 4, seed=0)
  ids = [r["image_id"] for r in drawn]
  assert len(set(ids)) == 4 and 21 not in ids
  for r in drawn:
    assert r["prompt"] in [" ".join(t.split()) for t in CAPTIONS[r["image_id"]]]
    assert r["file_name"] == f"COCO_val2014_{r['image_id']:012d}.jpg" and r["id"] == f"{r['image_id']:012d}"
  everything = coco_protocol.draw_captions(path, 6, seed=0)
  assert everything[:4] == drawn                   # a larger count extends the same ranking
  assert sorted(r["image_id"] for r in everything) == sorted(CAPTIONS)
  others = [coco_protocol.draw_captions(path, 6, seed=s) for s in range(1, 4)]
  assert any([r["image_id"] for r in o] != [r["image_id"] for r in everything] for o in others)
  with pytest.raises(DataError, match="--count 7 captions asked for, but 6 images have captions"):
    coco_protocol.draw_captions(path, 7, seed=0)


@pytest.mark.parametrize("content, message", [
    ("{", "cannot read it as an MSCOCO captions file"),
    ('{"images": []}', 'holds "images" and "annotations" lists'),
    ('{"images": [{"id": "1", "file_name": "a.jpg"}], "annotations": []}', r"images\[0\] needs an integer"),
    ('{"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [{"id": 1, "image_id": 2, '
     '"caption": "x"}]}', r"annotations\[0\] is of image 2, not in"),
])
def test_bad_annotation_files_are_refused_by_name(tmp_path, content, message):
  path = tmp_path / "captions.json"
  path.write_text(content)
  with pytest.raises(DataError, match=message):
    coco_protocol.draw_captions(str(path), 1, seed=0)


def test_the_reference_crop_keeps_the_centre():
  """Red bands around a blue centre: whichever side is longer, only blue is left."""
  tall = np.zeros((60, 20, 3), np.uint8)
  tall[:, :, 0] = 255
  tall[20:40, :] = (0, 0, 255)
  wide = np.ascontiguousarray(tall.transpose(1, 0, 2))
  for image in (tall, wide):
    out = coco_protocol.centre_crop_resize(image, (8, 8))
    assert out.shape == (8, 8, 3) and (out[..., 2] == 255).all() and (out[..., 0] == 0).all()
  assert coco_protocol.centre_crop_resize(tall, (10, 5)).shape == (10, 5, 3)   # aspect 1:2 kept


class StandIn:
  """Inception's stand-in: per-channel means of the 299x299 input, so 3-d features."""
  batch_size = 3

  def __init__(self):
    self.seen = 0

  def __call__(self, images):
    self.seen += len(images)
    return np.asarray(images, np.float64).mean(axis=(1, 2))


def _coco_images(tmp_path):
  rng = np.random.default_rng(5)
  folder = tmp_path / "val2014"
  folder.mkdir()
  for i, (h, w) in SIZES.items():
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
        folder / f"COCO_val2014_{i:012d}.jpg", quality=95)
  return str(folder)


def test_the_coco_fid_suite_follows_the_protocol(tiny_workdir, tmp_path, monkeypatch):
  import shutil
  workdir = str(tmp_path / "work")
  shutil.copytree(tiny_workdir, workdir)
  annotations, images = _annotations(tmp_path), _coco_images(tmp_path)
  out = str(tmp_path / "report" / "eval.json")
  os.makedirs(os.path.dirname(out))
  settings = jobs.JobSettings(cfg_scale=3.0, seed=2, batch_size=4)
  run = lambda extractor: suites.coco_fid(workdir, None, None, None, settings, captions_from=annotations,
                                          count=4, coco_images=images, out=out, extractor=extractor,
                                          log=lambda _: None)
  first = StandIn()
  result = run(first)

  drawn = coco_protocol.draw_captions(annotations, 4, seed=2)
  listed = os.path.join(os.path.dirname(out), "coco_fid_captions.jsonl")
  assert [json.loads(line) for line in open(listed)] == drawn       # reusable as --data
  protocol = result["protocol"]
  size = loader.load(workdir).image_tokenizer.image_size
  assert protocol["generation_size"] == [size, size] and protocol["seed"] == 2
  assert protocol["count"] == 4 and protocol["cached"] is False and result["images"] == 4
  assert result["generated_count"] == 4 and result["reference_count"] == 4 and first.seen == 8

  # By hand: the job's images as pytorch-fid reads them; the 4 drawn val2014 images centre-cropped
  # (here by slicing) and bicubic-resized to the generated size, then the same 299 resize.
  job_dir = os.path.join(workdir, "eval_coco_fid", "images")
  ours = fid.feature_statistics(np.stack([StandIn()(fid.read_image(os.path.join(job_dir, f))[None])[0]
                                          for f in sorted(os.listdir(job_dir))]))
  features = []
  for r in drawn:
    pixels = np.asarray(Image.open(os.path.join(images, r["file_name"])).convert("RGB"))
    h, w = pixels.shape[:2]
    side = min(h, w)
    square = pixels[(h - side) // 2:(h - side) // 2 + side, (w - side) // 2:(w - side) // 2 + side]
    small = np.asarray(Image.fromarray(square).resize((size, size), Image.BICUBIC), np.float32) / 255
    features.append(StandIn()(resize_like_torch(small[None], 299))[0])
  theirs = fid.feature_statistics(np.stack(features))
  want = fid.frechet_distance(ours.mu, ours.sigma, theirs.mu, theirs.sigma)
  assert result["fid"] == pytest.approx(want, rel=1e-6, abs=1e-9)
  assert os.path.exists(protocol["reference_stats"])

  # Again: nothing generated, the cached statistics read instead of any val2014 image.
  monkeypatch.setattr(coco_protocol, "reference_reader", lambda size: pytest.fail("re-read"))
  second = StandIn()
  again = run(second)
  assert again["protocol"]["cached"] is True and second.seen == 4
  assert again["fid"] == pytest.approx(result["fid"], rel=1e-12)


def test_coco_fid_refuses_unclear_inputs_before_loading_a_model(tmp_path):
  settings = jobs.JobSettings()
  no_model = str(tmp_path / "no_such_workdir")
  annotations = _annotations(tmp_path)
  with pytest.raises(DataError, match="--captions_from .* or --data .*, one of the two"):
    suites.coco_fid(no_model, None, "ref.npz", "w.pth", settings)
  with pytest.raises(DataError, match="--reference .* or with the drawn images under --coco_images"):
    suites.coco_fid(no_model, None, None, "w.pth", settings, captions_from=annotations)
  with pytest.raises(DataError, match="needs the Inception weights"):
    suites.coco_fid(no_model, None, "ref.npz", None, settings, captions_from=annotations)
  empty = tmp_path / "empty"
  empty.mkdir()
  with pytest.raises(DataError, match=r"--coco_images .*empty: 2 of the 2 drawn images are not there"):
    suites.coco_fid(no_model, None, None, "w.pth", settings, captions_from=annotations, count=2,
                    coco_images=str(empty), out=str(tmp_path / "eval.json"))
