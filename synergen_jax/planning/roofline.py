"""Step time of one config under one layout on one target: a roofline per step from FLOPs, HBM
traffic and collective bytes per mesh axis over the links in core/hardware.py.

  compute   the FLOPs the chips execute: the model's (accounting.forward_flops, 3x the forward), the
            budgets' padding (the LM head, fold MLP and unfold head run over their per-row
            capacities, not only the real targets), the remat recompute (one more forward of what
            the policy does not save), and full [T, T] scores with the XLA reference attention
            (the flash kernels skip other examples' blocks); over peak x an efficiency ceiling
  memory    HBM bytes: gathered layer weights per pass, every layer's activations written and
            read, the optimizer's update of the sharded master weights and Adam moments
  fsdp      all-gathers of the weights (forward, recompute, backward) and reduce-scatter of the
            trained gradients per micro-batch, over ICI / NVLink, and hierarchically over
            InfiniBand when fsdp spans nodes; overlapped with compute (async collectives), so the step takes the larger
  tensor    two all-reduces of the activations per layer and pass: on the critical path
  data      the gradient all-reduce once per step, over ICI / NVLink or DCN / InfiniBand: exposed

The efficiency ceiling (the share of peak the matmuls reach) is calibrated per device family on
published MaxText measurements (EFFICIENCY below; tests/planning/test_roofline.py checks held-out
ones) and can be replaced by a device check's own measurement (calibrate.read_device_check).
"""

from __future__ import annotations

import dataclasses
import functools

from synergen_jax.data.synthetic import synthetic_batch
from synergen_jax.model import accounting
from synergen_jax.planning.facts import Facts
from synergen_jax.planning.layouts import Layout
from synergen_jax.planning.memory import micro_rows
from synergen_jax.planning.targets import Target

# Family -> share of peak the step's matmuls reach at best. Each is the value that makes this
# roofline reproduce one published MaxText measurement (the calibration point; other published
# points are held out in the test):
#   v5p  MaxText 32B on v5p-128, 71.47% MFU (MaxText README "Runtime Performance Results", v5p table;
#        configs/v5p/32b.sh: 32 layers, d 8192, 64 heads, MLP 28672, seq 2048, 7 rows per chip,
#        remat minimal, tensor 4), github.com/AI-Hypercomputer/maxtext, as published 2024
#   v5e  MaxText 32B on v5e-256, 66.86% MFU (MaxText/configs/v5e/README.md; configs/v5e/32b.sh:
#        4 rows per chip, seq 2048, remat full), as published 2024
#   h100 MaxText Llama2-70B on 64 H100 (8 DGX nodes), BF16, seq 4096, global batch 128: 1,036
#        tokens/s per GPU, 460 TFLOP/s per GPU (NVIDIA DGX Cloud benchmarking recipe "Maxtext
#        Llama2 70B 25.01.1", catalog.ngc.nvidia.com/orgs/nvidia/teams/dgxc-benchmarking/resources/
#        maxtext-llama2-70b-dgxc-benchmarking-c, modified 2025-03-12)
# v6e, v4 and h200 have no calibration point: they take the mean of their platform's.
EFFICIENCY = {"v5p": 0.826, "v5e": 0.879, "h100": 0.599}
EFFICIENCY.update(v6e=(EFFICIENCY["v5p"] + EFFICIENCY["v5e"]) / 2, v4=(EFFICIENCY["v5p"] + EFFICIENCY["v5e"]) / 2,
                  h200=EFFICIENCY["h100"])
STEP_OVERHEAD_S = 0.005        # per step: launch, host work, the metrics' transfer

# Forward passes executed per step beyond the 3 (forward + 2 backward) the model count has.
RECOMPUTE = {"full": 1.0, "save_attention_out": 0.9, "dots": 0.15, "dots_no_batch": 0.15, "none": 0.0}
GATHER_PASSES = {"full": 3, "save_attention_out": 3, "dots": 2, "dots_no_batch": 2, "none": 2}


@dataclasses.dataclass
class StepTime:
  seconds: float
  compute: float
  memory: float
  fsdp: float
  tensor: float
  data: float
  model_flops: float           # per step, the whole target (MFU's numerator)
  hardware_flops: float        # per step, the whole target
  mfu: float
  tokens_per_second_per_chip: float

  def bound(self) -> str:
    return max(("compute", self.compute), ("memory", self.memory), ("fsdp", self.fsdp),
               key=lambda kv: kv[1])[0]


def _segments(f: Facts) -> list[int]:
  """Lengths of the packed examples of one row: generation examples of the config's images, or
  one segment per row when the config has no image targets (text only)."""
  if f.text_only:
    return [f.seq_len]
  ex = accounting.generation_example(f.mc)
  length = ex["text_slots"] + ex["image_slots"]
  return [length] * max(1, f.seq_len // length)


@functools.lru_cache(maxsize=64)
def row_flops(f: Facts, *, padded: bool) -> float:
  """Forward FLOPs of one row: the model's count (accounting.batch_train_flops over rows of the
  synthetic generation / captioning mix, as the AOT report counts them; a text-only config: one
  example per row), or what runs with the budgets' padding (every budgeted slot through its head)."""
  m = f.mc
  if f.text_only:
    return accounting.forward_flops(m, text_slots=f.seq_len, image_slots=0, text_targets=f.seq_len,
                                    image_targets=0, segment_lengths=_segments(f))
  if padded:
    image = m.image_slot_capacity
    return accounting.forward_flops(m, text_slots=f.seq_len - image, image_slots=image,
                                    text_targets=m.text_target_capacity,
                                    image_targets=m.unfold_capacity, segment_lengths=_segments(f))
  rows = 2
  return accounting.batch_train_flops(m, synthetic_batch(m, rows, f.seq_len)) / 3 / rows


def _xla_attention_extra(f: Facts) -> float:
  """Forward FLOPs the XLA reference attention adds to a row: every [T, T] score, not only the
  causal ones inside each example."""
  s = f.mc.llm
  full = 2 * 2 * s.num_layers * s.num_heads * s.head_dim * f.seq_len ** 2
  causal = sum(accounting._attention_score_flops(s, n) for n in _segments(f))
  return full - causal


def step_time(f: Facts, layout: Layout, target: Target, efficiency: dict | None = None) -> StepTime:
  ceiling = (efficiency or EFFICIENCY).get(target.family, 0.5)
  s, b = f.mc.llm, f.compute_bytes
  chips = target.chips
  model = 3 * row_flops(f, padded=False) * f.batch_size
  forward = row_flops(f, padded=True)
  if layout.attention == "xla":
    forward += _xla_attention_extra(f)
  hardware = max((3 + RECOMPUTE[layout.remat]) * forward * f.batch_size, model)
  compute = hardware / chips / (target.peak_flops * ceiling)

  rows = micro_rows(f, layout)
  tokens = rows * f.seq_len
  tp = layout.tensor
  passes = GATHER_PASSES[layout.remat]
  layer_elements = 5 * s.d_model + 3 * s.mlp_dim + 2 * s.num_heads * s.head_dim
  per_micro = (passes * s.num_layers * f.layer_params * b / tp
               + passes * 2 * s.num_layers * tokens * layer_elements * b / tp)
  update = 3 * (f.params * f.param_bytes + 2 * f.trained * 4) / layout.shards
  memory = (layout.grad_accum * per_micro + update) / target.hbm_bandwidth

  n_fsdp = layout.fsdp * layout.dcn_fsdp
  fsdp = 0.0
  if n_fsdp > 1:
    # Across nodes the collectives are hierarchical (NCCL, XLA): inside a node over NVLink, and
    # each device sends only its node-local share over its own InfiniBand port.
    whole = (passes * f.params * b + f.trained * 4) / tp
    inner, outer = layout.fsdp, layout.dcn_fsdp
    fsdp = layout.grad_accum * whole * ((inner - 1) / inner / target.intra_bandwidth
                                        + (outer - 1) / outer / inner / target.inter_bandwidth)
  tensor = 0.0
  if tp > 1:
    activations = tokens * s.d_model * b
    tensor = (layout.grad_accum * 2 * (passes + 1) * s.num_layers * 2 * (tp - 1) / tp * activations
              / target.intra_bandwidth)
  n_data = layout.data * layout.dcn_data
  data = 0.0
  if n_data > 1:
    link = target.inter_bandwidth if layout.dcn_data > 1 else target.intra_bandwidth
    data = 2 * (n_data - 1) / n_data * f.trained * 4 / layout.shards / link
  seconds = max(compute, memory, fsdp) + tensor + data + STEP_OVERHEAD_S
  return StepTime(seconds=seconds, compute=compute, memory=memory, fsdp=fsdp, tensor=tensor,
                  data=data, model_flops=model, hardware_flops=hardware,
                  mfu=model / seconds / chips / target.peak_flops,
                  tokens_per_second_per_chip=f.batch_size * f.seq_len / seconds / chips)
