"""Raw data -> token examples, and the Grain pipeline that packs prepared examples into batches.

Reading raw inputs:
  sources.py    random-access (image, caption) sources by config.data.name; the train/eval split
  formats.py    web-scale formats read as streams: webdataset, parquet, interleaved, chat, text
  paths.py      file patterns -> files: globs, brace ranges, buckets (a missing shard is an error)
  documents.py  what a stream yields (pair, document, counted skip) and the input shard
  inputs.py     config.data -> input shards (one per file, or runs of a split), per process
  decoding.py   raw items -> pixels at the tokenizer's size, in worker processes, in order
  images.py     decode, fit to the tokenizer's size, InternVL dynamic-resolution tiles, PNG grids
  tokenizers.py text tokenizers: one interface, special pieces; SentencePiece (train or load)
  bpe.py        tokenizer.json releases (Qwen2, Llama 3) through HF tokenizers
  url_fetch.py  interleaved documents' image URLs fetched before prepare (resumable)
  jsonl.py      JSONL files read line by line, errors naming file:line
Token examples and batches:
  layout.py     example parts -> slots (sequence format, target shift, loss weights), packing
  records.py    the record codec: parts <-> ArrayRecord bytes, format version
  budgets.py    per-row budgets: counted from the index, derived, checked on every batch
  synthetic.py  random examples in the batch layout (benchmarks, AOT, summary)
  pipeline.py   Grain: filter, shuffle, process slice, fold layout, packing, batch, global arrays
  mixture.py    config.data.mixture: the rules, component names and seeds, shared-meta checks

Nothing here runs the image tokenizer: prepare/ (above vq/) does, and writes what pipeline.py reads.
"""
