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
# (default: a temporary directory).
#
# Failures: when a process exits non-zero (other than 75, "preempted", which all of them do together),
# the others get STOP_GRACE seconds (default 10) to stop by themselves (the trainer's watchdog stops
# them at once after an exception, with status 3) and are then killed with SIGKILL. The script names
# the process that failed first (the first status other than 0, 3 and 75), says how long the others
# took to stop, prints every process's status (137: killed) and exits with the failure's status.
# SIGTERM or SIGINT sent to this script is passed on to every process (SIGTERM: the trainers
# checkpoint and exit 75). SYNERGEN_HEARTBEAT_TIMEOUT defaults to 30 here: a process killed outright
# is noticed by the others' coordination service after that long.
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
STOP_GRACE="${STOP_GRACE:-10}"
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

forward() { echo "local_multiprocess: $1: passing it on to every process" >&2; kill -"$1" "${pids[@]}" 2>/dev/null || true; }
trap 'forward TERM' TERM
trap 'forward INT' INT

declare -A live                              # pid -> process index, while it runs
for i in "${!pids[@]}"; do live[${pids[$i]}]=$i; done
status=0 failed="" killer="" summary="" first_at=""
while ((${#live[@]} > 0)); do
  finished=""
  if wait -n -p finished "${!live[@]}"; then code=0; else code=$?; fi
  [[ -z "$finished" ]] && continue          # a trapped signal interrupted the wait
  i=${live[$finished]}; unset "live[$finished]"
  summary+=" $i:$code"
  [[ "$code" == 0 ]] && continue
  [[ -z "$first_at" ]] && first_at=$EPOCHREALTIME
  # 3 is "stopped because another process failed": the one that failed is the first other status.
  if [[ -z "$failed" && "$code" != 3 ]]; then failed=$i; status=$code; fi
  if [[ "$status" == 0 ]]; then status=$code; fi
  if [[ "$code" != 75 && -z "$killer" && ${#live[@]} -gt 0 ]]; then
    echo "local_multiprocess: process $i exited with status $code; the others get ${STOP_GRACE}s to stop, then SIGKILL" >&2
    (sleep "$STOP_GRACE"; kill -9 "${!live[@]}" 2>/dev/null || true) &
    killer=$!
  fi
done
if [[ -n "$killer" ]]; then kill "$killer" 2>/dev/null || true; fi
if [[ -n "$failed" && "$status" != 75 ]]; then
  where="the output above"; [[ "$failed" != 0 ]] && where="$LOG_DIR/process_$failed.log"
  echo "local_multiprocess: process $failed failed first, status $status (log: $where); all had" \
       "stopped $(python3 -c "print(f'{$EPOCHREALTIME - $first_at:.1f}')") s after the first non-zero exit" >&2
fi
echo "local_multiprocess: exit statuses (process:status, in the order they ended):$summary" >&2
exit "$status"
