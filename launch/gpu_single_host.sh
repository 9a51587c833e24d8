#!/usr/bin/env bash
# Train on one GPU host: one process drives every visible GPU (the mesh spans them).
#
#   launch/gpu_single_host.sh [--dry-run] CONFIG WORKDIR [extra train flags]
#   e.g. launch/gpu_single_host.sh configs/qwen2_0p5b_ablation.py /data/runs/abl --config.mesh.fsdp=-1
#
# Knobs (environment): CUDA_VISIBLE_DEVICES (which GPUs), MEM_FRACTION (share of GPU memory JAX
# preallocates, default 0.92), XLA_EXTRA (more XLA flags). The XLA flags set here turn on the
# latency-hiding scheduler (overlaps FSDP all-gathers with compute). --dry-run prints the command.
set -euo pipefail

DRY_RUN=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY_RUN=1; shift; fi
if [[ $# -lt 2 ]]; then
  echo "usage: launch/gpu_single_host.sh [--dry-run] CONFIG WORKDIR [extra train flags]" >&2
  exit 2
fi
CONFIG="$1"; WORKDIR="$2"; shift 2

export XLA_PYTHON_CLIENT_MEM_FRACTION="${MEM_FRACTION:-0.92}"
export XLA_FLAGS="$(echo --xla_gpu_enable_latency_hiding_scheduler=true ${XLA_EXTRA:-} ${XLA_FLAGS:-})"
cmd=(python -m synergen_jax.train --config "$CONFIG" --workdir "$WORKDIR" "$@")

echo "+ XLA_PYTHON_CLIENT_MEM_FRACTION=$XLA_PYTHON_CLIENT_MEM_FRACTION XLA_FLAGS='$XLA_FLAGS'" \
     "CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-all}"
printf '+'; printf ' %q' "${cmd[@]}"; printf '\n'
if [[ "$DRY_RUN" == 1 ]]; then exit 0; fi
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader
else
  echo "gpu_single_host.sh: nvidia-smi not found; is this a GPU host?" >&2
fi
exec "${cmd[@]}"
