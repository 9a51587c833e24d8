#!/usr/bin/env bash
# Run N copies of a command on this machine as one jax.distributed job (CPU: gloo collectives),
# the way a multi-host run starts one process per host. For tests and for trying multi-process code.
#
#   launch/local_multiprocess.sh [--dry-run] N COMMAND...
#   e.g. launch/local_multiprocess.sh 2 python -m synergen_jax.train --config configs/tiny.py \
#            --workdir /tmp/mp --config.data.shards=2
#
# Process i gets SYNERGEN_NUM_PROCESSES=N, SYNERGEN_PROCESS_ID=i, SYNERGEN_COORDINATOR=localhost:PORT
# (PORT from $PORT, else a free one), JAX_PLATFORMS=cpu unless set, and DEVICES_PER_PROCESS fake CPU
# devices (default 4). Process 0's output goes to the terminal, process i's to $LOG_DIR/process_i.log
# (default: a temporary directory). Exits with the first non-zero status; if one process dies, the
# others stop within SYNERGEN_HEARTBEAT_TIMEOUT seconds (default here 30) because JAX's coordination
# service notices the missing heartbeats.
set -euo pipefail

DRY_RUN=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY_RUN=1; shift; fi
if [[ $# -lt 2 || ! "$1" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: launch/local_multiprocess.sh [--dry-run] N COMMAND..." >&2
  exit 2
fi
N="$1"; shift
PORT="${PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("localhost", 0)); print(s.getsockname()[1])')}"
LOG_DIR="${LOG_DIR:-$(mktemp -d)}"
DEVICES="${DEVICES_PER_PROCESS:-4}"
export SYNERGEN_NUM_PROCESSES="$N" SYNERGEN_COORDINATOR="localhost:$PORT"
export SYNERGEN_HEARTBEAT_TIMEOUT="${SYNERGEN_HEARTBEAT_TIMEOUT:-30}"
export JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}"
export XLA_FLAGS="--xla_force_host_platform_device_count=$DEVICES"

pids=()
for ((i = 0; i < N; i++)); do
  printf '+ SYNERGEN_PROCESS_ID=%s SYNERGEN_NUM_PROCESSES=%s SYNERGEN_COORDINATOR=%s' "$i" "$N" "$SYNERGEN_COORDINATOR"
  printf ' %q' "$@"; printf '\n'
  [[ "$DRY_RUN" == 1 ]] && continue
  if [[ "$i" == 0 ]]; then
    SYNERGEN_PROCESS_ID=0 "$@" &
  else
    SYNERGEN_PROCESS_ID="$i" "$@" > "$LOG_DIR/process_$i.log" 2>&1 &
  fi
  pids+=($!)
done
[[ "$DRY_RUN" == 1 ]] && exit 0
echo "local_multiprocess: $N processes, logs of 1..$((N - 1)) in $LOG_DIR" >&2
status=0
for pid in "${pids[@]}"; do
  wait "$pid" || { code=$?; [[ "$status" == 0 ]] && status=$code; }
done
exit "$status"
