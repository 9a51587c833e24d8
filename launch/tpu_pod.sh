#!/usr/bin/env bash
# Train on a Cloud TPU VM slice: create or reuse it, install this checkout on every worker, start the
# same command on all workers, stream worker 0's log, stop or delete.
#
#   launch/tpu_pod.sh [--dry-run] up|train|logs|stop|delete [-- extra train flags]
#
#   up      create the slice unless it exists, copy this checkout (git archive HEAD) to every worker
#           and `pip install -e '.[tpu]'` there
#   train   start `python -m synergen_jax.train --config $CONFIG --workdir $WORKDIR [extra flags]`
#           on every worker (--worker=all; jax.distributed finds the slice's processes itself),
#           in the background with its log in ~/train.log, then stream worker 0's log
#   logs    stream worker 0's log;  stop: kill the trainer on every worker;  delete: delete the slice
#
# Knobs (environment): TPU_NAME (synergen), ZONE (us-central2-b), PROJECT (gcloud's default),
# ACCELERATOR_TYPE (v4-32), RUNTIME_VERSION (tpu-ubuntu2204-base), CONFIG (configs/synergen_vl_2b.py),
# WORKDIR (required for train: a gs://bucket/path every worker can reach), SPOT=1 for spot capacity.
# --dry-run prints every command instead of running it.
set -euo pipefail

DRY_RUN=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY_RUN=1; shift; fi
ACTION="${1:-}"; shift || true
if [[ "${1:-}" == "--" ]]; then shift; fi
EXTRA=("$@")

TPU_NAME="${TPU_NAME:-synergen}"
ZONE="${ZONE:-us-central2-b}"
ACCELERATOR_TYPE="${ACCELERATOR_TYPE:-v4-32}"
RUNTIME_VERSION="${RUNTIME_VERSION:-tpu-ubuntu2204-base}"
CONFIG="${CONFIG:-configs/synergen_vl_2b.py}"
PROJECT_FLAG=()
if [[ -n "${PROJECT:-}" ]]; then PROJECT_FLAG=(--project "$PROJECT"); fi

run() {   # prints the command (always) and runs it unless --dry-run
  printf '+'; printf ' %q' "$@"; printf '\n'
  if [[ "$DRY_RUN" == 0 ]]; then "$@"; fi
}
tpu() { run gcloud compute tpus tpu-vm "$@" --zone "$ZONE" "${PROJECT_FLAG[@]}"; }
on_all() { tpu ssh "$TPU_NAME" --worker=all --command "$1"; }

case "$ACTION" in
  up)
    if [[ "$DRY_RUN" == 1 ]] || ! gcloud compute tpus tpu-vm describe "$TPU_NAME" --zone "$ZONE" \
        "${PROJECT_FLAG[@]}" >/dev/null 2>&1; then
      tpu create "$TPU_NAME" --accelerator-type "$ACCELERATOR_TYPE" --version "$RUNTIME_VERSION" \
        ${SPOT:+--spot}
    fi
    run git archive --format=tar.gz -o /tmp/synergen_jax.tar.gz HEAD
    tpu scp /tmp/synergen_jax.tar.gz "$TPU_NAME":~/synergen_jax.tar.gz --worker=all
    on_all "mkdir -p ~/synergen_jax && tar -xzf ~/synergen_jax.tar.gz -C ~/synergen_jax && cd ~/synergen_jax && pip install -q -e '.[tpu]'"
    ;;
  train)
    if [[ -z "${WORKDIR:-}" ]]; then
      echo "tpu_pod.sh train: set WORKDIR to a gs://bucket/path that every worker can write" >&2
      exit 2
    fi
    cmd="cd ~/synergen_jax && SYNERGEN_DISTRIBUTED=1 nohup python -m synergen_jax.train --config $(printf '%q' "$CONFIG") --workdir $(printf '%q' "$WORKDIR")"
    for flag in "${EXTRA[@]}"; do cmd+=" $(printf '%q' "$flag")"; done
    on_all "$cmd > ~/train.log 2>&1 &"
    tpu ssh "$TPU_NAME" --worker=0 --command "tail -n +1 -F ~/train.log"
    ;;
  logs) tpu ssh "$TPU_NAME" --worker=0 --command "tail -n +1 -F ~/train.log" ;;
  stop) on_all "pkill -INT -f synergen_jax.train || true" ;;
  delete) tpu delete "$TPU_NAME" --quiet ;;
  *)
    echo "usage: launch/tpu_pod.sh [--dry-run] up|train|logs|stop|delete [-- extra train flags]" >&2
    exit 2 ;;
esac
