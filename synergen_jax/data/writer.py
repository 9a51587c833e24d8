"""Raw source -> ArrayRecord shards of token examples + meta.json: the library behind
`python -m synergen_jax.prepare` (run once per dataset and tokenizer).

For each split (train, eval: the same seeded split train_vq holds out):
  1. read every record; decode + fit its image, strip its caption; bad records are skipped and
     counted by reason (undecodable_image, empty_text, wrong_size, ...), never dropped silently;
  2. train a SentencePiece model on the training captions and prompts (or load config.data.tokenizer);
  3. encode all images with the image tokenizer, batched and jitted;
  4. draw the task mix per record (config.data.tasks) and write one record per example:
       caption      [tiles...] prompt caption*          (loss on the caption)
       generation   prompt [image*]                     (loss on the image; the prompt is the
                                                          <UNCOND> one with probability p_uncond)
       interleaved  [image*] caption*, then [image*] caption*.   (loss on everything)
  5. write `{split}-index.npz` (text length and image count per example: the pipeline computes the
     slot count for any fold ratio from it without reading records) and meta.json.

Records are encoded by `data/records.py`; `pipeline.py` decodes them into model slots.
"""

from __future__ import annotations

import collections
import json
import math
import os
import time

import numpy as np
from array_record.python import array_record_module

from synergen_jax.config import validate_config
from synergen_jax.data import images as image_ops
from synergen_jax.data.errors import BadRecord, DataError
from synergen_jax.data.layout import Image, Text
from synergen_jax.data.records import FORMAT_VERSION, TASK_IDS, encode_record
from synergen_jax.data.sources import open_source, split_indices
from synergen_jax.data.tokenizers import TextTokenizer, train_sentencepiece
from synergen_jax.vq.tokenizer import ImageTokenizer


class _Records:
  """What survives step 1 for one split: pixels per image, captions, labels."""

  def __init__(self):
    self.gen_images, self.tiles, self.captions, self.labels, self.indices = [], [], [], [], []
    self.skipped = collections.Counter()


def read_split(source, indices, config, image_size: int) -> _Records:
  d, channels = config.data, config.vq.channels
  out = _Records()
  for i in indices:
    try:
      raw = source[int(i)]
      caption = (raw.text or "").strip()
      if not caption:
        raise BadRecord("empty_text", f"{source.name}[{i}]: empty caption")
      pixels = image_ops.decode(raw.image)
      gen = image_ops.fit(pixels, image_size, channels, d.image_fit, source.background)
      if d.max_tiles > 1:
        tiles = [image_ops.fit(t, image_size, channels, "exact")
                 for t in image_ops.dynamic_tiles(pixels, image_size, d.max_tiles, d.thumbnail)]
      else:
        tiles = [gen]
    except BadRecord as e:
      out.skipped[e.reason] += 1
      continue
    out.gen_images.append(gen); out.tiles.append(tiles); out.captions.append(caption)
    out.labels.append(raw.label); out.indices.append(int(i))
  return out


def text_tokenizer(config, train_captions, out_dir: str) -> TextTokenizer:
  d = config.data
  if d.tokenizer:
    tok = TextTokenizer.load(d.tokenizer, d.reserved_tokens)
  else:
    prompts = [d.caption_prompt, d.generation_prompt, d.uncond_prompt.replace("<UNCOND>", "")]
    proto = train_sentencepiece(train_captions, config.model.text_vocab, d.reserved_tokens,
                                seed_sentences=prompts)
    tok = TextTokenizer(proto, d.reserved_tokens)
  if tok.vocab_size > config.model.text_vocab:
    raise DataError(f"text tokenizer has {tok.vocab_size} ids (with appended special pieces) but "
                    f"config.model.text_vocab={config.model.text_vocab}; raise text_vocab to at least "
                    f"{tok.vocab_size}")
  with open(os.path.join(out_dir, "tokenizer.model"), "wb") as f:
    f.write(tok.proto)
  return tok


def _count(weight: float, rng) -> int:
  whole = math.floor(weight)
  return whole + int(rng.random() < weight - whole)


def build_examples(records: _Records, gen_codes, tile_codes, tok: TextTokenizer, config, seed: int):
  """Yields (record bytes, text_len, n_images, task) for one split, in a seeded order."""
  d = config.data
  rng = np.random.default_rng(seed)
  caption_ids = [tok.encode(c) for c in records.captions]
  caption_prompt = tok.encode(d.caption_prompt)
  uncond_prompt = tok.encode(d.uncond_prompt)
  gen_prompt = tok.encode(d.generation_prompt)
  then = tok.encode(", then")
  full_stop = tok.encode(".")
  n = len(records.captions)
  for k in range(n):
    for task in ("caption", "generation", "interleaved"):
      for _ in range(_count(d.tasks.get(task, 0.0), rng)):
        if task == "caption":
          parts = [Image(c) for c in tile_codes[k]]
          parts += [Text(caption_prompt), Text(caption_ids[k], loss=True)]
        elif task == "generation":
          prompt = uncond_prompt if rng.random() < d.p_uncond else gen_prompt + caption_ids[k]
          parts = [Text(prompt), Image(gen_codes[k], loss=True)]
        else:
          if n < d.interleaved_images:
            continue
          others = rng.choice(np.delete(np.arange(n), k), d.interleaved_images - 1, replace=False)
          docs = [k, *map(int, others)]
          parts = []
          for j, doc in enumerate(docs):
            tail = full_stop if j == len(docs) - 1 else then
            parts += [Image(gen_codes[doc], loss=True), Text(caption_ids[doc] + tail, loss=True)]
        text_len = sum(len(p.tokens) for p in parts if isinstance(p, Text))
        n_images = sum(isinstance(p, Image) for p in parts)
        record = encode_record(parts, label=records.labels[k], source_index=records.indices[k],
                               task=task, caption=records.captions[k])
        yield record, text_len, n_images, TASK_IDS[task]


def write_shards(examples, out_dir: str, split: str, per_shard: int) -> dict:
  """Writes ArrayRecord shards and the split's index; returns the split's meta entry."""
  examples = list(examples)
  n_shards = max(1, math.ceil(len(examples) / per_shard))
  names = [f"{split}-{i:05d}-of-{n_shards:05d}.array_record" for i in range(n_shards)]
  for i, name in enumerate(names):
    writer = array_record_module.ArrayRecordWriter(os.path.join(out_dir, name), "group_size:1")
    for record, *_ in examples[i * per_shard:(i + 1) * per_shard]:
      writer.write(record)
    writer.close()
  index = dict(text_len=np.asarray([e[1] for e in examples], np.int32),
               n_images=np.asarray([e[2] for e in examples], np.int32),
               task=np.asarray([e[3] for e in examples], np.int8))
  np.savez(os.path.join(out_dir, f"{split}-index.npz"), **index)
  tasks = {name: int(np.sum(index["task"] == tid)) for name, tid in TASK_IDS.items()}
  sizes = [len(examples[i * per_shard:(i + 1) * per_shard]) for i in range(n_shards)]
  return dict(examples=len(examples), shards=names, shard_sizes=sizes, tasks=tasks)


def prepare(config, out_dir: str, image_tokenizer: ImageTokenizer) -> dict:
  """Runs steps 1-5 and returns meta (also written to out_dir/meta.json)."""
  mc = validate_config(config)
  d, t0 = config.data, time.time()
  vq = image_tokenizer
  if (vq.grid, vq.grid) != tuple(mc.code_grid) or vq.codebook_size != mc.codebook_size:
    raise DataError(f"image tokenizer makes {vq.grid}x{vq.grid} grids of {vq.codebook_size} codes; "
                    f"config.model has code_grid={mc.code_grid}, codebook_size={mc.codebook_size}")
  if vq.channels != config.vq.channels:
    raise DataError(f"image tokenizer takes {vq.channels}-channel images; config.vq.channels="
                    f"{config.vq.channels}: set --config.vq.channels={vq.channels}")
  os.makedirs(out_dir, exist_ok=True)
  source = open_source(d)
  train_idx, eval_idx = split_indices(len(source), d.eval_count, d.seed)
  splits = dict(train=read_split(source, train_idx, config, vq.image_size),
                eval=read_split(source, eval_idx, config, vq.image_size))
  if not splits["train"].captions:
    raise DataError(f"{source.name}: every training record was skipped: {dict(splits['train'].skipped)}")
  tok = text_tokenizer(config, splits["train"].captions, out_dir)

  meta_splits, skipped = {}, collections.Counter()
  for seed_offset, (split, records) in enumerate(splits.items()):
    skipped += records.skipped
    if not records.captions:
      meta_splits[split] = dict(examples=0, shards=[], shard_sizes=[], tasks={}, records=0)
      continue
    gen_codes = image_tokenizer.encode(np.stack(records.gen_images))
    flat_tiles = [t for tiles in records.tiles for t in tiles]
    flat_codes = (gen_codes if d.max_tiles == 1 else image_tokenizer.encode(np.stack(flat_tiles)))
    tile_codes, start = [], 0
    for tiles in records.tiles:
      tile_codes.append(list(flat_codes[start:start + len(tiles)])); start += len(tiles)
    examples = build_examples(records, gen_codes, tile_codes, tok, config, d.seed * 1000 + seed_offset)
    meta_splits[split] = write_shards(examples, out_dir, split, d.records_per_shard)
    meta_splits[split]["records"] = len(records.captions)

  meta = dict(
      format_version=FORMAT_VERSION, source=source.name, raw_records=len(source),
      class_names=list(source.class_names), splits=meta_splits,
      skipped=dict(sorted(skipped.items())), skipped_total=int(sum(skipped.values())),
      text_vocab=tok.vocab_size, special=tok.meta()["special"], text_tokenizer=tok.fingerprint,
      image_tokenizer=image_tokenizer.fingerprint, code_grid=[vq.grid, vq.grid],
      codebook_size=vq.codebook_size, image_size=vq.image_size, channels=vq.channels,
      background=source.background, image_fit=d.image_fit,
      max_tiles=d.max_tiles, thumbnail=bool(d.thumbnail), tasks=dict(d.tasks),
      p_uncond=d.p_uncond, seed=d.seed, seconds=round(time.time() - t0, 1))
  with open(os.path.join(out_dir, "meta.json"), "w") as f:
    json.dump(meta, f, indent=1)
  return meta
