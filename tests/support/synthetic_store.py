"""A synthetic audit store written with the real `ResultStore` (Parquet parts + map shards):
maps of objects at random places, a fixed hot spot planted in some of them.

Used to test the detectors and the report at scale without running a model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from fastfem.audit import ResultStore
from fastfem.audit.store.schema import store_schema


def blob_maps(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """``n`` (size, size) maps: a Gaussian blob (an object) of random centre and width."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    cy = rng.uniform(0.2, 0.8, n)[:, None, None] * size
    cx = rng.uniform(0.2, 0.8, n)[:, None, None] * size
    sd = rng.uniform(0.08, 0.16, n)[:, None, None] * size
    maps = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sd**2))
    return (maps * rng.uniform(0.5, 2.0, n)[:, None, None]).astype(np.float32)


def plant_spot(maps: np.ndarray, marked: np.ndarray, cell: tuple[int, int], share: float):
    """Add a fixed 2x2-cell hot spot holding about ``share`` of the energy to marked maps."""
    y, x = cell
    total = maps[marked].sum(axis=(1, 2))
    maps[marked, y : y + 2, x : x + 2] += (share / (1 - share) * total / 4)[:, None, None]


def write_store(
    root: Path,
    n: int,
    size: int = 16,
    part: int = 2000,
    rate: float = 0.1,
    cell: tuple[int, int] = (1, 11),
    seed: int = 0,
    errors: int = 3,
) -> np.ndarray:
    """Write a store of ``n`` rows (parts of ``part`` rows); returns the planted mask.

    Marked rows get the hot spot at ``cell`` and are predicted as class 2 half of the time;
    the first ``errors`` rows of the first part are error rows (NaN maps).
    """
    rng = np.random.default_rng(seed)
    store = ResultStore(root)
    marked_all = []
    for seq, start in enumerate(range(0, n, part)):
        m = min(part, n - start)
        maps = blob_maps(rng, m, size)
        marked = rng.random(m) < rate
        plant_spot(maps, marked, cell, 0.6)
        pred = rng.integers(0, 4, m)
        pred[marked & (rng.random(m) < 0.5)] = 2
        status = np.asarray(["ok"] * m, dtype=object)
        err = [None] * m
        if seq == 0 and errors:
            status[:errors] = "error"
            err[:errors] = ["corrupt file"] * errors
            maps[:errors] = np.nan
            marked[:errors] = False
        ok = status == "ok"

        def stat(ok=ok, m=m):
            return [float(v) if g else None for v, g in zip(rng.random(m), ok, strict=True)]

        rows = {
            "id": [f"img-{start + i:06d}" for i in range(m)],
            "label": [f"class{c}" for c in pred],
            "status": list(status),
            "error": err,
            "peak_y": stat(),
            "peak_x": stat(),
            "border_energy": stat(),
            "corner_energy": stat(),
            "entropy": stat(),
            "frac_above": stat(),
            "prediction": [int(p) if g else None for p, g in zip(pred, ok, strict=True)],
            "confidence": stat(),
        }
        store.write_part(seq, pa.Table.from_pydict(rows, schema=store_schema(list(rows))), maps)
        marked_all.append(marked)
    store.write_manifest({"model": "synthetic", "layer": "none", "method": "fem"})
    return np.concatenate(marked_all)
