"""PyTorch code that a full export copies beside its weights (transformers remote code).

  configuration_synergen_vl.py   SynerGenVLConfig: the model's shape, fold, unfold head, token ids
  modeling_synergen_vl.py        SynerGenVLForCausalLM: LLM with vision experts, fold embedding,
                                 unfold head; generate() for text, generate_images() with CFG
"""
