"""PyTorch code that a full export copies beside its weights (transformers remote code).

  configuration_synergen_vl.py   SynerGenVLConfig: the model's shape, fold, unfold head, token ids
  modeling_synergen_vl.py        SynerGenVLForCausalLM: LLM with vision experts, fold embedding,
                                 unfold head; generate() for text, generate_images() with CFG
  processing_synergen_vl.py      SynerGenVLProcessor (AutoProcessor): images + text -> model inputs
  image_tokenizer_synergen_vl.py the image tokenizer: a port of vq/autoencoder.py, or Emu3VQVAE /
                                 diffusers VQModel for imported ones
  tokenization_synergen_vl.py    SynerGenVLTokenizer (AutoTokenizer): a SentencePiece run's exact ids
"""
