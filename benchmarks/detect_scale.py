#!/usr/bin/env python
"""Scale of the shortcut detectors: `fastfem.audit.detectors.detect` on a synthetic store.

A store of N rows is written with the real `ResultStore` (Parquet parts and ``.npy`` map
shards; maps of objects at random places, a fixed hot spot planted in ~10% of them:
``tests/support/synthetic_store.py``), then analysed by `detect` in a fresh Python process,
which reports:

* ``detect_s``: wall time of `detect`: reading the store's rows (``read_rows_s``) and the
  detectors streaming the maps (``detectors_s``: the store-wide detectors, and with
  ``--views`` the label-aware views, `fastfem.audit.detectors.by_class`, one per predicted
  class here: ``label_views``);
* ``peak_rss_mb``: the process's peak resident memory, ``import_rss_mb`` the same before
  `detect` (the interpreter, JAX and fastfem loaded); ``rows_rss_mb`` what reading the rows
  added at its peak (``rows_held_mb`` once read), ``detectors_rss_mb`` what the detectors
  added on top of the rows held (see `measure_here`). Read from ``VmHWM`` in
  ``/proc/self/status`` (Linux), the high-water mark of this process's own memory (reset
  between the steps through ``/proc/self/clear_refs``): ``getrusage``'s ``ru_maxrss`` would
  not do, as Linux carries the parent's peak over ``fork`` + ``exec`` into it;
* the flags' precision / recall against the planted rows (a sanity check, not the benchmark's
  point: the shortcut benchmark, ``benchmarks.shortcuts``, measures detection quality).

The maps are streamed in fixed-size chunks (`fastfem.audit.detectors.shards`), so the maps'
share of the memory does not grow with N; the store's per-row columns (`read_rows`: every
column, ids and labels as Python strings) do, and dominate the peak at a million rows.

Usage::

    python -m benchmarks.detect_scale [--rows 1000000] [--size 16] [--views] [--keep DIR]

writes ``benchmarks/results/detect_scale-<UTC>.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .harness import ROOT, log, machine_info, write_results

SUPPORT = ROOT / "tests" / "support"
#: Rows per Parquet part / map shard of the synthetic store.
PART_ROWS = 10_000
MARKED_FILE = "planted.npy"


def write_synthetic(root: Path, rows: int, size: int = 16, part: int = PART_ROWS) -> float:
    """Write a synthetic store of ``rows`` rows with ``size`` x ``size`` maps under ``root``
    and its planted mask as ``root/planted.npy``; returns the seconds it took."""
    import numpy as np

    if str(SUPPORT) not in sys.path:
        sys.path.insert(0, str(SUPPORT))
    from synthetic_store import write_store

    t0 = time.perf_counter()
    marked = write_store(root, rows, size=size, part=part)
    np.save(root / MARKED_FILE, marked)
    return time.perf_counter() - t0


def _status_mb(key: str) -> float:
    """``key`` (``VmHWM``: peak, ``VmRSS``: now) of this process's ``/proc/self/status``, MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {key} in /proc/self/status (the memory peak needs Linux)")


def _reset_peak() -> None:
    """Reset ``VmHWM`` to the current RSS (``echo 5 > /proc/self/clear_refs``)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def measure_here(store: Path, views: bool = False) -> dict[str, Any]:
    """Run `detect` on ``store`` in this process, in two timed steps: the store's rows
    (`ResultStore.read_rows`, every column) and the detectors given those rows. Peak RSS
    overall (``peak_rss_mb``), before either step (``import_rss_mb``), what reading the rows
    added at its peak (``rows_rss_mb``) and what the detectors added at theirs over the RSS
    they started from, the rows in memory (``detectors_rss_mb``; the peak is reset between
    the steps). With the flags' precision / recall against ``store/planted.npy`` when present.
    Meant for a fresh process (`measure_detect`)."""
    import numpy as np

    from fastfem.audit import ResultStore
    from fastfem.audit.detectors import detect

    rs = ResultStore(store)
    start = _status_mb("VmHWM")
    t0 = time.perf_counter()
    rows = rs.read_rows()
    t1 = time.perf_counter()
    rows_peak, held = _status_mb("VmHWM"), _status_mb("VmRSS")
    _reset_peak()
    det = detect(rs, rows, views=views)
    t2 = time.perf_counter()
    detectors_peak = _status_mb("VmHWM")
    out: dict[str, Any] = {
        "rows": int(len(det.ids)),
        "detect_s": round(t2 - t0, 2),
        "read_rows_s": round(t1 - t0, 2),
        "detectors_s": round(t2 - t1, 2),
        "import_rss_mb": round(start, 1),
        "peak_rss_mb": round(max(rows_peak, detectors_peak), 1),
        "rows_rss_mb": round(rows_peak - start, 1),
        "rows_held_mb": round(held - start, 1),
        "detectors_rss_mb": round(detectors_peak - held, 1),
        "flagged": int(det.flagged.sum()),
        "label_views": [v.name for v in det.views.views],
    }
    planted = store / MARKED_FILE
    if planted.is_file():
        truth = np.load(planted)
        tp = int(np.sum(det.flagged & truth))
        out["planted"] = int(truth.sum())
        out["precision"] = round(tp / max(int(det.flagged.sum()), 1), 4)
        out["recall"] = round(tp / max(int(truth.sum()), 1), 4)
    return out


def measure_detect(store: Path, views: bool = False, timeout: float = 3600.0) -> dict[str, Any]:
    """`measure_here` on ``store`` in a fresh Python process (so its peak RSS is detect's and
    the interpreter's alone); raises RuntimeError with the child's stderr if it fails."""
    cmd = [sys.executable, "-m", "benchmarks.detect_scale", "--measure", str(store)]
    cmd += ["--views"] * views
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"detect on {store} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def scale_row(
    rows: int, size: int = 16, keep: Path | None = None, views: bool = False
) -> dict[str, Any]:
    """Write an ``rows``-row synthetic store (under ``keep``, else a temporary folder removed
    afterwards) and measure `detect` (with the label-aware ``views`` or not) on it in a fresh
    process."""
    work = keep or Path(tempfile.mkdtemp(prefix="fastfem-detect-scale-"))
    store = work / f"store-{rows}-{size}"
    try:
        if store.exists():
            shutil.rmtree(store)
        write_s = write_synthetic(store, rows, size)
        maps_bytes = sum(p.stat().st_size for p in store.glob("**/*.npy"))
        res = measure_detect(store, views)
        res.update({"map_size": size, "write_s": round(write_s, 1), "maps_mb": maps_bytes / 2**20})
        res["maps_mb"] = round(res["maps_mb"], 1)
        return res
    finally:
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the store")
    parser.add_argument("--size", type=int, default=16, help="maps are size x size")
    parser.add_argument("--keep", help="write the store under this folder and keep it")
    parser.add_argument("--views", action="store_true", help="detect with the label-aware views")
    parser.add_argument("--measure", help="(internal) measure detect on this store, print JSON")
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure_here(Path(args.measure), args.views)))
        return 0
    if args.rows < 1 or args.size < 2:
        parser.error(f"need --rows >= 1 and --size >= 2, got {args.rows} and {args.size}")
    t0 = time.time()
    res = scale_row(args.rows, args.size, Path(args.keep) if args.keep else None, args.views)
    payload = {
        "benchmark": "detect_scale",
        "command": f"python -m benchmarks.detect_scale --rows {args.rows} --size {args.size}"
        + " --views" * args.views,
        "machine": machine_info(),
        "result": res,
        "wall_s": round(time.time() - t0, 1),
    }
    path = write_results("detect_scale", payload)
    log(json.dumps(res))
    log(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
