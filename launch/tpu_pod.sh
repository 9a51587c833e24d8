#!/usr/bin/env bash
# Train on a Cloud TPU VM slice: check that the step fits, create the slice, install this checkout
# on every worker, prepare data and train on all workers, read any worker's log, stop, delete; or
# `run`, which does all of that and brings the run back by itself when the slice is preempted.
#
#   launch/tpu_pod.sh [--dry-run] VERB [-- extra flags for the train/prepare/aot command]
#
#   preflight  print the plan of the config's own layout on the slice (python -m synergen_jax.plan
#              --configured_only: memory per chip, step time, hours and cost; exit 1 when it does
#              not fit), then compile the train step here for the slice (python -m synergen_jax.aot
#              --accelerator_type $ACCELERATOR_TYPE, libtpu, no TPU needed); exit 1 if it does not fit
#   up         preflight (SKIP_PREFLIGHT=1 skips it), create the slice unless a READY one exists
#              (queued resources for spot/reserved capacity or QUEUED=1, waiting until ACTIVE; one
#              left PREEMPTED, TERMINATED, SUSPENDED or FAILED is deleted and created afresh; a
#              create refused for lack of capacity is tried again every RETRY_SECONDS), ship this
#              checkout to every worker and install it with the tpu extra in a uv-made Python
#              $PYTHON_VERSION environment (~/synergen_env; TPU VM images carry Python 3.10)
#   prepare    python -m synergen_jax.prepare --config $CONFIG --out $PREPARE_OUT on every worker,
#              each writing its share of the input shards (from the worker id); the last merges
#   train      start python -m synergen_jax.train --config $CONFIG --workdir $WORKDIR on every
#              worker, detached from ssh (setsid, </dev/null), log in ~/train.log; then follow
#              worker 0's log until its trainer ends, report every worker's exit status and the
#              worker that failed first, and stop any trainer still running
#   run        up, prepare (once, with RUN_PREPARE=1), train, and watch the slice every POLL_SECONDS:
#              when it is PREEMPTED, TERMINATED, SUSPENDED, FAILED or gone (or the trainers die with
#              it), log the incident on stderr (the state, the last logged and checkpointed steps,
#              the steps and minutes lost), delete what is left, create it again, ship and train
#              again: the trainer resumes from WORKDIR's last checkpoint, so WORKDIR must outlive
#              the slice (gs://). At most MAX_RESTARTS restarts. Exits 0 when training is done, with
#              the trainer's status when training fails on a healthy slice (no restart; 75 after
#              `stop`: run again to resume), and 1 when out of restarts
#   logs [W]   worker W's log (default 0; `all`: every worker's, prefixed); FOLLOW=0 prints and exits
#   status     every worker's trainer: running, or its exit status
#   stop       SIGTERM every trainer: it saves a checkpoint at an agreed step and exits 75 (resume
#              with `train` or `run`); KILL=1 kills at once instead
#   delete     delete the slice: its TPU, then its queued resource, each part tolerated when already
#              gone (a SUSPENDED queued resource has lost its TPU); waits until the name is free
#
# Knobs (environment): TPU_NAME (synergen), ZONE (us-east5-a), PROJECT (gcloud's default),
# ACCELERATOR_TYPE (v5p-128: 64 v5p chips, which hold configs/synergen_vl_2b.py's stage 1),
# RUNTIME_VERSION (per generation: v4 tpu-ubuntu2204-base, v5e v2-alpha-tpuv5-lite, v5p
# v2-alpha-tpuv5, v6e v2-alpha-tpuv6e), CAPACITY (on-demand | spot | reserved; SPOT=1 means spot),
# CONFIG (configs/synergen_vl_2b.py), WORKDIR (required for train and run; gs://bucket/run), DATA
# (prepared data, passed as --config.data.path), PREPARE_OUT (prepare's output folder). Every path
# may be gs://: the workers read and write buckets themselves (the tpu extra brings the GCS client),
# PYTHON_VERSION (3.11), SHIP_DIRTY=1 (ship uncommitted changes; refused by default),
# COORDINATOR_PORT (8476). For `run`: RUN_PREPARE=1 (prepare first), POLL_SECONDS (30: also how
# often a queued resource is asked whether it is ACTIVE), MAX_RESTARTS (5), RETRY_SECONDS (120:
# between creates refused for lack of capacity), STATE_GRACE (120: how long trainers that exited
# non-zero wait for the slice to report that it went away before it counts as a training failure;
# a preemption's SIGTERM comes first), STOP_GRACE (30: how long trainers get to finish after the
# first one ended, or to checkpoint after an incident), DELETE_TIMEOUT (900). --dry-run prints
# every command instead of running it.
set -euo pipefail

DRY_RUN=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY_RUN=1; shift; fi
ACTION="${1:-}"; shift || true
WORKER_ARG=""
if [[ "$ACTION" == logs && -n "${1:-}" && "${1:-}" != "--" ]]; then WORKER_ARG="$1"; shift; fi
if [[ "${1:-}" == "--" ]]; then shift; fi
EXTRA=("$@")

TPU_NAME="${TPU_NAME:-synergen}"
ZONE="${ZONE:-us-east5-a}"
ACCELERATOR_TYPE="${ACCELERATOR_TYPE:-v5p-128}"
CONFIG="${CONFIG:-configs/synergen_vl_2b.py}"
PYTHON_VERSION="${PYTHON_VERSION:-3.11}"
COORDINATOR_PORT="${COORDINATOR_PORT:-8476}"
POLL_SECONDS="${POLL_SECONDS:-30}"
MAX_RESTARTS="${MAX_RESTARTS:-5}"
RETRY_SECONDS="${RETRY_SECONDS:-120}"
STATE_GRACE="${STATE_GRACE:-120}"
STOP_GRACE="${STOP_GRACE:-30}"
DELETE_TIMEOUT="${DELETE_TIMEOUT:-900}"
CAPACITY="${CAPACITY:-$([[ "${SPOT:-0}" == 1 ]] && echo spot || echo on-demand)}"
case "$CAPACITY" in on-demand|spot|reserved) ;; *)
  echo "tpu_pod.sh: CAPACITY=$CAPACITY: use on-demand, spot or reserved" >&2; exit 2 ;; esac
if [[ -z "${RUNTIME_VERSION:-}" ]]; then
  case "$ACCELERATOR_TYPE" in
    v4-*) RUNTIME_VERSION=tpu-ubuntu2204-base ;;
    v5litepod-*) RUNTIME_VERSION=v2-alpha-tpuv5-lite ;;
    v5p-*) RUNTIME_VERSION=v2-alpha-tpuv5 ;;
    v6e-*) RUNTIME_VERSION=v2-alpha-tpuv6e ;;
    *) echo "tpu_pod.sh: no default RUNTIME_VERSION for ACCELERATOR_TYPE=$ACCELERATOR_TYPE; set it" >&2; exit 2 ;;
  esac
fi
PROJECT_FLAG=()
if [[ -n "${PROJECT:-}" ]]; then PROJECT_FLAG=(--project "$PROJECT"); fi
q() { printf '%q' "$1"; }

SCRATCH="$(mktemp -d)"         # gcloud's error messages, read to tell NOT_FOUND and capacity apart
FOLLOWER=""                    # `run`'s background follower of worker 0's log
trap 'follow_stop 0; rm -rf "$SCRATCH"' EXIT

QUIET=0
run() {   # prints the command (unless QUIET=1: `run`'s polls) and runs it unless --dry-run
  if [[ "$QUIET" != 1 ]]; then printf '+'; printf ' %q' "$@"; printf '\n'; fi
  if [[ "$DRY_RUN" == 0 ]]; then "$@"; fi
}
tpu() { run gcloud compute tpus tpu-vm "$@" --zone "$ZONE" "${PROJECT_FLAG[@]}"; }
queued() { run gcloud compute tpus queued-resources "$@" --zone "$ZONE" "${PROJECT_FLAG[@]}"; }
on_worker() { tpu ssh "$TPU_NAME" --worker="$1" --command "$2"; }
on_all() { on_worker all "$1"; }
# Runs a command with its stderr shown as usual and also kept in $SCRATCH/err (the status is the
# command's: pipefail).
keeping_errors() { { "$@" 2>&1 1>&3 3>&- | tee "$SCRATCH/err" >&2; } 3>&1; }

# What every remote command starts with: the uv environment, the checkout, and who this worker is.
# A TPU VM does not export its worker id or its peers; the metadata server knows them (as JAX's own
# TPU detection reads them). The explicit SYNERGEN_* variables make jax.distributed use them.
WORKER_ENV='md() { curl -sf -H Metadata-Flavor:Google "http://metadata.google.internal/computeMetadata/v1/instance/attributes/$1"; }
export TPU_WORKER_ID="${TPU_WORKER_ID:-$(md agent-worker-number)}"
export TPU_WORKER_HOSTNAMES="${TPU_WORKER_HOSTNAMES:-$(md worker-network-endpoints | tr , "\n" | cut -d: -f3 | paste -sd, -)}"
export SYNERGEN_NUM_PROCESSES="$(tr , "\n" <<< "$TPU_WORKER_HOSTNAMES" | wc -l)" SYNERGEN_PROCESS_ID="$TPU_WORKER_ID"
export SYNERGEN_COORDINATOR="${TPU_WORKER_HOSTNAMES%%,*}:'"$COORDINATOR_PORT"'"
source ~/synergen_env/bin/activate && cd ~/synergen_jax'


config_overrides() { for flag in "${EXTRA[@]}"; do [[ "$flag" == --config.* ]] && printf '%s\n' "$flag"; done; }

preflight() {   # the plan (seconds, analytic) first, then the compile (minutes)
  local overrides; mapfile -t overrides < <(config_overrides)
  run python -m synergen_jax.plan --config "$CONFIG" --targets "$ACCELERATOR_TYPE" --configured_only \
      "${overrides[@]}" || return 1
  run python -m synergen_jax.aot --config "$CONFIG" --accelerator_type "$ACCELERATOR_TYPE" "${EXTRA[@]}"
}

preflight_unless_skipped() {
  if [[ "${SKIP_PREFLIGHT:-0}" == 1 ]]; then return 0; fi
  preflight || { echo "tpu_pod.sh: the step does not fit $ACCELERATOR_TYPE; nothing was created" \
                      "(a larger slice, a smaller batch, or SKIP_PREFLIGHT=1)" >&2; exit 1; }
}

refuse_dirty() {   # uncommitted changes would silently differ on the workers: ship them or stop
  local dirty; dirty="$(git status --porcelain --untracked-files=normal)"
  if [[ -n "$dirty" && "${SHIP_DIRTY:-0}" != 1 ]]; then
    { echo "tpu_pod.sh: the checkout has uncommitted changes:"
      echo "$dirty" | head -n 20
      echo "commit them, or set SHIP_DIRTY=1 to ship the working tree as it is on disk"; } >&2
    exit 2
  fi
}

require_workdir() {
  if [[ -z "${WORKDIR:-}" ]]; then
    echo "tpu_pod.sh $ACTION: set WORKDIR to a path every worker can write (gs://bucket/run)" >&2
    exit 2
  fi
}

# Steps that `run` retries when the slice goes away under them (ship, prepare, starting the
# trainers) return their first failure instead of relying on set -e, which a caller's `if` turns off.
ship() {    # this checkout as it is on disk, to every worker
  # Tracked and untracked-but-not-ignored files as they are on disk (git archive would ship HEAD).
  local archive=/tmp/synergen_jax-$TPU_NAME.tar.gz
  run bash -c "git ls-files -z --cached --others --exclude-standard | tar --ignore-failed-read --null -T - -czf $archive" || return
  tpu scp "$archive" "$TPU_NAME":synergen_jax.tar.gz --worker=all || return
  local install="command -v uv >/dev/null || python3 -m pip install -q --user uv; export PATH=\$HOME/.local/bin:\$PATH"
  install+=" && rm -rf ~/synergen_jax && mkdir -p ~/synergen_jax && tar -xzf ~/synergen_jax.tar.gz -C ~/synergen_jax"
  install+=" && { [[ -x ~/synergen_env/bin/python ]] || uv venv -q --python $PYTHON_VERSION ~/synergen_env; }"
  install+=" && source ~/synergen_env/bin/activate && cd ~/synergen_jax && uv pip install -q -c constraints.txt -e '.[tpu]'"
  on_all "$install"
}

# ---------------------------------------------------------------------------------------------------
# The slice's life: its state, create, delete.
# ---------------------------------------------------------------------------------------------------

is_queued() { [[ "$CAPACITY" != on-demand || "${QUEUED:-0}" == 1 ]]; }

# The state of the TPU (READY, PREEMPTED, ...) or of the queued resource (ACTIVE, SUSPENDED, ...), or
# NOT_FOUND when there is none. Any other gcloud error is printed and returned.
describe_state() {   # $1: tpu-vm | queued-resources, $2: the --format that prints its state
  local out
  if out="$(gcloud compute tpus "$1" describe "$TPU_NAME" --zone "$ZONE" "${PROJECT_FLAG[@]}" \
            --format="$2" 2>"$SCRATCH/describe.err")"; then
    echo "${out:-UNKNOWN}"
  elif grep -q NOT_FOUND "$SCRATCH/describe.err"; then
    echo NOT_FOUND
  else
    cat "$SCRATCH/describe.err" >&2
    return 1
  fi
}
node_state() { describe_state tpu-vm 'value(state)'; }
queued_state() { describe_state queued-resources 'value(state.state)'; }

# The slice in one word: its queued resource's state when that is neither ACTIVE nor absent, else
# its TPU's. Both are read: a queued resource can stay ACTIVE while its TPU is PREEMPTED.
slice_state() {
  local queued
  queued="$(queued_state)" || return
  case "$queued" in ACTIVE|NOT_FOUND) node_state ;; *) echo "$queued" ;; esac
}

# States a slice never trains again from: what is left of it must be deleted and created afresh.
gone() { [[ "$1" =~ ^(PREEMPTED|TERMINATED|SUSPENDED|SUSPENDING|FAILED|NOT_FOUND)$ ]]; }

# Creates the slice, or reuses a READY one. A slice left PREEMPTED, TERMINATED, SUSPENDED or FAILED
# cannot run again: what is left of it is deleted first. A create refused for lack of capacity is
# tried again every RETRY_SECONDS. Returns 1 (LOST_STATE set) when the queued resource fails or is
# suspended before it is ACTIVE.
create() {
  if [[ "$DRY_RUN" == 0 ]]; then
    local queued node
    queued="$(queued_state)" || exit 1
    node="$(node_state)" || exit 1
    if [[ "$node" == READY && "$queued" =~ ^(ACTIVE|NOT_FOUND)$ ]]; then
      echo "tpu_pod.sh: $TPU_NAME exists and is READY; reusing it" >&2
      return 0
    fi
    case "$queued" in   # queued earlier and still waiting for capacity: wait on
      ACCEPTED|CREATING|PROVISIONING|WAITING_FOR_RESOURCES) wait_until_active; return ;;
    esac
    if [[ "$queued $node" != "NOT_FOUND NOT_FOUND" ]]; then
      if [[ "$queued" =~ ^(SUSPENDED|SUSPENDING|FAILED|DELETING)$ ]] || gone "$node"; then
        echo "tpu_pod.sh: $TPU_NAME is left behind (queued resource $queued, TPU $node) and cannot" \
             "run again; deleting it to create it afresh" >&2
        delete_slice
      else
        echo "tpu_pod.sh: $TPU_NAME is $node (queued resource $queued): wait until it is READY and" \
             "run this again, or delete it (tpu_pod.sh delete)" >&2
        exit 1
      fi
    fi
  fi
  until create_once; do
    echo "tpu_pod.sh: no capacity for $ACCELERATOR_TYPE in $ZONE now; trying again in ${RETRY_SECONDS}s" >&2
    sleep "$RETRY_SECONDS"
  done
  if [[ "$DRY_RUN" == 0 ]] && is_queued; then wait_until_active; fi
}

CAPACITY_ERRORS='RESOURCE_EXHAUSTED|[Nn]o more capacity|ZONE_RESOURCE_POOL_EXHAUSTED|[Ii]nsufficient capacity|[Ss]tockout'

create_once() {   # status 1 when refused for lack of capacity (gcloud's message shown); exits on other errors
  local capacity=()
  if [[ "$CAPACITY" != on-demand ]]; then capacity=(--"$CAPACITY"); fi
  if is_queued; then
    keeping_errors queued create "$TPU_NAME" --node-id "$TPU_NAME" --accelerator-type "$ACCELERATOR_TYPE" \
        --runtime-version "$RUNTIME_VERSION" "${capacity[@]}" && return 0
  else
    keeping_errors tpu create "$TPU_NAME" --accelerator-type "$ACCELERATOR_TYPE" --version "$RUNTIME_VERSION" && return 0
  fi
  if grep -qE "$CAPACITY_ERRORS" "$SCRATCH/err"; then return 1; fi
  echo "tpu_pod.sh: creating $TPU_NAME failed (above)" >&2
  exit 1
}

# A queued resource waits for capacity (ACCEPTED, PROVISIONING, ...) until it is ACTIVE. Returns 1
# (LOST_STATE set) when it fails or is suspended instead.
wait_until_active() {
  local state
  while true; do
    state="$(queued_state)" || exit 1
    echo "tpu_pod.sh: queued resource $TPU_NAME: $state" >&2
    case "$state" in
      ACTIVE) return 0 ;;
      FAILED|SUSPENDED|SUSPENDING|NOT_FOUND)
        echo "tpu_pod.sh: queued resource $TPU_NAME is $state before it was ACTIVE (gcloud compute tpus" \
             "queued-resources describe $TPU_NAME says why); \`up\` or \`run\` again deletes it and retries" >&2
        LOST_STATE="$state"
        return 1 ;;
    esac
    sleep "$POLL_SECONDS"
  done
}

# Deletes the TPU, then its queued resource (which refuses to go while its TPU exists), each part
# tolerated when already gone (a SUSPENDED queued resource has lost its TPU; a create can fail
# half-way); then waits until both are gone, as a queued resource is DELETING for a while and its
# name cannot be used before.
delete_slice() {
  delete_part tpu TPU
  delete_part queued "queued resource"
  if [[ "$DRY_RUN" == 1 ]]; then return 0; fi
  local deadline=$((SECONDS + DELETE_TIMEOUT)) queued node
  while true; do
    queued="$(queued_state)" || exit 1
    node="$(node_state)" || exit 1
    if [[ "$queued $node" == "NOT_FOUND NOT_FOUND" ]]; then return 0; fi
    if (( SECONDS >= deadline )); then
      echo "tpu_pod.sh: $TPU_NAME is still there ${DELETE_TIMEOUT}s after deleting it (queued resource" \
           "$queued, TPU $node); run tpu_pod.sh delete again" >&2
      exit 1
    fi
    sleep "$POLL_SECONDS"
  done
}

delete_part() {   # $1: tpu | queued, $2: what it is called in messages
  if keeping_errors "$1" delete "$TPU_NAME" --quiet; then return 0; fi
  if grep -q NOT_FOUND "$SCRATCH/err"; then
    echo "tpu_pod.sh: the $2 $TPU_NAME was already gone" >&2
    return 0
  fi
  echo "tpu_pod.sh: deleting the $2 $TPU_NAME failed (above); fix that and run tpu_pod.sh delete again" >&2
  exit 1
}

# ---------------------------------------------------------------------------------------------------
# The trainers.
# ---------------------------------------------------------------------------------------------------

extra_flags() { local out=""; for flag in "${EXTRA[@]}"; do out+=" $(q "$flag")"; done; printf '%s' "$out"; }

prepare_data() {
  on_all "$WORKER_ENV && python -m synergen_jax.prepare --config $(q "$CONFIG") --out $(q "$PREPARE_OUT")$(extra_flags)"
}

# The trainer's wrapper (launch/task_status.sh) is found by its pid file, not by pgrep -f: the
# remote shell's own command line names synergen_jax.train too.
RUNNING='{ [[ -f ~/train.pid ]] && kill -0 "$(cat ~/train.pid)" 2>/dev/null; }'
FOLLOW_LOG='tail --pid=$(cat ~/train.pid) -n +1 -F ~/train.log 2>/dev/null'

start_trainers() {
  local data_flag="" cmd
  if [[ -n "${DATA:-}" ]]; then data_flag=" --config.data.path=$(q "$DATA")"; fi
  cmd="python -m synergen_jax.train --config $(q "$CONFIG") --workdir $(q "$WORKDIR")$data_flag$(extra_flags)"
  on_all "$WORKER_ENV && if $RUNNING; then echo \"worker \$TPU_WORKER_ID: a trainer is already running (tpu_pod.sh stop)\" >&2; exit 1; fi; rm -f ~/train.status; nohup setsid bash launch/task_status.sh ~/train.status $cmd </dev/null >~/train.log 2>&1 & echo \$! > ~/train.pid"
}

signal_trainer() {   # $1: TERM (the wrapper passes it on: checkpoint, exit 75) or KILL
  on_all "if $RUNNING; then pid=\$(cat ~/train.pid); $([[ "$1" == KILL ]] && echo 'pkill -KILL -P $pid;') kill -$1 \$pid; fi; true"
}

statuses() {   # prints "<time> <worker> <host> <status>" per finished worker, "running <worker>" otherwise
  on_all "$WORKER_ENV; if $RUNNING; then echo running \$TPU_WORKER_ID; elif [[ -f ~/train.status ]]; then cat ~/train.status; else echo none \$TPU_WORKER_ID; fi"
}

# From statuses' lines: prints every finished worker's exit status and the worker that failed first
# (3 is stopping for a peer, 75 preempted, 128+ a signal: consequences, not causes), and sets
# EXIT_CODE to that worker's status, else to the worst one.
summarize() {
  local first worker host code
  sort -n <<< "$1" | awk '$1 != "running" && $1 != "none" {print "tpu_pod.sh: worker " $2 " (" $3 ") exited with status " $4}' >&2
  first="$(sort -n <<< "$1" | awk '$1 ~ /^[0-9.]+$/ && $4 != 0 && $4 != 3 && $4 != 75 && $4 < 128 {print; exit}')"
  if [[ -n "$first" ]]; then
    read -r _ worker host code <<< "$first"
    echo "tpu_pod.sh: worker $worker ($host) failed first with status $code (tpu_pod.sh logs $worker)" >&2
    EXIT_CODE="$code"
    return 0
  fi
  EXIT_CODE="$(awk '$1 ~ /^[0-9.]+$/ {print $4}' <<< "$1" | sort -n | tail -n 1)"
  EXIT_CODE="${EXIT_CODE:-1}"
}

# ---------------------------------------------------------------------------------------------------
# `run`: train until done, recreating the slice whenever it goes away.
# ---------------------------------------------------------------------------------------------------

follow_start() {   # worker 0's log on stdout, in the background while `run` watches the slice
  local cmd=(gcloud compute tpus tpu-vm ssh "$TPU_NAME" --worker=0 --command "$FOLLOW_LOG" --zone "$ZONE" "${PROJECT_FLAG[@]}")
  printf '+'; printf ' %q' "${cmd[@]}"; printf '\n'
  "${cmd[@]}" &
  FOLLOWER=$!
}

follow_stop() {   # $1: seconds it may take to print the last lines and end by itself
  if [[ -z "$FOLLOWER" ]]; then return 0; fi
  local deadline=$((SECONDS + $1))
  while kill -0 "$FOLLOWER" 2>/dev/null && (( SECONDS < deadline )); do sleep 0.2; done
  kill "$FOLLOWER" 2>/dev/null || true
  wait "$FOLLOWER" 2>/dev/null || true
  FOLLOWER=""
}

# One step of bringing the slice up (`step WHAT COMMAND...`). Returns 1 (LOST_STATE set) when it
# failed because the slice went away under it; any other failure ends `run` with its status.
step() {
  local what="$1" status=0 state
  shift
  "$@" || status=$?
  if (( status == 0 )); then return 0; fi
  state="$(slice_state 2>/dev/null)" || state=UNKNOWN
  if gone "$state"; then LOST_STATE="$state"; return 1; fi
  echo "tpu_pod.sh: $what failed with status $status while $TPU_NAME is $state; not restarting" >&2
  exit "$status"
}

PREPARED=0
prepare_once() {   # prepared data outlives the slice: a restart does not prepare again
  if [[ "${RUN_PREPARE:-0}" != 1 || "$PREPARED" == 1 ]]; then return 0; fi
  prepare_data || return
  PREPARED=1
}

# Watches the slice and its trainers every POLL_SECONDS until the trainers end or the slice goes
# away. Sets OUTCOME: done (every trainer exited 0), failed (EXIT_CODE: they ended otherwise while
# the slice stayed up) or lost (LOST_STATE: what became of the slice).
watch_slice() {
  local state report ended_at=""
  while true; do
    sleep "$POLL_SECONDS"
    state="$(slice_state 2>/dev/null)" || state=UNKNOWN      # gcloud did not answer: ask again
    if gone "$state"; then LOST_STATE="$state"; OUTCOME=lost; return 0; fi
    report="$(QUIET=1 statuses 2>/dev/null)" || continue     # unreachable: the next describe says why
    if grep -q '^running' <<< "$report"; then
      if grep -qv '^running' <<< "$report"; then             # some have ended: the rest get STOP_GRACE
        ended_at="${ended_at:-$SECONDS}"
        if (( SECONDS - ended_at >= STOP_GRACE )); then
          echo "tpu_pod.sh: trainers still running ${STOP_GRACE}s after another one ended; killing them" >&2
          QUIET=1 signal_trainer KILL >/dev/null 2>&1 || true
        fi
      fi
      continue
    fi
    if awk '!($1 ~ /^[0-9.]+$/ && $4 == 0) {bad = 1} END {exit bad}' <<< "$report"; then
      summarize "$report"; OUTCOME=done; return 0
    fi
    # A preemption's SIGTERM reaches the trainers before the slice reports PREEMPTED: give the slice
    # STATE_GRACE seconds to say whether it is going away before calling this a training failure.
    local deadline=$((SECONDS + STATE_GRACE))
    while state="$(slice_state 2>/dev/null)" || state=UNKNOWN; ! gone "$state" && (( SECONDS < deadline )); do
      sleep "$POLL_SECONDS"
    done
    if gone "$state"; then LOST_STATE="$state"; OUTCOME=lost; return 0; fi
    summarize "$report"; OUTCOME=failed; return 0
  done
}

# After an incident, a preempted trainer may still be writing its checkpoint (a spot VM's shutdown
# notice is ~30 s): wait for it, at most STOP_GRACE seconds, while the workers answer at all.
let_trainers_finish() {
  local deadline=$((SECONDS + STOP_GRACE)) report
  while (( SECONDS < deadline )); do
    report="$(QUIET=1 statuses 2>/dev/null)" || return 0
    if ! grep -q '^running' <<< "$report"; then return 0; fi
    sleep "$POLL_SECONDS"
  done
}

# What an incident cost, read from WORKDIR where this machine can read it (a local or shared path;
# a gs:// one is not read): the last logged step, the last committed checkpoint (Orbax renames a
# checkpoint to its step once complete), and the steps and wall-clock minutes between the two, which
# the restart trains again.
lost_work() {
  local metrics="$WORKDIR/metrics.jsonl" checkpoints="$WORKDIR/checkpoints"
  if [[ "$WORKDIR" == *://* || ! -d "$WORKDIR" ]]; then
    echo "steps and minutes lost unknown (WORKDIR is not readable from here)"
    return 0
  fi
  local logged=0 saved=0 minutes=unknown
  if [[ -f "$metrics" ]]; then
    logged="$(grep -o '"step": *[0-9]*' "$metrics" | tail -n 1 | grep -o '[0-9]*$' || true)"
  fi
  if [[ -d "$checkpoints" ]]; then
    saved="$(ls "$checkpoints" | grep -E '^[0-9]+$' | sort -n | tail -n 1 || true)"
  fi
  logged="${logged:-0}" saved="${saved:-0}"
  if (( logged <= saved )); then
    minutes=0.0
  elif (( saved > 0 )); then
    minutes="$(awk -v s=$(( $(date -r "$metrics" +%s) - $(date -r "$checkpoints/$saved" +%s) )) \
               'BEGIN {printf "%.1f", (s > 0 ? s : 0) / 60}')"
  fi
  echo "last logged step $logged, last checkpoint step $saved: $(( logged > saved ? logged - saved : 0 ))" \
       "steps and $minutes min of work since that checkpoint lost"
}

# The slice went away ($1: its state): log what that cost, delete what is left, count the restart.
RESTARTS=0
incident() {
  RESTARTS=$((RESTARTS + 1))
  let_trainers_finish
  local next="restart $RESTARTS of $MAX_RESTARTS"
  if (( RESTARTS > MAX_RESTARTS )); then next="no restart left (MAX_RESTARTS=$MAX_RESTARTS)"; fi
  echo "tpu_pod.sh: incident: $TPU_NAME is $1; $(lost_work); $next" >&2
  delete_slice
  if (( RESTARTS > MAX_RESTARTS )); then
    echo "tpu_pod.sh: giving up after $MAX_RESTARTS restarts; raise MAX_RESTARTS, try another ZONE or" \
         "CAPACITY, and run again: training resumes from WORKDIR's last checkpoint" >&2
    exit 1
  fi
}

run_until_done() {
  require_workdir
  if [[ "${RUN_PREPARE:-0}" == 1 && -z "${PREPARE_OUT:-}" ]]; then
    echo "tpu_pod.sh run: RUN_PREPARE=1 prepares into PREPARE_OUT: set it (gs://bucket/path)" >&2; exit 2
  fi
  if [[ "$WORKDIR" != gs://* ]]; then
    echo "tpu_pod.sh: WORKDIR=$WORKDIR is not a gs:// path: checkpoints on the workers' own disks go" \
         "with the slice, and a restart trains again from step 0" >&2
  fi
  refuse_dirty
  preflight_unless_skipped
  while true; do
    LOST_STATE=UNKNOWN
    if create && step "shipping the checkout" ship && step prepare prepare_once \
        && step "starting the trainers" start_trainers; then
      if [[ "$DRY_RUN" == 1 ]]; then return 0; fi
      follow_start
      watch_slice
      follow_stop 5
      case "$OUTCOME" in
        done) echo "tpu_pod.sh: training done; $TPU_NAME is still up (tpu_pod.sh delete)" >&2; return 0 ;;
        failed) echo "tpu_pod.sh: the trainers ended with status $EXIT_CODE while $TPU_NAME stayed up:" \
                     "not restarting (tpu_pod.sh logs all)" >&2
                exit "$EXIT_CODE" ;;
      esac
    fi
    incident "$LOST_STATE"
  done
}

case "$ACTION" in
  preflight) preflight ;;
  up)
    refuse_dirty
    preflight_unless_skipped
    create
    ship
    ;;
  prepare)
    [[ -n "${PREPARE_OUT:-}" ]] || { echo "tpu_pod.sh prepare: set PREPARE_OUT (gs://bucket/path)" >&2; exit 2; }
    prepare_data
    ;;
  train)
    require_workdir
    start_trainers
    # Follow worker 0 until its trainer ends (tail --pid), then collect every worker's status.
    on_worker 0 "$FOLLOW_LOG" || true
    [[ "$DRY_RUN" == 1 ]] && exit 0
    for ((i = 0; i < STOP_GRACE; i++)); do
      report="$(statuses 2>/dev/null | grep -v "^+" || true)"
      grep -q '^running' <<< "$report" || break
      sleep 1
    done
    if grep -q '^running' <<< "$report"; then
      echo "tpu_pod.sh: trainers still running after worker 0 ended; killing them" >&2
      signal_trainer KILL
    fi
    summarize "$report"
    exit "$EXIT_CODE"
    ;;
  run) run_until_done ;;
  logs)
    worker="${WORKER_ARG:-0}"; follow="-F"; [[ "${FOLLOW:-1}" == 0 ]] && follow=""
    if [[ "$worker" == all ]]; then
      on_all "$WORKER_ENV; tail -n +1 $follow ~/train.log | sed -u \"s/^/[worker \$TPU_WORKER_ID] /\""
    else
      on_worker "$worker" "tail -n +1 $follow ~/train.log"
    fi
    ;;
  status) statuses ;;
  stop) signal_trainer "$([[ "${KILL:-0}" == 1 ]] && echo KILL || echo TERM)" ;;
  delete) delete_slice ;;
  *)
    echo "usage: launch/tpu_pod.sh [--dry-run] preflight|up|prepare|train|run|logs [W|all]|status|stop|delete [-- extra flags]" >&2
    exit 2 ;;
esac
