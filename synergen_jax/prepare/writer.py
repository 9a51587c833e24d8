"""Raw data -> ArrayRecord parts of token examples + meta.json: the library behind
`python -m synergen_jax.prepare` (run once per dataset and tokenizer).

  1. the input shards (data/inputs.py): one per file of a web-scale format, or runs of a
     random-access source's seeded train/eval split; this process takes its share
     (`num_shards`, `shard_index`);
  2. the text tokenizer: config.data.tokenizer (SentencePiece or a tokenizer.json folder), else
     SentencePiece trained on the first TOKENIZER_SAMPLE training texts (deterministic, so every
     process trains the same one); saved into the output folder, which loads back alone;
  3. per shard, streaming: items are decoded in worker processes (data/decoding.py), `in_flight` at
     a time are encoded with the image tokenizer (batched over every local device; tiles that
     earlier prepares encoded come from config.data.code_cache, prepare/code_cache.py) and become
     examples, written into the shard's part (prepare/parts.py) under a temporary name. Pairs get the
     task mix of config.data.tasks:
       caption      [tiles...] prompt caption*          (loss on the caption)
       generation   prompt [image*]                     (loss on the image; the prompt is the
                                                          <UNCOND> one with probability p_uncond)
       interleaved  [image*] caption*, then [image*] caption*.   (loss on everything; partners
                                                          drawn from the same in-flight chunk)
     Documents (interleaved web pages, chat, text) are written as they come, text tokenized;
  4. when every part exists, the merge writes meta.json and the split indices (text length and image
     count per example: the pipeline computes slots for any fold ratio without reading records).

Memory is bounded by `in_flight` examples, whatever the dataset's size. A part is finished or absent,
so a rerun of a killed prepare writes only the parts that were in flight, and several processes
(or hosts, on a file system they share) can split the shards and the last one to finish merges.
Bad records are skipped and counted by reason, never dropped silently.
"""

from __future__ import annotations

import collections
import glob
import hashlib
import json
import os
import time
import zlib
from typing import Iterable, Iterator

import numpy as np
from array_record.python import array_record_module

from synergen_jax.core import storage
from synergen_jax.core.config import validate_config
from synergen_jax.prepare import parts as parts_lib
from synergen_jax.prepare.code_cache import ShardCodes
from synergen_jax.data.decoding import (DecodedDocument, DecodedImage, DecodedPair, FitSettings,
                                        decode_pool, decode_stream)
from synergen_jax.data.documents import Document, InputShard, Skipped, TextSpan
from synergen_jax.core.errors import DataError
from synergen_jax.data.inputs import Inputs, assigned, open_inputs
from synergen_jax.data.layout import Image, Text
from synergen_jax.data.records import FORMAT_VERSION, TASK_IDS, encode_record
from synergen_jax.data.sources import RawExample
from synergen_jax.data.tokenizers import (SentencePieceTokenizer, TextTokenizer, saved_tokenizer,
                                          train_sentencepiece)
from synergen_jax.vq.tokenizer import ImageTokenizer

TOKENIZER_SAMPLE = 1_000_000        # texts SentencePiece is trained on when no tokenizer is given
SPLIT_IDS = dict(train=0, eval=1)
# Settings that change how examples are packed or read, not what prepare writes.
READ_ONLY_KNOBS = ("path", "eval_path", "cache_dir", "seq_len", "too_long", "num_workers", "prefetch",
                   "packing_bins", "shards", "mixture", "code_cache")


# ---------------------------------------------------------------------------------------------------
# Text tokenizer.
# ---------------------------------------------------------------------------------------------------

def _texts(item) -> Iterator[str]:
  if isinstance(item, RawExample):
    yield (item.text or "").strip()
  elif isinstance(item, Document):
    for span in item.spans:
      if isinstance(span, TextSpan):
        yield span.text.strip()


def training_texts(shards: Iterable[InputShard], limit: int = TOKENIZER_SAMPLE) -> list[str]:
  """The first `limit` non-empty texts of the training shards, in shard order."""
  out = []
  for shard in shards:
    if shard.split != "train":
      continue
    for item in shard.read():
      out.extend(t for t in _texts(item) if t)
      if len(out) >= limit:
        return out[:limit]
  return out


def text_tokenizer(config, inputs: Inputs, out_dir: str) -> TextTokenizer:
  """config.data.tokenizer (a SentencePiece model or a tokenizer.json folder), else the one trained
  earlier into out_dir, else trained now; saved into out_dir (tok.save), which loads back alone."""
  d = config.data
  if d.tokenizer:
    tok = TextTokenizer.load(d.tokenizer, d.reserved_tokens)
  elif saved_tokenizer(out_dir):
    tok = TextTokenizer.load(out_dir, d.reserved_tokens)
  else:
    texts = training_texts(inputs.shards)
    if not texts:
      raise DataError(f"{inputs.name}: no training text to train the text tokenizer on; set "
                      "config.data.tokenizer to a SentencePiece model or a tokenizer.json folder")
    prompts = [d.caption_prompt, d.generation_prompt, d.uncond_prompt.replace("<UNCOND>", "")]
    # Conversations need the chat template's pieces as single ids; other data keeps the demo's model.
    tok = SentencePieceTokenizer(train_sentencepiece(texts, config.model.text_vocab, d.reserved_tokens,
                                                     seed_sentences=prompts, chat=d.name == "chat"),
                                 d.reserved_tokens)
  if tok.vocab_size > config.model.text_vocab:
    raise DataError(f"text tokenizer has {tok.vocab_size} ids (with appended special pieces) but "
                    f"config.model.text_vocab={config.model.text_vocab}; raise text_vocab to at least "
                    f"{tok.vocab_size}")
  tok.save(out_dir)
  return tok


def prepare_key(config, tok: TextTokenizer, vq: ImageTokenizer) -> str:
  """Hash of everything that changes the records: a part written under another key is refused."""
  d = json.loads(config.data.to_json_best_effort())
  for knob in READ_ONLY_KNOBS:
    d.pop(knob, None)
  key = json.dumps(dict(data=d, text=tok.fingerprint, image=vq.fingerprint, channels=vq.channels,
                        format=FORMAT_VERSION), sort_keys=True)
  return hashlib.sha256(key.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------------
# Examples.
# ---------------------------------------------------------------------------------------------------

def _count(weight: float, rng) -> int:
  whole = int(np.floor(weight))
  return whole + int(rng.random() < weight - whole)


class _Prompts:
  def __init__(self, tok: TextTokenizer, d):
    self.caption, self.uncond = tok.encode(d.caption_prompt), tok.encode(d.uncond_prompt)
    self.generation, self.then, self.stop = (tok.encode(d.generation_prompt), tok.encode(", then"),
                                             tok.encode("."))


def pair_examples(pairs, gen_codes, tile_codes, tok, prompts: _Prompts, d, rng):
  """(parts, pair index, task) for a chunk of pairs, by the task mix."""
  caption_ids = [tok.encode(p.caption) for p in pairs]
  n = len(pairs)
  for k in range(n):
    for task in ("caption", "generation", "interleaved"):
      for _ in range(_count(d.tasks.get(task, 0.0), rng)):
        if task == "caption":
          parts = [Image(c) for c in tile_codes[k]]
          parts += [Text(prompts.caption), Text(caption_ids[k], loss=True)]
        elif task == "generation":
          prompt = prompts.uncond if rng.random() < d.p_uncond else prompts.generation + caption_ids[k]
          parts = [Text(prompt), Image(gen_codes[k], loss=True)]
        else:
          if n < d.interleaved_images:
            continue
          others = rng.choice(np.delete(np.arange(n), k), d.interleaved_images - 1, replace=False)
          docs = [k, *map(int, others)]
          parts = []
          for j, doc in enumerate(docs):
            tail = prompts.stop if j == len(docs) - 1 else prompts.then
            parts += [Image(gen_codes[doc], loss=True), Text(caption_ids[doc] + tail, loss=True)]
        yield parts, k, task


def document_parts(doc: DecodedDocument, codes: Iterator, tok: TextTokenizer) -> list:
  parts = []
  for span in doc.spans:
    if isinstance(span, DecodedImage):
      parts += [Image(next(codes), span.loss) for _ in span.pixels]
    else:
      ids = tok.encode(span.text)
      if ids:     # a span that encodes to nothing (the newline after a chat's last turn) adds none
        parts.append(Text(ids, span.loss))
  return parts


class _PartWriter:
  """One part's records and index, under temporary names until `finish`."""

  def __init__(self, out_dir: str, shard: InputShard):
    self.out_dir, self.shard = out_dir, shard
    self.file = parts_lib.Staged(parts_lib.part_path(out_dir, shard, ".array_record"))
    self.writer = array_record_module.ArrayRecordWriter(self.file.local, "group_size:1")
    self.index = collections.defaultdict(list)
    self.tasks = collections.Counter()

  def write(self, parts, *, label: int, source_index: int, task: str, caption: str) -> None:
    self.writer.write(encode_record(parts, label=label, source_index=source_index, task=task,
                                    caption=caption))
    self.index["text_len"].append(sum(len(p.tokens) for p in parts if isinstance(p, Text)))
    self.index["n_images"].append(sum(isinstance(p, Image) for p in parts))
    self.index["loss_text_len"].append(sum(len(p.tokens) for p in parts
                                           if isinstance(p, Text) and p.loss))
    self.index["n_loss_images"].append(sum(isinstance(p, Image) and p.loss for p in parts))
    self.index["task"].append(TASK_IDS[task])
    self.tasks[task] += 1

  def finish(self, counts: dict) -> dict:
    self.writer.close()
    self.file.commit()
    arrays = dict(text_len=np.asarray(self.index["text_len"], np.int32),
                  n_images=np.asarray(self.index["n_images"], np.int32),
                  loss_text_len=np.asarray(self.index["loss_text_len"], np.int32),
                  n_loss_images=np.asarray(self.index["n_loss_images"], np.int32),
                  task=np.asarray(self.index["task"], np.int8))
    parts_lib.write_npz(parts_lib.part_path(self.out_dir, self.shard, "-index.npz"), arrays)
    part = dict(counts, examples=len(arrays["task"]), tasks=dict(self.tasks))
    parts_lib.write_json(parts_lib.part_path(self.out_dir, self.shard, ".json"), part)
    return part


def _chunks(items: Iterable, size: int) -> Iterator[list]:
  chunk = []
  for item in items:
    chunk.append(item)
    if len(chunk) == size:
      yield chunk; chunk = []
  if chunk:
    yield chunk


def write_part(shard: InputShard, config, tok: TextTokenizer, vq: ImageTokenizer, settings,
               out_dir: str, key: str, pool=None) -> dict:
  """Streams one input shard into its part; returns the part's counts."""
  d, t0 = config.data, time.time()
  rng = np.random.default_rng([d.seed, SPLIT_IDS[shard.split], zlib.crc32(shard.name.encode())])
  if not storage.is_remote(out_dir):   # a killed run's half-written files (one writer per shard)
    for suffix in parts_lib.SUFFIXES:
      for stale in glob.glob(glob.escape(parts_lib.part_path(out_dir, shard, suffix)) + ".tmp*"):
        os.remove(stale)
  prompts, out = _Prompts(tok, d), _PartWriter(out_dir, shard)
  cache = ShardCodes(d.code_cache, vq.fingerprint, shard)   # tiles encoded by earlier prepares
  index_of = (shard.source_indices.__getitem__ if shard.source_indices is not None else int)
  keyed = ((f"{shard.split}/{shard.name}/{j}", item) for j, item in enumerate(shard.read()))
  decoded = decode_stream(keyed, settings, pool, in_flight=d.in_flight)
  skipped, dropped, records, raw = collections.Counter(), collections.Counter(), 0, 0
  where = collections.defaultdict(list)
  for chunk in _chunks(enumerate(decoded), d.in_flight):
    raw += len(chunk)
    kept = []
    for j, item in chunk:
      if isinstance(item, Skipped):
        skipped[item.reason] += 1
        if skipped[item.reason] <= parts_lib.WHERE_PER_REASON:
          where[item.reason].append(item.where)
      else:
        kept.append((j, item))
    pixels = []      # every image of the chunk, encoded in one call
    for _, item in kept:
      if isinstance(item, DecodedPair):
        pixels += [item.gen] + (item.tiles if d.max_tiles > 1 else [])
      else:
        pixels += [p for span in item.spans if isinstance(span, DecodedImage) for p in span.pixels]
    codes = iter(cache.encode(vq, pixels) if pixels else ())
    pairs, pair_at, gen_codes, tile_codes = [], [], [], []
    for j, item in kept:
      records += 1
      if isinstance(item, DecodedPair):
        gen = next(codes)
        tiles = [next(codes) for _ in item.tiles] if d.max_tiles > 1 else [gen]
        pairs.append(item); pair_at.append(j); gen_codes.append(gen); tile_codes.append(tiles)
      else:
        dropped.update(item.dropped)
        out.write(document_parts(item, codes, tok), label=-1, source_index=index_of(j),
                  task=item.task, caption="")
    for parts, k, task in pair_examples(pairs, gen_codes, tile_codes, tok, prompts, d, rng):
      out.write(parts, label=pairs[k].label, source_index=index_of(pair_at[k]), task=task,
                caption=pairs[k].caption)
  cache.save()
  return out.finish(dict(key=key, records=records, raw_items=raw, skipped=dict(skipped),
                         skipped_where=dict(where), dropped_images=dict(dropped),
                         tiles_encoded=cache.encoded, tiles_reused=cache.reused,
                         seconds=round(time.time() - t0, 2)))


# ---------------------------------------------------------------------------------------------------
# The whole prepare.
# ---------------------------------------------------------------------------------------------------

def _check_tokenizer(config, vq: ImageTokenizer) -> None:
  mc = validate_config(config)
  if (vq.grid, vq.grid) != tuple(mc.code_grid) or vq.codebook_size != mc.codebook_size:
    raise DataError(f"image tokenizer makes {vq.grid}x{vq.grid} grids of {vq.codebook_size} codes; "
                    f"config.model has code_grid={mc.code_grid}, codebook_size={mc.codebook_size}")
  if vq.channels != config.vq.channels:
    raise DataError(f"image tokenizer takes {vq.channels}-channel images; config.vq.channels="
                    f"{config.vq.channels}: set --config.vq.channels={vq.channels}")


def prepare(config, out_dir: str, image_tokenizer: ImageTokenizer, *, workers: int = 0,
            num_shards: int = 1, shard_index: int = 0, log=None) -> dict | None:
  """Writes this process's parts and, when every part exists, merges them.

  Returns meta (also out_dir/meta.json) when merged, None when other processes' parts are still
  missing (the last process to finish merges; `python -m synergen_jax.prepare --merge` does it too).
  """
  t0, vq = time.time(), image_tokenizer
  _check_tokenizer(config, vq)
  storage.path(os.path.join(out_dir, parts_lib.PARTS), "--out").mkdir(parents=True, exist_ok=True)
  inputs = open_inputs(config.data)
  tok = text_tokenizer(config, inputs, out_dir)
  key = prepare_key(config, tok, vq)
  settings = FitSettings.from_config(config, vq.image_size, inputs.background)
  mine = assigned(inputs.shards, num_shards, shard_index)
  todo = [s for s in mine if parts_lib.read_part(out_dir, s, key) is None]   # else finished earlier
  with decode_pool(workers if todo else 0) as pool:
    for n, shard in enumerate(todo):
      part = write_part(shard, config, tok, vq, settings, out_dir, key, pool)
      if log:
        log(f"prepare: {shard.split}-{shard.name} ({n + 1}/{len(todo)} to write, {len(mine)} "
            f"here): {part['examples']} examples from {part['records']} records, skipped "
            f"{part['skipped']}, tiles encoded {part['tiles_encoded']} (cached: "
            f"{part['tiles_reused']})")
  if any(parts_lib.read_part(out_dir, s, key) is None for s in inputs.shards):
    return None
  return merge(config, out_dir, inputs, tok, vq, key, seconds=time.time() - t0)


def merge(config, out_dir: str, inputs: Inputs, tok: TextTokenizer, vq: ImageTokenizer, key: str,
          seconds: float = 0.0) -> dict:
  d = config.data
  meta = dict(
      format_version=FORMAT_VERSION, source=inputs.name, raw_records=inputs.raw_records,
      class_names=list(inputs.class_names),
      text_vocab=tok.vocab_size, special=tok.meta()["special"], text_tokenizer=tok.fingerprint,
      text_pieces=tok.meta()["pieces"], text_reused=tok.meta()["reused"],
      image_tokenizer=vq.fingerprint, code_grid=[vq.grid, vq.grid],
      codebook_size=vq.codebook_size, image_size=vq.image_size, channels=vq.channels,
      background=inputs.background, image_fit=d.image_fit,
      max_tiles=d.max_tiles, thumbnail=bool(d.thumbnail), tasks=dict(d.tasks),
      p_uncond=d.p_uncond, seed=d.seed, seconds=round(seconds, 1))
  meta = parts_lib.merge(out_dir, inputs.shards, key, meta)
  if not meta["splits"]["train"]["examples"]:
    raise DataError(f"{inputs.name}: every training record was skipped: {meta['skipped']}")
  return meta


def merge_only(config, out_dir: str, image_tokenizer: ImageTokenizer) -> dict:
  """Merges parts that other processes wrote (`python -m synergen_jax.prepare --merge`)."""
  _check_tokenizer(config, image_tokenizer)
  inputs = open_inputs(config.data)
  tok = text_tokenizer(config, inputs, out_dir)
  return merge(config, out_dir, inputs, tok, image_tokenizer,
               prepare_key(config, tok, image_tokenizer))
