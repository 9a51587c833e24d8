"""What a run shows at each held-out pass: images generated from fixed prompts, and held-out images
with the model's captions, as captioned grids (MetricWriter.previews puts them in TensorBoard, the
workdir's previews/ folder and W&B).

The prompts are config.train.preview_prompts, or else the captions of the first held-out examples;
the held-out images are the first captioning examples of the held-out split. Both are the same at
every pass, generation is sampled from a fixed seed (config.train.seed; greedy with
config.train.preview_temperature=0) and captions are greedy, so two grids of one run differ only by
the parameters: what the model learned in between. (Early on, while the image logits are still
nearly flat, the sampling noise decides and the sampled grids barely change; greedy ones show every
change.)
Decoding: train/preview_decode.py. Every process builds the prompts and runs the decoding (the
parameters may be sharded across them); process 0 alone decodes pixels and renders.
"""

from __future__ import annotations

import dataclasses
import io
import os
import tempfile

import grain
import jax
import numpy as np
from PIL import Image as PILImage

from synergen_jax.core import storage
from synergen_jax.core.errors import ConfigError
from synergen_jax.data import mixture
from synergen_jax.data.images import save_captioned
from synergen_jax.data.layout import Image, layout_example
from synergen_jax.data.pipeline import open_split
from synergen_jax.data.records import TASK_IDS, decode_record, record_parts
from synergen_jax.data.tokenizers import TextTokenizer, saved_tokenizer
from synergen_jax.train import preview_decode, preview_pixels
from synergen_jax.vq.tokenizer import ImageTokenizer

CAPTION_TOKENS = 32        # longest preview caption (less where the row has no room)
SCANNED_RECORDS = 512      # held-out records read for prompts and images, at most


@dataclasses.dataclass(frozen=True)
class Preview:
  name: str                # "generated" or "captions": previews/step_<N>_<name>.png
  pixels: np.ndarray       # uint8 [H, W, 3]: the grid, its texts drawn under the images
  png: bytes               # the same, encoded
  markdown: str            # the texts in full, as a table (TensorBoard's text tab)
  caption: str             # the texts on one line (W&B's image caption)


def _prepared_dir(config) -> str:
  """The prepared folder: config.data.path, or a mixture's first component (they share tokenizers)."""
  components = mixture.parse_mixture(config.data)
  return config.data.path or components[0].path


def _heldout(data_dir: str, mc, n: int):
  """(captions of pair examples, [(caption prompt parts, displayed tile codes, caption)] of
  captioning examples), from the first records of the held-out split."""
  split = open_split(data_dir, "eval", mc)
  source = grain.sources.ArrayRecordDataSource(list(split.files))
  captions, examples = [], []
  for i in range(min(len(source), SCANNED_RECORDS)):
    record = decode_record(source[i])
    text = str(record.get("caption", ""))
    if text and text not in captions:
      captions.append(text)
    if int(record["task"]) == TASK_IDS["caption"] and len(examples) < n:
      parts = record_parts(record)
      prompt = parts[:next(k for k, p in enumerate(parts) if p.loss)]   # tiles, caption prompt
      tiles = [p.codes for p in prompt if isinstance(p, Image)]
      examples.append((prompt, tiles[-1], text))   # several tiles: the last is the thumbnail
    if len(examples) >= n and len(captions) >= n:
      break
  return captions, examples


def _render(name: str, pixels: np.ndarray, texts: list[str], markdown: str) -> Preview:
  """The captioned grid of `pixels` with `texts` under them, as pixels and as PNG bytes."""
  scale = max(1, 64 // pixels.shape[1])
  with tempfile.TemporaryDirectory() as tmp:
    path = os.path.join(tmp, f"{name}.png")
    save_captioned(pixels, texts, path, cols=min(8, len(pixels)), scale=scale)
    with open(path, "rb") as f:
      png = f.read()
  grid = np.asarray(PILImage.open(io.BytesIO(png)).convert("RGB"))
  return Preview(name, grid, png, markdown, " · ".join(texts))


def _table(header: tuple[str, ...], rows) -> str:
  cell = lambda s: str(s).replace("|", "\\|").replace("\n", " ")
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  return "\n".join(lines + ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows])


class Previews:
  """`previews(params)` -> [Preview] on process 0 ([] elsewhere, and when preview_images is 0).

  Built before the first step, so a preview that cannot work (a prompt too long for a row, no image
  tokenizer) stops the run before it trains rather than at its first held-out pass."""

  def __init__(self, config, model, mesh):
    t, d = config.train, config.data
    self.n = t.preview_images
    if self.n < 0:
      raise ConfigError(f"config.train.preview_images={self.n} must be >= 0 (0 = no previews)")
    if t.preview_temperature < 0:
      raise ConfigError(f"config.train.preview_temperature={t.preview_temperature} must be >= 0 "
                        "(0 = greedy)")
    if not self.n:
      return
    data_dir = _prepared_dir(config)
    vq_dir = _image_tokenizer_dir(config, data_dir)
    if vq_dir is None or saved_tokenizer(data_dir) is None:
      # On by default, so a run whose data names no image tokenizer (a folder prepared elsewhere,
      # config.vq.workdir unset) trains without previews instead of stopping: say so once.
      if jax.process_index() == 0:
        print(f"train: no previews: no image tokenizer found for {data_dir} (set config.vq.workdir "
              "to show generated images at each held-out pass)", flush=True)
      self.n = 0
      return
    self.model, self.mesh, mc = model, mesh, model.cfg
    self.cfg_scale, self.temperature = float(t.preview_cfg), float(t.preview_temperature)
    self.seed = int(t.seed)
    tok = TextTokenizer.load(data_dir, d.reserved_tokens)      # SentencePiece or tokenizer.json
    self.special, self.decode_text = tok.special, tok.decode
    captions, examples = _heldout(data_dir, mc, self.n)
    windows, seq_len = mc.windows_per_image, d.seq_len
    slots = lambda ids: len(preview_decode.generation_prompt(ids, mc.fold, self.special)["text_tokens"])
    prefix = tok.encode(d.generation_prompt)
    self.uncond = tok.encode(d.uncond_prompt)
    if t.preview_prompts:
      texts = list(t.preview_prompts)
      for text in texts:
        if slots(prefix + tok.encode(text)) + windows > seq_len:
          raise ConfigError(f"config.train.preview_prompts: {text!r} with an image of {windows} "
                            f"windows does not fit config.data.seq_len={seq_len}; shorten it")
    else:          # held-out captions that fit a row (training dropped the longer ones too)
      texts = [c for c in captions if slots(prefix + tok.encode(c)) + windows <= seq_len]
      if not texts:      # data without captions (text, interleaved): nothing to prompt with
        if jax.process_index() == 0:
          print(f"train: no previews: no held-out caption among the first {SCANNED_RECORDS} records "
                f"of {data_dir} fits a generation prompt in config.data.seq_len={seq_len} (set "
                "config.train.preview_prompts)", flush=True)
        self.n = 0
        return
    self.texts = [texts[i % len(texts)] for i in range(self.n)]
    self.prompts = [prefix + tok.encode(x) for x in self.texts]
    self.captioned = [layout_example(p, mc.fold, self.special, add_eos=False) for p, _, _ in examples]
    self.truths = [c for _, _, c in examples]
    cap_start = max((len(p["text_tokens"]) for p in self.captioned), default=seq_len)
    self.caption_tokens = min(CAPTION_TOKENS, seq_len - cap_start)
    gen_slots = max(slots(p) for p in self.prompts + [self.uncond]) + windows
    cap_slots = cap_start + self.caption_tokens if self.caption_tokens > 0 else 0
    unit = max(512, config.model.attention_block_q, config.model.attention_block_k)
    self.length = preview_decode.buffer_length(max(gen_slots, cap_slots), seq_len, unit)
    self.with_captions = bool(examples) and self.caption_tokens > 0   # alike on every process
    self.image_tokenizer, self.heldout_pixels = _image_tokenizer(vq_dir, data_dir, self.n), None
    if jax.process_index() == 0 and self.with_captions:
      self.heldout_pixels = preview_pixels.decode(self.image_tokenizer,
                                                  np.stack([c for _, c, _ in examples]))

  def __call__(self, params) -> list[Preview]:
    if not self.n:
      return []
    codes = preview_decode.generate_codes(
        self.model, params, self.mesh, self.prompts, special=self.special, uncond=self.uncond,
        cfg_scale=self.cfg_scale, length=self.length, seed=self.seed, temperature=self.temperature)
    said = None
    if self.with_captions:
      ids = preview_decode.generate_text(self.model, params, self.mesh, self.captioned,
                                         special=self.special, max_tokens=self.caption_tokens,
                                         length=self.length)
      said = [self.decode_text(x).strip() for x in ids]
    if jax.process_index() != 0:
      return []
    out = [_render("generated", preview_pixels.decode(self.image_tokenizer, codes), self.texts,
                   _table(("#", "prompt"), enumerate(self.texts)))]
    if said is not None:
      out.append(_render("captions", self.heldout_pixels, said,
                         _table(("#", "held-out caption", "model caption"),
                                ((i, a, b) for i, (a, b) in enumerate(zip(self.truths, said))))))
    return out


def _image_tokenizer_dir(config, data_dir: str) -> str | None:
  """config.vq.workdir (which must hold a tokenizer: the user named it), else the `vq` folder next
  to the prepared data (the data cache's layout, prepare/cache.py), else None."""
  if config.vq.workdir:
    preview_pixels.check_exists(config.vq.workdir, "fix config.vq.workdir, or set "
                                "config.train.preview_images=0")
    return config.vq.workdir
  beside = os.fspath(storage.path(data_dir).parent / "vq")
  return beside if (storage.path(beside) / "vq_config.json").exists() else None


def _image_tokenizer(vq_dir: str, data_dir: str, batch: int) -> ImageTokenizer | None:
  """The image tokenizer the data was prepared with, on process 0 (None elsewhere)."""
  fix = "set config.vq.workdir to the one it was prepared with, or config.train.preview_images=0"
  if jax.process_index() != 0:
    return None
  with jax.set_mesh(None):            # restored onto a local device, off the training mesh
    tok = preview_pixels.load_here(vq_dir, batch)
  want = mixture.read_meta(data_dir).get("image_tokenizer")
  if want and tok.fingerprint != want:
    raise ConfigError(f"the image tokenizer in {vq_dir} ({tok.fingerprint}) is not the one {data_dir} "
                      f"was prepared with ({want}); {fix}")
  return tok
