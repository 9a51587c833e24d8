"""prepare --check on the paper config's stage recipe: per component, the files expected and found
and a decoded sample of records, before any encoding; missing and broken inputs named."""

import io
import json
import os
import subprocess
import sys
import tarfile

import numpy as np
from PIL import Image as PILImage

from helpers import ROOT
from synergen_jax.core.config import load_config
from synergen_jax.prepare.check import check_recipe

SPEC = os.path.join(ROOT, "configs/synergen_vl_2b.py") + ":stage=1,raw={raw}"


def _png(seed: int) -> bytes:
  buf = io.BytesIO()
  pixels = np.random.default_rng(seed).integers(0, 256, (12, 16, 3), dtype=np.uint8)
  PILImage.fromarray(pixels).save(buf, format="PNG")
  return buf.getvalue()


def _raw_root(root):
  """laion_aesthetics: one tar of 3 pairs, one image corrupt; objects365: a jsonl of 3 records, one
  image missing; every other stage-1 source absent."""
  os.makedirs(root / "laion_aesthetics")
  with tarfile.open(root / "laion_aesthetics" / "00000.tar", "w") as tar:
    for k in range(3):
      image = _png(k) if k != 1 else b"not a png"
      for name, data in ((f"{k:05d}.png", image), (f"{k:05d}.txt", f"picture {k}".encode())):
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
  os.makedirs(root / "objects365")
  for k in (0, 2):
    (root / "objects365" / f"{k}.png").write_bytes(_png(10 + k))
  (root / "objects365" / "captions.jsonl").write_text("".join(
      json.dumps({"image": f"{k}.png", "text": f"objects {k}"}) + "\n" for k in range(3)))


def test_check_names_each_component_with_its_files_and_broken_records(tmp_path):
  raw = tmp_path / "raw"
  _raw_root(raw)
  spec = SPEC.format(raw=raw)
  lines = []
  small = {"data.eval_count": 0}       # the jsonl source would hold out 500 of its 3 records
  results = {r.name: r for r in check_recipe(spec, load_config(spec), small, 64, log=lines.append)}
  assert list(results) == ["laion_aesthetics", "megalith", "sam_generation", "objects365",
                           "imagenet1k", "laion_en", "coyo", "sam_caption"]
  laion = results["laion_aesthetics"]
  assert (laion.ok, laion.files, laion.sampled, laion.usable) == (True, 1, 3, 2)
  assert sum(laion.broken.values()) == 1
  objects = results["objects365"]
  assert (objects.ok, objects.sampled, objects.usable, sum(objects.broken.values())) == (True, 3, 2, 1)
  for name in ("megalith", "imagenet1k", "coyo"):
    assert not results[name].ok and results[name].error, name
    assert str(raw) in results[name].error                    # names where it looked
  assert len(lines) == 8 and lines[0].startswith("ok   laion_aesthetics: webdataset")
  assert lines[1].startswith("FAIL megalith: webdataset")


def test_the_command_exits_nonzero_naming_what_is_not_ready(tmp_path):
  raw = tmp_path / "raw"
  _raw_root(raw)
  done = subprocess.run([sys.executable, "-m", "synergen_jax.prepare", "--config",
                         SPEC.format(raw=raw), "--out", str(tmp_path / "out"), "--check",
                         "--check_records", "10", "--config.data.eval_count=0"],
                        capture_output=True, text=True, timeout=300, cwd=ROOT)
  assert done.returncode == 1, done.stderr[-2000:]
  assert "ok   objects365: jsonl" in done.stdout and "ok   laion_aesthetics" in done.stdout
  assert ("2 of 8 components ready; not ready: megalith, sam_generation, imagenet1k, laion_en, "
          "coyo, sam_caption") in done.stdout
  assert not (tmp_path / "out").exists()                     # nothing written, nothing encoded
