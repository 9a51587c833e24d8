#!/usr/bin/env bash
# Train on a Slurm GPU cluster: one task per node, each process driving all of its node's GPUs.
#
#   launch/slurm_gpu.sh [--dry-run] CONFIG WORKDIR [extra train flags]
#
# Knobs (environment): NODES (2), GPUS_PER_NODE (8), CPUS_PER_TASK (8 per GPU: the data pipeline's
# decoding and packing run on them; Slurm's default is 1), PARTITION, ACCOUNT, TIME (24:00:00),
# JOB_NAME (synergen), VENV (a virtualenv to activate on the nodes), LOG_DIR (slurm_logs),
# PREEMPT_NOTICE (300: seconds before the time limit at which Slurm sends the trainers SIGTERM),
# MAX_REQUEUES (20), EXCLUSIVE (1: whole nodes, --exclusive; 0: share them with other jobs), MEM
# (0: all of each node's memory, --mem=0; a size such as 480G; empty: the partition's default),
# MIN_GRACE_SECONDS (120: the preemption grace a checkpoint needs; 0: no check), GPU (h100: what the
# plan assumes; h200; empty: no plan), SKIP_PLAN=1 (submit without the plan). WORKDIR and LOG_DIR
# must be on a file system every node sees. Writes the batch script to $LOG_DIR/<job>.sbatch and
# submits it; --dry-run prints the script and the sbatch command.
#
# Why whole nodes with all their memory: the one process per node drives every GPU, so another job's
# processes on the node would share its NVLink, PCIe and CPUs; the input pipeline and checkpoint
# saving hold host memory, and Slurm's default (DefMemPerCPU) is often a few GB per CPU.
#
# Why one task per node: one Python process per host owns the host's data pipeline and all its
# GPUs (the mesh spans them; NCCL joins hosts), as on TPU VMs. JAX's own Slurm detection would pin
# each process to the single GPU numbered SLURM_LOCALID, so the script sets JAX_LOCAL_DEVICE_IDS to
# every GPU of the node.
#
# Logs: $LOG_DIR/<job>-<id>.out (this script's own, appended across requeues) and one per node and
# run, $LOG_DIR/<job>-<id>-run<R>-node<N>.log. When a task fails, srun (--kill-on-bad-exit) stops the
# others and the job log names the node that failed first, with its status.
#
# Preemption and time limits: Slurm sends SIGTERM (on preemption, and PREEMPT_NOTICE seconds before
# the time limit); every trainer checkpoints at one agreed step and exits 75; the job then requeues
# itself (--requeue, at most MAX_REQUEUES times) and the rerun resumes from that checkpoint. A
# preempted job is killed the partition's GraceTime after its SIGTERM (Slurm's default: 0 s, no time
# to save anything). At submit time, and again in the job's log with the partition it got,
# launch/slurm_grace.sh reads GraceTime (scontrol show partition) and warns when it is under
# MIN_GRACE_SECONDS on a partition that preempts. It warns rather than refuses: many partitions never preempt in practice,
# and the periodic checkpoints and the time-limit notice work whatever GraceTime is.
set -euo pipefail

DRY_RUN=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY_RUN=1; shift; fi
if [[ $# -lt 2 ]]; then
  echo "usage: launch/slurm_gpu.sh [--dry-run] CONFIG WORKDIR [extra train flags]" >&2
  exit 2
fi
CONFIG="$1"; WORKDIR="$2"; shift 2
positive() { [[ "$2" =~ ^[1-9][0-9]*$ ]] || { echo "slurm_gpu.sh: $1=$2 must be a positive integer" >&2; exit 2; }; }
NODES="${NODES:-2}"; positive NODES "$NODES"
GPUS_PER_NODE="${GPUS_PER_NODE:-8}"; positive GPUS_PER_NODE "$GPUS_PER_NODE"
CPUS_PER_TASK="${CPUS_PER_TASK:-$((8 * GPUS_PER_NODE))}"; positive CPUS_PER_TASK "$CPUS_PER_TASK"
PREEMPT_NOTICE="${PREEMPT_NOTICE:-300}"; positive PREEMPT_NOTICE "$PREEMPT_NOTICE"
MAX_REQUEUES="${MAX_REQUEUES:-20}"; [[ "$MAX_REQUEUES" =~ ^[0-9]+$ ]] ||
  { echo "slurm_gpu.sh: MAX_REQUEUES=$MAX_REQUEUES must be a number" >&2; exit 2; }
MIN_GRACE_SECONDS="${MIN_GRACE_SECONDS:-120}"; [[ "$MIN_GRACE_SECONDS" =~ ^[0-9]+$ ]] ||
  { echo "slurm_gpu.sh: MIN_GRACE_SECONDS=$MIN_GRACE_SECONDS must be a number of seconds" >&2; exit 2; }
EXCLUSIVE="${EXCLUSIVE:-1}"; [[ "$EXCLUSIVE" =~ ^[01]$ ]] ||
  { echo "slurm_gpu.sh: EXCLUSIVE=$EXCLUSIVE must be 1 (whole nodes) or 0 (shared nodes)" >&2; exit 2; }
MEM="${MEM-0}"; [[ -z "$MEM" || "$MEM" =~ ^[0-9]+[KMGT]?$ ]] ||
  { echo "slurm_gpu.sh: MEM=$MEM must be 0 (all of a node's memory), a size such as 480G, or empty" >&2; exit 2; }
TIME="${TIME:-24:00:00}"; JOB_NAME="${JOB_NAME:-synergen}"; LOG_DIR="${LOG_DIR:-slurm_logs}"
[[ "$LOG_DIR" == /* ]] || LOG_DIR="$PWD/$LOG_DIR"     # the job runs elsewhere: absolute paths

train_cmd="python -m synergen_jax.train --config $(printf '%q' "$CONFIG") --workdir $(printf '%q' "$WORKDIR")"
for flag in "$@"; do train_cmd+=" $(printf '%q' "$flag")"; done
exclusive=""; if [[ "$EXCLUSIVE" == 1 ]]; then exclusive=1; fi
device_ids="$(seq -s, 0 $((GPUS_PER_NODE - 1)))"
q() { printf '%q' "$1"; }

script="#!/usr/bin/env bash
#SBATCH --job-name=$JOB_NAME
#SBATCH --nodes=$NODES
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=$GPUS_PER_NODE
#SBATCH --cpus-per-task=$CPUS_PER_TASK
#SBATCH --time=$TIME
#SBATCH --requeue
#SBATCH --signal=TERM@$PREEMPT_NOTICE
#SBATCH --open-mode=append
#SBATCH --output=$LOG_DIR/%x-%j.out${PARTITION:+
#SBATCH --partition=$PARTITION}${ACCOUNT:+
#SBATCH --account=$ACCOUNT}${exclusive:+
#SBATCH --exclusive}${MEM:+
#SBATCH --mem=$MEM}
set -uo pipefail
cd $(q "$PWD")
# The partition the job got (sbatch may have picked the default, or one of several).
bash launch/slurm_grace.sh \"\${SLURM_JOB_PARTITION:-}\" $MIN_GRACE_SECONDS 2>&1${VENV:+
source $(q "$VENV")/bin/activate}
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.92
export XLA_FLAGS=\"--xla_gpu_enable_latency_hiding_scheduler=true \${XLA_FLAGS:-}\"
# One process per node driving all its GPUs; jax.distributed takes the coordinator and process ids
# from Slurm's variables (SYNERGEN_DISTRIBUTED=1).
export SYNERGEN_DISTRIBUTED=1 JAX_LOCAL_DEVICE_IDS=$device_ids
run=\${SLURM_RESTART_COUNT:-0}
logs=$(q "$LOG_DIR")/\$SLURM_JOB_NAME-\$SLURM_JOB_ID-run\$run
echo \"slurm_gpu: run \$run of job \$SLURM_JOB_ID on \$SLURM_JOB_NODELIST; node logs \$logs-node*.log\"
# The batch shell itself must outlive a SIGTERM (preemption) to requeue: srun runs in the background.
trap 'echo \"slurm_gpu: SIGTERM: the trainers checkpoint and exit 75\"' TERM
srun --kill-on-bad-exit=1 --cpus-per-task=$CPUS_PER_TASK --output=\"\$logs-node%n.log\" \\
    bash launch/task_status.sh \"\$logs.status\" $train_cmd &
srun_pid=\$!
while true; do
  wait \$srun_pid; status=\$?
  kill -0 \$srun_pid 2>/dev/null || break      # still running: the trap interrupted the wait
done
if [[ \$status == 75 ]]; then
  if (( run < $MAX_REQUEUES )); then
    echo \"slurm_gpu: preempted; checkpoint saved; requeueing (run \$((run + 1)) resumes)\"
    scontrol requeue \"\$SLURM_JOB_ID\"
  else
    echo \"slurm_gpu: preempted, and already requeued $MAX_REQUEUES times: not requeueing\"
  fi
elif [[ \$status != 0 ]]; then
  # The first task that failed by itself: statuses 3 (stopped because another failed) and 137/143
  # (killed by srun after the first failure) are consequences.
  first=\$(sort -n \"\$logs.status\" 2>/dev/null | awk '\$4 != 0 && \$4 != 3 && \$4 != 75 && \$4 < 128' | head -n 1)
  if [[ -n \$first ]]; then
    read -r _ node host code <<< \"\$first\"
    echo \"slurm_gpu: node \$node (\$host) failed first with status \$code; its log: \$logs-node\$node.log\"
  else
    echo \"slurm_gpu: srun exited with status \$status; per-node statuses in \$logs.status\"
  fi
fi
exit \$status
"
# Before submitting: the plan of the config's own layout on NODES x GPUS_PER_NODE GPUs (memory per
# GPU, step time, hours and cost); a layout that does not fit is refused here, not after the queue.
GPU="${GPU-h100}"
if [[ -n "$GPU" && "${SKIP_PLAN:-0}" != 1 ]]; then
  overrides=(); for flag in "$@"; do [[ "$flag" == --config.* ]] && overrides+=("$flag"); done
  echo "+ python -m synergen_jax.plan --config $CONFIG --targets $GPU:${NODES}x$GPUS_PER_NODE --configured_only ${overrides[*]}"
  python -m synergen_jax.plan --config "$CONFIG" --targets "$GPU:${NODES}x$GPUS_PER_NODE" \
      --configured_only "${overrides[@]}" ||
    { echo "slurm_gpu.sh: the plan refuses this job (above); nothing was submitted (more nodes," \
           "a smaller batch, or SKIP_PLAN=1)" >&2; exit 1; }
fi
# Before submitting: the partition asked for (PARTITION, or sbatch's SBATCH_PARTITION), else the default.
bash "$(dirname "$0")/slurm_grace.sh" "${PARTITION:-${SBATCH_PARTITION:-}}" "$MIN_GRACE_SECONDS"
if [[ "$DRY_RUN" == 1 ]]; then
  printf '%s' "$script"
  echo "+ sbatch $LOG_DIR/$JOB_NAME.sbatch"
  exit 0
fi
mkdir -p "$LOG_DIR"
printf '%s' "$script" > "$LOG_DIR/$JOB_NAME.sbatch"
sbatch "$LOG_DIR/$JOB_NAME.sbatch"
