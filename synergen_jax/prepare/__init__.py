"""Raw inputs -> prepared data (ArrayRecord parts + meta.json), and the cache that builds it.

  writer.py    input shards -> parts (task mix, image codes, tokenized documents), resumable; merge
  parts.py     one output part per input shard (written whole or not at all), the merge into meta.json
  cache.py     "this config's prepared data and image tokenizer exist": cache keys, builds them
  check.py     prepare --check: per recipe component, the files expected and found, records decodable
  code_cache.py  image codes shared by prepares: each tile encoded once per image tokenizer
  image_side.py  the config's code grid, codebook, channels and image size from its image tokenizer
  __main__.py  python -m synergen_jax.prepare --config ... --out DIR

It sits above vq/ (it runs the image tokenizer) and below train/ (the trainer asks the cache).
"""
