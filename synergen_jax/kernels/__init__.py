"""Attention: one entry point and our Pallas flash-attention kernels.

  attention.py       `attention(q, k, v, segment_ids=, causal=, impl=)`: xla (reference), pallas_gpu,
                     pallas_mgpu, pallas_tpu, cudnn; `decode_attention`; the list of implementations
  flash_gpu.py       Pallas (Triton) flash attention, forward + backward
  flash_mgpu.py      Pallas (Mosaic GPU, Hopper: wgmma + TMA) flash attention, forward + backward
  flash_tpu.py       Pallas (Mosaic TPU) flash attention, forward + backward
  flash_vjp.py       the custom_vjp the flash kernels share
  segment_blocks.py  which key blocks each query block must visit (causal and segment skipping)
"""
