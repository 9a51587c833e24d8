#!/usr/bin/env bash
# The prepared device check: run first whenever a GPU is at hand (docs/planning.md). Within about 8
# minutes on one H100, with the JAX already installed there (only missing wheels are installed, from
# .whl/ when present: bench/device_wheels.sh fetches them): the GPU kernel tests, bench/attention.py
# at 4k / 8k / 16k, and the paper config's train step at reduced depth (bench/device_step.py: step
# time, MFU, and the roofline's prediction), all in one JSON that
# `python -m synergen_jax.plan --calibration FILE` reads.
#
#   bench/device_check.sh [--dry-run] [OUT_DIR]      (default OUT_DIR: device_check/)
#
# Writes OUT_DIR/device_check.json (+ kernels.log, attention.log). --dry-run prints the commands.
# Knobs: LAYERS (4), ROWS (2), STEPS (5), ATTENTION (pallas_mgpu).
set -uo pipefail

DRY_RUN=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY_RUN=1; shift; fi
if [[ "${1:-}" == -* ]]; then
  echo "usage: bench/device_check.sh [--dry-run] [OUT_DIR]" >&2; exit 2
fi
OUT_DIR="${1:-device_check}"
LAYERS="${LAYERS:-4}"; ROWS="${ROWS:-2}"; STEPS="${STEPS:-5}"; ATTENTION="${ATTENTION:-pallas_mgpu}"
for knob in LAYERS ROWS STEPS; do
  [[ "${!knob}" =~ ^[1-9][0-9]*$ ]] || { echo "device_check.sh: $knob=${!knob} must be a positive integer" >&2; exit 2; }
done
cd "$(dirname "$0")/.."

run() {   # $1: seconds allowed, $2: log file (- for the terminal); the rest: the command.
  local limit="$1" log="$2"; shift 2
  echo "+ $*${log/#-/}" | sed "s|${log}\$| > ${log}|"
  [[ "$DRY_RUN" == 1 ]] && return 0
  if [[ "$log" == - ]]; then timeout "$limit" "$@"; else timeout "$limit" "$@" > "$log" 2>&1; fi
}

[[ "$DRY_RUN" == 1 ]] || mkdir -p "$OUT_DIR"
if [[ -d .whl ]] && ls .whl/*.whl >/dev/null 2>&1; then   # grain, ml_collections, ... if missing
  run 120 - python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
  export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export JAX_PLATFORMS=cuda PYTHONUNBUFFERED=1

# 1. GPU kernel tests (Triton and Mosaic GPU flash attention against the XLA reference).
run 150 "$OUT_DIR/kernels.log" python3 -m pytest -q -p no:cacheprovider tests/kernels/test_on_gpu.py
echo "kernel tests: exit $?"
# 2. Attention kernels at 4k, 8k, 16k.
run 150 "$OUT_DIR/attention.log" python3 -m bench.attention --lengths 4096,8192,16384 --iters 3
echo "attention: exit $?"
# 3. The train step at reduced depth, and the JSON.
run 200 - python3 bench/device_step.py --layers "$LAYERS" --rows "$ROWS" --steps "$STEPS" \
    --attention "$ATTENTION" --merge "kernel_tests=$OUT_DIR/kernels.log" \
    --merge "attention=$OUT_DIR/attention.log" --out "$OUT_DIR/device_check.json"
status=$?
echo "device check: $OUT_DIR/device_check.json (train step exit $status)"
exit "$status"
