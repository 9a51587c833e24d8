"""Published training throughputs of dense LLMs in JAX (MaxText) that the roofline is held to.

Each entry: the model's shape, the slice, rows per chip, remat and tensor parallelism as the
recipe ran it, and the published figure as tokens per second per chip. MaxText publishes TFLOP/s
per chip under its own FLOP count (`maxtext_flops_per_token`: 6 x matmul parameters + 12 L H hd S
for attention, the non-causal count these 2024 tables used), which converts to tokens/s.
`calibration` marks the point each family's efficiency ceiling was set from (roofline.EFFICIENCY);
the others are held out.
"""

MAXTEXT = "github.com/AI-Hypercomputer/maxtext"
SCALE_32B = dict(layers=32, d_model=8192, heads=64, kv_heads=64, head_dim=128, mlp=28672, vocab=32000,
                 seq_len=2048)     # global_parameter_scale=32 (MaxText base.yml x get_individual_scales)
SCALE_16B = dict(SCALE_32B, d_model=4096)                                    # global_parameter_scale=16
LLAMA2_70B = dict(layers=80, d_model=8192, heads=64, kv_heads=8, head_dim=128, mlp=28672, vocab=32000,
                  seq_len=4096)

PUBLISHED = [
    dict(name="MaxText 32B, v5p-128", target="v5p-128", shape=SCALE_32B, rows_per_chip=7,
         remat="dots", tensor=4, tflops_per_chip=328.0, calibration=True,
         source=f"{MAXTEXT} README, Runtime Performance Results, TPU v5p (71.47% MFU); "
                "MaxText/configs/v5p/32b.sh; as published 2024, read 2026-12-06"),
    dict(name="MaxText 32B, v5e-256", target="v5e-256", shape=SCALE_32B, rows_per_chip=4,
         remat="full", tensor=1, tflops_per_chip=132.0, calibration=True,
         source=f"{MAXTEXT} MaxText/configs/v5e/README.md (66.86% MFU); configs/v5e/32b.sh; "
                "as published 2024, read 2026-12-06"),
    dict(name="MaxText 16B, v5e-256", target="v5e-256", shape=SCALE_16B, rows_per_chip=6,
         remat="full", tensor=1, tflops_per_chip=120.0, calibration=False,
         source=f"{MAXTEXT} MaxText/configs/v5e/README.md (61.10% MFU); configs/v5e/16b.sh; "
                "as published 2024, read 2026-12-06"),
    dict(name="Llama 2 70B, v5p 512 chips", target="v5p-1024", shape=LLAMA2_70B, rows_per_chip=4,
         remat="full", tensor=1, tokens_per_chip=692.0, calibration=False,
         source="maxtext.readthedocs.io/en/latest/reference/models/tiering.html, v5p Gold "
                "(65.4% MFU, ~692 tokens/s/device, 512 chips, SL 4096); read 2026-12-06"),
    dict(name="Llama 2 70B, 64 x H100", target="h100:8x8", shape=LLAMA2_70B, rows_per_chip=2,
         remat="full", tensor=1, tokens_per_chip=1035.97, calibration=True,
         source="catalog.ngc.nvidia.com/orgs/nvidia/teams/dgxc-benchmarking/resources/"
                "maxtext-llama2-70b-dgxc-benchmarking-c (Maxtext Llama2 70B 25.01.1, BF16, GBS 128, "
                "7.908 s/step, modified 2025-03-12); read 2026-12-06"),
]


def maxtext_flops_per_token(shape: dict) -> float:
  s = shape
  matmul = s["layers"] * (s["d_model"] * (s["heads"] + 2 * s["kv_heads"]) * s["head_dim"]
                          + s["heads"] * s["head_dim"] * s["d_model"] + 3 * s["d_model"] * s["mlp"]) \
      + s["d_model"] * s["vocab"]
  return 6 * matmul + 12 * s["layers"] * s["heads"] * s["head_dim"] * s["seq_len"]


def published_tokens_per_chip(entry: dict) -> float:
  if "tokens_per_chip" in entry:
    return entry["tokens_per_chip"]
  return entry["tflops_per_chip"] * 1e12 / maxtext_flops_per_token(entry["shape"])
