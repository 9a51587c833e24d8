"""synergen_jax: unified discrete-token image understanding and generation in JAX/Flax.

The package is a stack of folders, one layer each (tests/test_layers.py checks the imports); each
folder's docstring lists its files. The package root holds only the command lines:

  python -m synergen_jax.train       train a stage (train/__main__.py)
  python -m synergen_jax.prepare     raw inputs -> prepared data (prepare/__main__.py)
  python -m synergen_jax.fetch_images  image URLs of interleaved documents, before prepare
  python -m synergen_jax.train_vq    train the image tokenizer
  python -m synergen_jax.sample      text -> images, images -> text, batch jobs
  python -m synergen_jax.score       log-probabilities of given tokens
  python -m synergen_jax.evaluate    the evaluation report or a benchmark suite
  python -m synergen_jax.demo        the CPU demo, end to end
  python -m synergen_jax.summary     parameters, FLOPs and one step of a config
  python -m synergen_jax.config      every config key described; a config validated
  python -m synergen_jax.aot         the train step compiled for a TPU slice or GPU host
  python -m synergen_jax.plan        which slice and layout fit a stage, how long, what it costs
  python -m synergen_jax.serve       an OpenAI-compatible server and playground for a trained run
  python -m synergen_jax.convert.hf_import / hf_export / vq_import   weights in and out
"""

__version__ = "0.1.0"
