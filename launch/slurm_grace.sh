#!/usr/bin/env bash
# Warns (on stderr, exit 0) when a Slurm partition preempts jobs with less grace than saving a
# checkpoint needs. launch/slurm_gpu.sh runs it at submit time and again at the start of the job.
#
#   launch/slurm_grace.sh PARTITION MIN_SECONDS      (PARTITION empty: the partition marked Default=YES)
#
# On preemption (PreemptMode CANCEL or REQUEUE) Slurm sends the job SIGTERM and kills it GraceTime
# seconds later; GraceTime is a partition setting whose default is 0. The trainers save a checkpoint
# on SIGTERM, which takes time. Time limits are a different path: --signal=TERM@N gives N seconds
# whatever GraceTime is. Never fails the caller: a partition it cannot read is reported and skipped.
set -uo pipefail
partition="${1:-}"; need="${2:-120}"
(( need > 0 )) || exit 0

seconds() {   # a Slurm duration ([D-]HH:MM:SS, MM:SS or seconds) in seconds; fails on other forms
  local t="$1" days=0 total=0 part
  [[ "$t" =~ ^([0-9]+-)?[0-9]+(:[0-9]+){0,2}$ ]] || return 1
  if [[ "$t" == *-* ]]; then days="${t%%-*}"; t="${t#*-}"; fi
  IFS=: read -r -a parts <<< "$t"
  for part in "${parts[@]}"; do total=$((total * 60 + 10#$part)); done
  echo $((days * 86400 + total))
}

field() {     # field NAME TEXT: the value of NAME=value among scontrol's key=value fields
  grep -oE "(^|[[:space:]])$1=[^[:space:]]+" <<< "$2" | head -n 1 | cut -d= -f2-
}

if ! command -v scontrol > /dev/null; then
  echo "slurm_gpu: scontrol not found: partition ${partition:-(default)}'s GraceTime not checked" >&2
  exit 0
fi
if [[ -z "$partition" ]]; then        # sbatch's default partition
  partition=$(field PartitionName "$(scontrol -o show partition 2> /dev/null | grep -E '(^| )Default=YES( |$)')")
fi
if ! info=$(scontrol -o show partition "$partition" 2>&1); then
  echo "slurm_gpu: cannot read partition ${partition:-(default)} (scontrol: $info): GraceTime not checked" >&2
  exit 0
fi
grace=$(field GraceTime "$info"); mode=$(field PreemptMode "$info")
# SUSPEND and OFF never kill a job; an empty mode (an old scontrol) is taken as killing.
[[ -z "$mode" || "$mode" =~ CANCEL|REQUEUE ]] || exit 0
if ! have=$(seconds "${grace:-0}"); then
  echo "slurm_gpu: partition $partition: GraceTime=$grace is not a duration: not checked" >&2
  exit 0
fi
(( have < need )) || exit 0
cat >&2 << EOF
slurm_gpu: WARNING: partition $partition has GraceTime=${grace:-0} (${have} s) and PreemptMode=${mode:-unknown}:
  a preempted job is killed ${have} s after its SIGTERM, and saving a checkpoint needs about ${need} s
  (MIN_GRACE_SECONDS). On preemption the run would resume from its last periodic checkpoint
  (--config.train.checkpoint_every), losing the steps since. Ask the cluster's admins for
  GraceTime>=${need} on $partition, or submit to a partition that does not preempt (PARTITION=...);
  until then, checkpoint more often. Time limits are not affected: the trainers get SIGTERM
  PREEMPT_NOTICE seconds before (--signal=TERM@N), checkpoint, and the job requeues itself.
EOF
