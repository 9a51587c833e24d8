#!/usr/bin/env bash
# Train on a Slurm GPU cluster: one task per node, each driving its node's GPUs; jax.distributed
# reads the Slurm environment (SLURM_* variables) to find the coordinator and the process ids.
#
#   launch/slurm_gpu.sh [--dry-run] CONFIG WORKDIR [extra train flags]
#
# Knobs (environment): NODES (2), GPUS_PER_NODE (8), PARTITION, ACCOUNT, TIME (24:00:00),
# JOB_NAME (synergen), VENV (a virtualenv to activate on the nodes), LOG_DIR (slurm_logs).
# WORKDIR must be on a file system every node sees. Writes the batch script to
# $LOG_DIR/<job>.sbatch and submits it; --dry-run prints the script and the sbatch command only.
set -euo pipefail

DRY_RUN=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY_RUN=1; shift; fi
if [[ $# -lt 2 ]]; then
  echo "usage: launch/slurm_gpu.sh [--dry-run] CONFIG WORKDIR [extra train flags]" >&2
  exit 2
fi
CONFIG="$1"; WORKDIR="$2"; shift 2
NODES="${NODES:-2}"; GPUS_PER_NODE="${GPUS_PER_NODE:-8}"; TIME="${TIME:-24:00:00}"
JOB_NAME="${JOB_NAME:-synergen}"; LOG_DIR="${LOG_DIR:-slurm_logs}"
for n in "$NODES" "$GPUS_PER_NODE"; do
  [[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "slurm_gpu.sh: NODES and GPUS_PER_NODE must be positive integers" >&2; exit 2; }
done

train_cmd="python -m synergen_jax.train --config $(printf '%q' "$CONFIG") --workdir $(printf '%q' "$WORKDIR")"
for flag in "$@"; do train_cmd+=" $(printf '%q' "$flag")"; done

script="#!/usr/bin/env bash
#SBATCH --job-name=$JOB_NAME
#SBATCH --nodes=$NODES
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=$GPUS_PER_NODE
#SBATCH --time=$TIME
#SBATCH --output=$LOG_DIR/%x-%j.out${PARTITION:+
#SBATCH --partition=$PARTITION}${ACCOUNT:+
#SBATCH --account=$ACCOUNT}
set -euo pipefail
cd $(printf '%q' "$PWD")${VENV:+
source $(printf '%q' "$VENV")/bin/activate}
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.92
export XLA_FLAGS=\"--xla_gpu_enable_latency_hiding_scheduler=true \${XLA_FLAGS:-}\"
# One process per node; SYNERGEN_DISTRIBUTED=1 makes the trainer call jax.distributed.initialize(),
# which takes the coordinator and process ids from Slurm.
export SYNERGEN_DISTRIBUTED=1
srun --kill-on-bad-exit=1 $train_cmd
"
if [[ "$DRY_RUN" == 1 ]]; then
  printf '%s' "$script"
  echo "+ sbatch $LOG_DIR/$JOB_NAME.sbatch"
  exit 0
fi
mkdir -p "$LOG_DIR"
printf '%s' "$script" > "$LOG_DIR/$JOB_NAME.sbatch"
sbatch "$LOG_DIR/$JOB_NAME.sbatch"
