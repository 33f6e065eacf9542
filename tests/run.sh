#!/usr/bin/env bash
# Set up and run the whole test suite on a fresh machine (the README's test command).
#   creates .venv if missing, installs fastfem (editable) with its dev + tf extras, and the peer
#   libraries the parity tests compare against (Xplique without its CUDA extras, beside
#   tensorflow-cpu; pytorch-grad-cam beside torch's CPU build), then runs pytest. Extra
#   arguments go to pytest (e.g. -m "not slow"); --setup-only stops after the set-up (e.g.
#   before running the benchmarks).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check)
"${PIP[@]}" --upgrade pip
"${PIP[@]}" -e ".[dev,tf,flax]"
# Xplique, tf-keras and tf2jax pin tensorflow[and-cuda] / full tensorflow, grad-cam pins
# torchvision: install them without deps, then what they import (tests/requirements-peers.txt,
# with torch's CPU build for pytorch-grad-cam).
"${PIP[@]}" --no-deps -r tests/requirements-nodeps.txt
"${PIP[@]}" -r tests/requirements-peers.txt
# The report test renders the audit's HTML page in a real headless browser (Debian chromium).
# Where Debian packages can be installed (root or passwordless sudo) it is installed when
# missing, and the test must then find it (FASTFEM_REQUIRE_BROWSER=1: a missing browser fails,
# never skips). Elsewhere that one test skips without a browser.
SUDO=()
[ "$(id -u)" = 0 ] || SUDO=(sudo -n)
if command -v apt-get >/dev/null && { [ "$(id -u)" = 0 ] || sudo -n true 2>/dev/null; }; then
    export FASTFEM_REQUIRE_BROWSER="${FASTFEM_REQUIRE_BROWSER:-1}"
    if ! command -v chromium >/dev/null 2>&1; then
        echo "installing Debian chromium for the report's browser test" >&2
        { "${SUDO[@]}" apt-get install -y -q chromium \
            || { "${SUDO[@]}" apt-get update -q && "${SUDO[@]}" apt-get install -y -q chromium; }; } \
            >/dev/null 2>&1 || echo "could not install chromium" >&2
    fi
fi
if [ "${1:-}" = "--setup-only" ]; then
    echo "set up: $(pwd)/.venv" >&2
    exit 0
fi
export TF_CPP_MIN_LOG_LEVEL=3
exec .venv/bin/python -m pytest "$@"
