"""Python snippets run in a fresh interpreter: simulated devices, another Keras backend, kill -9.

XLA reads ``XLA_FLAGS`` (e.g. ``--xla_force_host_platform_device_count=4``) and Keras reads
``KERAS_BACKEND`` once per process, so tests that need other settings than the pytest process
run their code here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any


def simulated_devices(n: int) -> dict[str, str]:
    """Environment for a process that sees ``n`` CPU devices."""
    return {"XLA_FLAGS": f"--xla_force_host_platform_device_count={n}"}


def run_python(
    code: str, *args: str, env: dict[str, str] | None = None, timeout: int = 300
) -> subprocess.CompletedProcess:
    """Run ``python -c code args...`` with Keras on JAX (unless ``env`` says otherwise)."""
    full = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "jax", **(env or {})}
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_json(code: str, *args: str, env: dict[str, str] | None = None, timeout: int = 300) -> Any:
    """`run_python`, which must succeed; returns the JSON its last stdout line holds."""
    proc = run_python(code, *args, env=env, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])
