"""Weights in and out of the framework.

  hf_checkpoint.py  an HF folder read one tensor at a time (safetensors, shards, opt-in pickle)
  hf_families.py    Llama / Qwen2 / InternLM2: config.json fields and the tensor naming map
  importer.py       HF LLM -> a workdir (CLI: hf_import.py)
  exporter.py       a workdir -> HF LLM folder, the text path (CLI: hf_export.py --text_only)
  full_export.py    a workdir -> the whole SynerGen-VL for transformers (CLI: hf_export.py)
  safetensors_out.py  safetensors shards written one tensor at a time (the exports' writer)
  hf_remote/        the PyTorch configuration / modeling / processor code a full export carries
  vq_export.py      a run's image tokenizer -> the export's image_tokenizer/ (PyTorch formats)
  vq_weights.py     VQGAN-style state dicts <-> vq/autoencoder.py
  vq_release.py     released image tokenizers (Emu3, MoVQ, taming VQGAN) read from their folders
  vq_import.py      CLI: python -m synergen_jax.convert.vq_import
"""
