#!/usr/bin/env bash
# Train on a Cloud TPU VM slice: check that the step fits, create the slice, install this checkout
# on every worker, prepare data and train on all workers, read any worker's log, stop, delete.
#
#   launch/tpu_pod.sh [--dry-run] VERB [-- extra flags for the train/prepare/aot command]
#
#   preflight  compile the train step here for the slice (python -m synergen_jax.aot
#              --accelerator_type $ACCELERATOR_TYPE, libtpu, no TPU needed); exit 1 if it does not fit
#   up         preflight (SKIP_PREFLIGHT=1 skips it), create the slice unless it exists (queued
#              resources for spot/reserved capacity or QUEUED=1, waiting until ACTIVE), ship this
#              checkout to every worker and install it with the tpu extra in a uv-made Python
#              $PYTHON_VERSION environment (~/synergen_env; TPU VM images carry Python 3.10);
#              installs gcsfuse where DATA or PREPARE_OUT is a gs:// path
#   prepare    python -m synergen_jax.prepare --config $CONFIG --out $PREPARE_OUT on every worker,
#              each writing its share of the input shards (from the worker id); the last merges
#   train      start python -m synergen_jax.train --config $CONFIG --workdir $WORKDIR on every
#              worker, detached from ssh (setsid, </dev/null), log in ~/train.log; then follow
#              worker 0's log until its trainer ends, report every worker's exit status and the
#              worker that failed first, and stop any trainer still running
#   logs [W]   worker W's log (default 0; `all`: every worker's, prefixed); FOLLOW=0 prints and exits
#   status     every worker's trainer: running, or its exit status
#   stop       SIGTERM every trainer: it saves a checkpoint at an agreed step and exits 75 (resume
#              with `train`); KILL=1 kills at once instead
#   delete     delete the slice (and its queued resource)
#
# Knobs (environment): TPU_NAME (synergen), ZONE (us-east5-a), PROJECT (gcloud's default),
# ACCELERATOR_TYPE (v5p-128: 64 v5p chips, which hold configs/synergen_vl_2b.py's stage 1),
# RUNTIME_VERSION (per generation: v4 tpu-ubuntu2204-base, v5e v2-alpha-tpuv5-lite, v5p
# v2-alpha-tpuv5, v6e v2-alpha-tpuv6e), CAPACITY (on-demand | spot | reserved; SPOT=1 means spot),
# CONFIG (configs/synergen_vl_2b.py), WORKDIR (required for train; gs://bucket/run: Orbax writes
# buckets directly), DATA (prepared data; a gs:// path is mounted with gcsfuse on every worker and
# passed as --config.data.path), PREPARE_OUT (prepare's output folder, gs:// mounted likewise),
# PYTHON_VERSION (3.11), SHIP_DIRTY=1 (ship uncommitted changes; refused by default),
# COORDINATOR_PORT (8476). --dry-run prints every command instead of running it.
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

run() {   # prints the command (always) and runs it unless --dry-run
  printf '+'; printf ' %q' "$@"; printf '\n'
  if [[ "$DRY_RUN" == 0 ]]; then "$@"; fi
}
tpu() { run gcloud compute tpus tpu-vm "$@" --zone "$ZONE" "${PROJECT_FLAG[@]}"; }
queued() { run gcloud compute tpus queued-resources "$@" --zone "$ZONE" "${PROJECT_FLAG[@]}"; }
on_worker() { tpu ssh "$TPU_NAME" --worker="$1" --command "$2"; }
on_all() { on_worker all "$1"; }

# What every remote command starts with: the uv environment, the checkout, and who this worker is.
# A TPU VM does not export its worker id or its peers; the metadata server knows them (as JAX's own
# TPU detection reads them). The explicit SYNERGEN_* variables make jax.distributed use them.
WORKER_ENV='md() { curl -sf -H Metadata-Flavor:Google "http://metadata.google.internal/computeMetadata/v1/instance/attributes/$1"; }
export TPU_WORKER_ID="${TPU_WORKER_ID:-$(md agent-worker-number)}"
export TPU_WORKER_HOSTNAMES="${TPU_WORKER_HOSTNAMES:-$(md worker-network-endpoints | tr , "\n" | cut -d: -f3 | paste -sd, -)}"
export SYNERGEN_NUM_PROCESSES="$(tr , "\n" <<< "$TPU_WORKER_HOSTNAMES" | wc -l)" SYNERGEN_PROCESS_ID="$TPU_WORKER_ID"
export SYNERGEN_COORDINATOR="${TPU_WORKER_HOSTNAMES%%,*}:'"$COORDINATOR_PORT"'"
source ~/synergen_env/bin/activate && cd ~/synergen_jax'

# A gs://bucket/path is mounted at ~/gcs/bucket on every worker (gcsfuse): remote_path sets LOCAL
# (the path the workers use) and MOUNT (the remote command that mounts it; empty for other paths).
remote_path() {
  MOUNT="" LOCAL="$(q "$1")"
  if [[ "$1" == gs://* ]]; then
    local rest="${1#gs://}"; local bucket="${rest%%/*}"
    LOCAL="\$HOME/gcs/$rest"
    MOUNT="mkdir -p ~/gcs/$bucket && { mountpoint -q ~/gcs/$bucket || gcsfuse --implicit-dirs $bucket ~/gcs/$bucket; } && "
  fi
}

preflight() {
  run python -m synergen_jax.aot --config "$CONFIG" --accelerator_type "$ACCELERATOR_TYPE" "${EXTRA[@]}"
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

ship() {    # this checkout as it is on disk, to every worker
  # Tracked and untracked-but-not-ignored files as they are on disk (git archive would ship HEAD).
  local archive=/tmp/synergen_jax-$TPU_NAME.tar.gz
  run bash -c "git ls-files -z --cached --others --exclude-standard | tar --ignore-failed-read --null -T - -czf $archive"
  tpu scp "$archive" "$TPU_NAME":synergen_jax.tar.gz --worker=all
  local install="command -v uv >/dev/null || python3 -m pip install -q --user uv; export PATH=\$HOME/.local/bin:\$PATH"
  install+=" && rm -rf ~/synergen_jax && mkdir -p ~/synergen_jax && tar -xzf ~/synergen_jax.tar.gz -C ~/synergen_jax"
  install+=" && { [[ -x ~/synergen_env/bin/python ]] || uv venv -q --python $PYTHON_VERSION ~/synergen_env; }"
  install+=" && source ~/synergen_env/bin/activate && cd ~/synergen_jax && uv pip install -q -c constraints.txt -e '.[tpu]'"
  if [[ "${DATA:-}" == gs://* || "${PREPARE_OUT:-}" == gs://* ]]; then
    install+=" && { command -v gcsfuse >/dev/null || { echo 'deb https://packages.cloud.google.com/apt gcsfuse-'\$(lsb_release -cs)' main' | sudo tee /etc/apt/sources.list.d/gcsfuse.list && curl -s https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo apt-key add - && sudo apt-get update -q && sudo apt-get install -y -q gcsfuse; }; }"
  fi
  on_all "$install"
}

create() {
  if [[ "$DRY_RUN" == 0 ]] && gcloud compute tpus tpu-vm describe "$TPU_NAME" --zone "$ZONE" \
      "${PROJECT_FLAG[@]}" >/dev/null 2>&1; then
    echo "tpu_pod.sh: $TPU_NAME exists; reusing it" >&2
    return
  fi
  if [[ "$CAPACITY" == on-demand && "${QUEUED:-0}" != 1 ]]; then
    tpu create "$TPU_NAME" --accelerator-type "$ACCELERATOR_TYPE" --version "$RUNTIME_VERSION"
    return
  fi
  local capacity=(); [[ "$CAPACITY" != on-demand ]] && capacity=(--"$CAPACITY")
  queued create "$TPU_NAME" --node-id "$TPU_NAME" --accelerator-type "$ACCELERATOR_TYPE" \
      --runtime-version "$RUNTIME_VERSION" "${capacity[@]}"
  [[ "$DRY_RUN" == 1 ]] && return
  local state
  while true; do    # queued resources wait for capacity: ACCEPTED/PROVISIONING, then ACTIVE
    state="$(gcloud compute tpus queued-resources describe "$TPU_NAME" --zone "$ZONE" "${PROJECT_FLAG[@]}" \
             --format='value(state.state)')"
    echo "tpu_pod.sh: queued resource $TPU_NAME: $state" >&2
    case "$state" in
      ACTIVE) return ;;
      FAILED|SUSPENDED) echo "tpu_pod.sh: queued resource $TPU_NAME is $state" >&2; exit 1 ;;
    esac
    sleep "${POLL_SECONDS:-30}"
  done
}

extra_flags() { local out=""; for flag in "${EXTRA[@]}"; do out+=" $(q "$flag")"; done; printf '%s' "$out"; }

# The trainer's wrapper (launch/task_status.sh) is found by its pid file, not by pgrep -f: the
# remote shell's own command line names synergen_jax.train too.
RUNNING='{ [[ -f ~/train.pid ]] && kill -0 "$(cat ~/train.pid)" 2>/dev/null; }'
signal_trainer() {   # $1: TERM (the wrapper passes it on: checkpoint, exit 75) or KILL
  on_all "if $RUNNING; then pid=\$(cat ~/train.pid); $([[ "$1" == KILL ]] && echo 'pkill -KILL -P $pid;') kill -$1 \$pid; fi; true"
}

statuses() {   # prints "<time> <worker> <host> <status>" per finished worker, "running <worker>" otherwise
  on_all "$WORKER_ENV; if $RUNNING; then echo running \$TPU_WORKER_ID; elif [[ -f ~/train.status ]]; then cat ~/train.status; else echo none \$TPU_WORKER_ID; fi"
}

case "$ACTION" in
  preflight) preflight ;;
  up)
    refuse_dirty
    if [[ "${SKIP_PREFLIGHT:-0}" != 1 ]]; then
      preflight || { echo "tpu_pod.sh: the step does not fit $ACCELERATOR_TYPE; nothing was created" \
                          "(a larger slice, a smaller batch, or SKIP_PREFLIGHT=1)" >&2; exit 1; }
    fi
    create
    ship
    ;;
  prepare)
    [[ -n "${PREPARE_OUT:-}" ]] || { echo "tpu_pod.sh prepare: set PREPARE_OUT (gs://bucket/path)" >&2; exit 2; }
    remote_path "$PREPARE_OUT"
    on_all "$WORKER_ENV && ${MOUNT}python -m synergen_jax.prepare --config $(q "$CONFIG") --out $LOCAL$(extra_flags)"
    ;;
  train)
    [[ -n "${WORKDIR:-}" ]] || { echo "tpu_pod.sh train: set WORKDIR to a path every worker can write (gs://bucket/run)" >&2; exit 2; }
    data_flag="" MOUNT=""
    if [[ -n "${DATA:-}" ]]; then remote_path "$DATA"; data_flag=" --config.data.path=$LOCAL"; fi
    cmd="python -m synergen_jax.train --config $(q "$CONFIG") --workdir $(q "$WORKDIR")$data_flag$(extra_flags)"
    on_all "$WORKER_ENV && ${MOUNT}if $RUNNING; then echo \"worker \$TPU_WORKER_ID: a trainer is already running (tpu_pod.sh stop)\" >&2; exit 1; fi; rm -f ~/train.status; nohup setsid bash launch/task_status.sh ~/train.status $cmd </dev/null >~/train.log 2>&1 & echo \$! > ~/train.pid"
    # Follow worker 0 until its trainer ends (tail --pid), then collect every worker's status.
    on_worker 0 "tail --pid=\$(cat ~/train.pid) -n +1 -F ~/train.log 2>/dev/null" || true
    [[ "$DRY_RUN" == 1 ]] && exit 0
    for ((i = 0; i < ${STOP_GRACE:-30}; i++)); do
      report="$(statuses 2>/dev/null | grep -v "^+" || true)"
      grep -q '^running' <<< "$report" || break
      sleep 1
    done
    if grep -q '^running' <<< "$report"; then
      echo "tpu_pod.sh: trainers still running after worker 0 ended; killing them" >&2
      signal_trainer KILL
    fi
    echo "$report" | sort -n | awk '$1 != "running" && $1 != "none" {print "tpu_pod.sh: worker " $2 " (" $3 ") exited with status " $4}' >&2
    first="$(sort -n <<< "$report" | awk '$1 ~ /^[0-9.]+$/ && $4 != 0 && $4 != 3 && $4 != 75 && $4 < 128' | head -n 1)"
    if [[ -n "$first" ]]; then
      read -r _ worker host code <<< "$first"
      echo "tpu_pod.sh: worker $worker ($host) failed first with status $code (tpu_pod.sh logs $worker)" >&2
      exit "$code"
    fi
    awk '$1 ~ /^[0-9.]+$/ {print $4}' <<< "$report" | sort -n | tail -n 1 | { read -r worst; exit "${worst:-1}"; }
    ;;
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
  delete)
    tpu delete "$TPU_NAME" --quiet
    if [[ "$CAPACITY" != on-demand || "${QUEUED:-0}" == 1 ]]; then queued delete "$TPU_NAME" --quiet; fi
    ;;
  *)
    echo "usage: launch/tpu_pod.sh [--dry-run] preflight|up|prepare|train|logs [W|all]|status|stop|delete [-- extra flags]" >&2
    exit 2 ;;
esac
