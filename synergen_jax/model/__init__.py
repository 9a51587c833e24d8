"""The SynerGen-VL network: a decoder with vision experts, token folding in, an unfold head out.

  layers.py        RMSNorm, RoPE (HF rotate-half convention), init helpers with logical axis names
  experts.py       text / vision SwiGLU experts: sort + ragged_dot routing, masked dense reference
  transformer.py   attention block, decoder block, decoder stack (unrolled or nn.scan, remat)
  folding.py       FoldEmbed (paper Eq. 1) and UnfoldHead (paper Eq. 3)
  synergen_vl.py   the whole model: embeddings, decoder, heads
  losses.py        CE_text + lambda * CE_image with per-modality metrics; the full-logits reference
  chunked_xent.py  softmax cross-entropy of a linear classifier, chunked, no full logits
  accounting.py    analytic parameter count and model FLOPs (the MFU convention)
"""
