"""The image tokenizer: pixels <-> discrete code grids.

  autoencoder.py  our small VQ: conv encoder, cosine codebook (usage, dead-code restart), decoder
  training.py     trains it on a config's raw source (`python -m synergen_jax.train_vq` is its CLI)
  vqgan.py        diffusers' VQModel in Flax: taming VQGAN (group norms) and MoVQ (spatial norms)
  emu3.py         transformers' Emu3VQVAE in Flax: the tokenizer of Emu3 and SynerGen-VL
  tokenizer.py    `ImageTokenizer`: any of them loaded from its workdir, batched, jitted and
                  sharded encode/decode of uint8 pixels, with a parameter fingerprint

It reads raw images through `data/sources.py` and `data/images.py`; `prepare/writer.py` (prepare) and
`prepare/cache.py` use it to turn images into codes; `convert/vq_release.py` imports released weights.
"""
