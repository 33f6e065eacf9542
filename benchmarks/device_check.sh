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
# PYTHON picks the interpreter (default python3). When it cannot import fastfem, the run uses a
# copy of the checkout's fastfem laid out as installed (a temporary folder, removed after).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${PYTHON:-python3}"
out_default="${OUT:-$repo/benchmarks/results}/device-check.json"
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # peak memory = what the run allocates
export PYTHONUNBUFFERED=1

run_dir="$repo"
if ! (cd "$repo" && "$py" -c "import fastfem.converters.flax" >/dev/null 2>&1); then
    # fastfem as pyproject.toml lays it out (package-dir: fastfem.converters = converters),
    # copied to a temporary folder for this run: nothing built, nothing written in the checkout
    site="$(mktemp -d)"
    trap 'rm -rf "$site"' EXIT
    echo "[device_check.sh] fastfem not importable: using a copy of the checkout's in $site" >&2
    cp -R "$repo/fastfem" "$site/fastfem"
    cp -R "$repo/converters" "$site/fastfem/converters"
    export PYTHONPATH="$site:$repo${PYTHONPATH:+:$PYTHONPATH}"
    run_dir="$site"  # that fastfem (with its converters) before the checkout's folder
fi

cd "$run_dir"
"$py" -m benchmarks.device_check --out "$out_default" "$@"
