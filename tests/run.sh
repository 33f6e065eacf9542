#!/usr/bin/env bash
# Set up and run the whole test suite on a fresh machine (the README's test command).
#   creates .venv if missing, installs fastfem (editable) with its dev + tf extras, and the peer
#   libraries the parity tests compare against (Xplique without its CUDA extras, beside
#   tensorflow-cpu), then runs pytest. Extra arguments go to pytest (e.g. -m "not slow").
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check)
"${PIP[@]}" --upgrade pip
"${PIP[@]}" -e ".[dev,tf,flax]"
# Xplique, tf-keras and tf2jax pin tensorflow[and-cuda] / full tensorflow: install them without deps,
# then what they import (tests/requirements-peers.txt).
"${PIP[@]}" --no-deps -r tests/requirements-nodeps.txt
"${PIP[@]}" -r tests/requirements-peers.txt
export TF_CPP_MIN_LOG_LEVEL=3
exec .venv/bin/python -m pytest "$@"
