#!/usr/bin/env bash
# Fetches, on this machine, the wheels the lent GPU machines lack into .whl/ (Python 3.12,
# manylinux x86_64, no dependencies pulled: the machine has the rest). bench/device_check.sh
# installs whatever .whl/ holds with `pip --no-deps --target /tmp/site` before it runs.
#
#   bench/device_wheels.sh            ml_collections: all the device check imports beyond that image
#   bench/device_wheels.sh --train    also grain, array_record, portpicker and tensorboardX, for
#                                     training from prepared data there
#
# Versions are constraints.txt's (portpicker: grain's own dependency, unpinned there).
set -euo pipefail
cd "$(dirname "$0")/.."
wheels=(ml_collections==1.1.0)
if [[ "${1:-}" == "--train" ]]; then
  wheels+=(grain==0.2.18 array-record==0.8.6 portpicker==1.6.0 tensorboardX==2.6.5)
elif [[ -n "${1:-}" ]]; then
  echo "usage: bench/device_wheels.sh [--train]" >&2; exit 2
fi
rm -rf .whl && mkdir .whl
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
         manylinux2014_x86_64 manylinux1_x86_64; do platforms+=(--platform "$p"); done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" -d .whl "${wheels[@]}"
ls -1 .whl
