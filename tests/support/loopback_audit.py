"""Multi-process ``fastfem audit`` runs on loopback: every process a fresh CLI interpreter,
process 0 the coordinator on a free port; the store's parts say which process wrote a row."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

ENV = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def audit_command(args: list[str], reliance_sample: int = 0) -> list[str]:
    """``fastfem audit ARGS`` as a fresh CLI interpreter's argv (quiet, ``--reliance-sample``)."""
    return [
        sys.executable,
        "-m",
        "fastfem.cli",
        "audit",
        "--quiet",
        "--reliance-sample",
        str(reliance_sample),
        *args,
    ]


def audit_processes(args: list[str], count: int, timeout: float = 600) -> list[tuple[int, str]]:
    """Run ``fastfem audit ARGS`` as ``count`` processes; ``(returncode, stdout + stderr)`` each."""
    port = free_port()
    procs = [
        subprocess.Popen(
            [
                *audit_command(args),
                "--coordinator",
                f"127.0.0.1:{port}",
                "--num-processes",
                str(count),
                "--process-id",
                str(k),
            ],
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for k in range(count)
    ]
    outs = [p.communicate(timeout=timeout)[0] for p in procs]
    return [(p.returncode, out) for p, out in zip(procs, outs, strict=True)]


def ids_by_process(store: Path) -> dict[int, set[str]]:
    """The ids each process committed (``parts/part-p<k>-...``)."""
    found: dict[int, set[str]] = {}
    for part in sorted((Path(store) / "parts").glob("part-p*.parquet")):
        k = int(part.name[len("part-p") :].split("-")[0])
        found.setdefault(k, set()).update(pq.read_table(part, columns=["id"])["id"].to_pylist())
    return found
