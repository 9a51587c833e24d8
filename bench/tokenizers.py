"""Text-tokenizer throughput: the SentencePiece and the tokenizer.json (HF `tokenizers`) paths of
`TextTokenizer` on the same text.

  python -m bench.tokenizers [--vocab 8000] [--repeats 3] [--tokenizer DIR ...]

The text is this repository's docs (docs/**/*.md and README.md: English prose, tables, code), one
line per text, as prepare encodes captions and document spans one at a time. Two tokenizers of
`--vocab` ids at most are trained on it (on this small text the byte-level BPE stops below it): a SentencePiece BPE (`train_sentencepiece`, what prepare
trains without config.data.tokenizer) and a byte-level BPE in a tokenizer.json (Qwen2's and Llama 3's
kind). Each is timed through `TextTokenizer.encode` (one text per call, with the named-piece handling
prepare uses) and, for tokenizer.json, `encode_batch` too (the Rust tokenizer's threads). `--tokenizer`
adds released folders (read with TextTokenizer.load, whose time is printed). Best of `--repeats`
passes; tokens/s counts the ids produced.
"""

from __future__ import annotations

import glob
import os
import time

from absl import app, flags
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from synergen_jax.data.bpe import BpeTokenizer
from synergen_jax.data.tokenizers import SentencePieceTokenizer, TextTokenizer, train_sentencepiece

FLAGS = flags.FLAGS
flags.DEFINE_integer("vocab", 8000, "vocabulary size of both trained tokenizers")
flags.DEFINE_integer("repeats", 3, "timed passes (the best is reported)")
flags.DEFINE_multi_string("tokenizer", [], "also time these tokenizer folders or files")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def corpus() -> list[str]:
  files = sorted(glob.glob(os.path.join(ROOT, "docs", "**", "*.md"), recursive=True))
  files.append(os.path.join(ROOT, "README.md"))
  lines = []
  for f in files:
    with open(f, encoding="utf-8") as fh:
      lines.extend(line.strip() for line in fh if line.strip())
  return lines


def byte_level_bpe(texts: list[str], vocab: int) -> BpeTokenizer:
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  tok.train_from_iterator(texts, trainers.BpeTrainer(
      vocab_size=vocab, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
  tok.add_special_tokens(["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
  return BpeTokenizer(tok.to_str(), config=dict(eos_token="<|endoftext|>"))


def timed(fn, texts: list[str]) -> tuple[float, int]:
  """(best seconds, tokens) of fn(texts) over the repeats."""
  best, tokens = float("inf"), 0
  for _ in range(FLAGS.repeats):
    start = time.perf_counter()
    tokens = sum(len(ids) for ids in fn(texts))
    best = min(best, time.perf_counter() - start)
  return best, tokens


def main(argv):
  del argv
  texts = corpus()
  chars = sum(len(t) for t in texts)
  print(f"text: {len(texts):,} lines, {chars / 1e6:.2f} M characters (docs/ + README.md); "
        f"{os.cpu_count()} CPUs")
  sp = SentencePieceTokenizer(train_sentencepiece(texts, FLAGS.vocab))
  bpe = byte_level_bpe(texts, FLAGS.vocab)
  runs = [("SentencePiece (trained)", sp, "encode"), ("tokenizer.json BPE (trained)", bpe, "encode"),
          ("tokenizer.json BPE (trained)", bpe, "encode_batch")]
  for path in FLAGS.tokenizer:
    start = time.perf_counter()
    tok = TextTokenizer.load(path)
    print(f"{path}: loaded in {time.perf_counter() - start:.1f} s ({tok.release_size:,} release ids, "
          f"{len(tok.appended)} appended)")
    runs.append((f"{os.path.basename(path.rstrip('/'))} ({tok.backend})", tok, "encode"))
    if hasattr(tok, "encode_batch"):
      runs.append((f"{os.path.basename(path.rstrip('/'))} ({tok.backend})", tok, "encode_batch"))
  print("| tokenizer | vocab | call | tokens | chars/token | seconds | tokens/s |")
  print("|---|---|---|---|---|---|---|")
  for name, tok, call in runs:
    fn = (lambda ts, t=tok: [t.encode(x) for x in ts]) if call == "encode" else tok.encode_batch
    seconds, tokens = timed(fn, texts)
    print(f"| {name} | {tok.vocab_size:,} | {call} | {tokens:,} | {chars / tokens:.2f} | "
          f"{seconds:.3f} | {tokens / seconds:,.0f} |")


if __name__ == "__main__":
  app.run(main)
