#!/usr/bin/env bash
# The device check: fastfem on this machine's accelerator in one call, one JSON
# (`benchmarks/device_check.py` says what is measured). Needs JAX, Flax, NumPy, Pillow and
# PyArrow; no TensorFlow, no Keras. Run from anywhere:
#
#   bash benchmarks/device_check.sh                       # ResNet50-224, 20,000 JPEGs audited
#   bash benchmarks/device_check.sh --out /tmp/dc.json --n 2048 --audit-n 5000
#
# Default output: benchmarks/results/device-check.json ($OUT/device-check.json when $OUT is
# set). Options after the script name go to `python -m benchmarks.device_check` (--help).
# PYTHON picks the interpreter (default python3). When fastfem is not installed there, it is
# installed first (offline, no dependencies) into a temporary folder used for this run only.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${PYTHON:-python3}"
out_default="${OUT:-$repo/benchmarks/results}/device-check.json"
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # peak memory = what the run allocates
export PYTHONUNBUFFERED=1

run_dir="$repo"
if ! (cd "$repo" && "$py" -c "import fastfem.converters.flax" >/dev/null 2>&1); then
    site="$(mktemp -d)"
    trap 'rm -rf "$site"' EXIT
    echo "[device_check.sh] installing fastfem (no dependencies) into $site" >&2
    "$py" -m pip install -q --no-deps --no-index --no-build-isolation --target "$site" "$repo"
    export PYTHONPATH="$site:$repo${PYTHONPATH:+:$PYTHONPATH}"
    run_dir="$site"  # the installed fastfem (with its converters) before the checkout's folder
fi

cd "$run_dir"
"$py" -m benchmarks.device_check --out "$out_default" "$@"
