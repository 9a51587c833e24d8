#!/usr/bin/env bash
# Runs COMMAND as one task of a multi-host job and, when it ends, appends one line
# "<unix time> <task> <host> <status>" to STATUS_FILE, so the launcher can name the task that failed
# first. <task> is the Slurm node id or TPU worker id. SIGTERM and SIGINT are passed on to COMMAND
# (SIGTERM: the trainer checkpoints and exits 75).
#
#   launch/task_status.sh STATUS_FILE COMMAND...
set -uo pipefail
status_file="$1"; shift
"$@" &
child=$!
trap 'kill -TERM "$child" 2>/dev/null' TERM
trap 'kill -INT "$child" 2>/dev/null' INT
while true; do
  wait "$child"; code=$?
  kill -0 "$child" 2>/dev/null || break     # still running: a trapped signal interrupted the wait
done
echo "$EPOCHREALTIME ${SLURM_NODEID:-${TPU_WORKER_ID:-0}} $(hostname) $code" >> "$status_file"
exit "$code"
