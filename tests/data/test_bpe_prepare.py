"""The paper's ablation config (Qwen2-0.5B, configs/qwen2_0p5b_ablation.py) prepares a tiny webdataset
with a BPE tokenizer.json folder (a small Qwen2-like one, and Qwen2's real vocabulary): ids from the
release, the folder it writes loads back alone."""

import io
import os
import tarfile

import numpy as np
import pytest
from grain.sources import ArrayRecordDataSource
from PIL import Image as PILImage

from helpers import config_path
from synergen_jax.core.config import load_config
from synergen_jax.data.records import TASK_IDS, decode_record
from synergen_jax.data.tokenizers import TextTokenizer
from synergen_jax.prepare.writer import prepare
from test_bpe import (QWEN_ADDED, byte_level_bpe, qwen2_release,  # noqa: F401 (a fixture)
                      write_release)


def _png(seed):
  pixels = np.random.default_rng(seed).integers(0, 256, (20, 24, 3), dtype=np.uint8)
  buf = io.BytesIO()
  PILImage.fromarray(pixels).save(buf, format="PNG")
  return buf.getvalue()


@pytest.mark.parametrize("vocabulary", ["qwen2_like", "qwen2_real"])
def test_ablation_config_prepares_with_a_bpe_folder(vocabulary, tiny_data, tmp_path, request):
  if vocabulary == "qwen2_real":
    release = request.getfixturevalue("qwen2_release")
  else:
    release = write_release(tmp_path / "qwen2", byte_level_bpe(QWEN_ADDED), bos_token=None,
                            eos_token="<|endoftext|>", pad_token="<|endoftext|>")
  with tarfile.open(tmp_path / "00000.tar", "w") as tar:
    for k in range(6):
      for name, data in ((f"{k:05d}.png", _png(k)), (f"{k:05d}.txt", f"a noise number {k}".encode())):
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
  config = load_config(config_path("qwen2_0p5b_ablation.py"))
  vq = tiny_data["image_tokenizer"]
  config.model.update(code_grid=(vq.grid, vq.grid), codebook_size=vq.codebook_size)   # the tiny
  config.vq.channels = vq.channels                                                    # stand-in's
  config.data.update(name="webdataset", path=str(tmp_path / "00000.tar"), tokenizer=release,
                     eval_count=0)
  config.data.tasks.update(caption=1.0, generation=1.0, interleaved=0.0)
  out = str(tmp_path / "out")
  meta = prepare(config, out, vq)

  tok = TextTokenizer.load(release, config.data.reserved_tokens)
  assert sorted(f for f in os.listdir(out) if f.startswith("tokenizer")) == [
      "tokenizer.json", "tokenizer_config.json"]
  saved = TextTokenizer.load(out, config.data.reserved_tokens)
  assert meta["text_tokenizer"] == tok.fingerprint == saved.fingerprint
  assert meta["special"] == tok.meta()["special"] and meta["text_vocab"] == tok.vocab_size
  records = [decode_record(r) for r in ArrayRecordDataSource(
      [os.path.join(out, f) for f in meta["splits"]["train"]["shards"]])]
  assert len(records) == 12
  for r in records:
    text = list(r["text"])
    caption = tok.encode(r["caption"])
    if r["task"] == TASK_IDS["caption"]:        # [image] prompt caption: the caption is the loss
      assert text == tok.encode(config.data.caption_prompt) + caption
    else:                                        # prompt [image], or the <UNCOND> one
      assert text in (tok.encode(config.data.generation_prompt) + caption,
                      tok.encode(config.data.uncond_prompt))
  uncond = tok.encode(config.data.uncond_prompt)
  assert uncond.count(tok.special.uncond) == 1 and tok.special.uncond >= tok.release_size


def test_ablation_stand_in_prepares_trains_and_evaluates_with_a_bpe_tokenizer(tiny_data, tmp_path):
  """configs/qwen2_0p5b_ablation.py:tiny with a Qwen2-like BPE folder: prepare, 3 training steps,
  and the caption suite, whose answers decode with the same BPE ids the run trained on."""
  import json

  from helpers import write_webdataset
  from synergen_jax.eval import suites
  from synergen_jax.infer.jobs import JobSettings
  from synergen_jax.train.loop import train

  release = write_release(tmp_path / "qwen2", byte_level_bpe(QWEN_ADDED), bos_token=None,
                          eos_token="<|endoftext|>", pad_token="<|endoftext|>")
  config = load_config(config_path("qwen2_0p5b_ablation.py") + ":tiny,stage=sft")
  vq = tiny_data["image_tokenizer"]
  config.model.update(code_grid=(vq.grid, vq.grid), codebook_size=vq.codebook_size)
  config.vq.update(channels=vq.channels, workdir=tiny_data["vq_dir"])
  config.data.update(name="webdataset", path=write_webdataset(tmp_path / "00000.tar"),
                     tokenizer=release, seq_len=64)
  prepared = str(tmp_path / "prepared")
  prepare(config, prepared, vq)
  config.data.update(path=prepared, tokenizer=None)
  config.train.update(steps=3, log_every=1, batch_size=8)
  losses = train(config, str(tmp_path / "run"))["losses"]
  assert sorted(losses) == [1, 2, 3] and all(np.isfinite(list(losses.values())))
  images = tmp_path / "images"
  images.mkdir()
  records = []
  for k in range(2):
    PILImage.fromarray(np.full((16, 16), 40 * k, np.uint8)).save(images / f"{k}.png")
    records.append(json.dumps({"id": str(k), "image": f"images/{k}.png", "captions": ["noise"]}))
  (tmp_path / "captions.jsonl").write_text("\n".join(records) + "\n")
  report = suites.caption(str(tmp_path / "run"), str(tmp_path / "captions.jsonl"),
                          JobSettings(max_new_tokens=4, batch_size=2), log=lambda line: None)
  assert report["step"] == 3 and set(report) >= {"cider", "bleu_4"}
  tok = TextTokenizer.load(prepared, config.data.reserved_tokens)
  assert tok.meta()["backend"] != "sentencepiece" and tok.fingerprint == TextTokenizer.load(
      release, config.data.reserved_tokens).fingerprint
