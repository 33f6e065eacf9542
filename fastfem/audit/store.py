"""The audit's result store (DESIGN.md §7): a directory of committed parts and a manifest.

Layout::

    DIR/parts/part-p{process:03d}-{seq:06d}.parquet   one row per input (id, status, error, ...)
    DIR/maps/maps-p{process:03d}-{seq:06d}.npy        float32 (rows, h, w) feature-resolution maps,
                                                      row i <-> part row i (NaN for error rows)
    DIR/manifest.json                                 model, layer, method, config, versions, parts

Commit protocol: a part's maps are written first, then the Parquet file is written to a
temporary name and renamed; the rename is the commit. A crash leaves at most a temporary file or
an orphan maps file, never a half part that counts. The committed ids are the union of the ``id``
columns of the committed Parquet files, so ``--resume`` skips exactly those.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

PART_RE = re.compile(r"^part-p(\d{3})-(\d{6})\.parquet$")
MANIFEST = "manifest.json"


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".tmp-{os.getpid()}-{path.name}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class ResultStore:
    """A result store directory, written by one process (``process_index``) of a run."""

    def __init__(self, root: str | os.PathLike, process_index: int = 0):
        self.root = Path(root)
        self.process_index = process_index
        self.parts_dir = self.root / "parts"
        self.maps_dir = self.root / "maps"

    # ---- reading -----------------------------------------------------------------------------
    def part_files(self) -> list[Path]:
        """Committed part files of every process, sorted by name."""
        if not self.parts_dir.is_dir():
            return []
        return sorted(p for p in self.parts_dir.iterdir() if PART_RE.match(p.name))

    def exists(self) -> bool:
        return bool(self.part_files()) or (self.root / MANIFEST).exists()

    def committed_ids(self) -> set[str]:
        import pyarrow.parquet as pq

        ids: set[str] = set()
        for p in self.part_files():
            ids.update(pq.read_table(p, columns=["id"]).column("id").to_pylist())
        return ids

    def read_rows(self) -> dict[str, np.ndarray]:
        """Every committed row as columns of NumPy arrays (parts in name order)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        parts = self.part_files()
        if not parts:
            return {}
        table = pa.concat_tables([pq.read_table(p) for p in parts], promote_options="default")
        return {
            name: table.column(name).to_numpy(zero_copy_only=False) for name in table.schema.names
        }

    def read_maps(self) -> np.ndarray:
        """The feature-resolution maps of every committed row, aligned with `read_rows`."""
        shards = [np.load(self.maps_dir / self.maps_name(p)) for p in self.part_files()]
        return np.concatenate(shards) if shards else np.zeros((0, 0, 0), np.float32)

    def manifest(self) -> dict[str, Any]:
        path = self.root / MANIFEST
        return json.loads(path.read_text()) if path.exists() else {}

    # ---- writing -----------------------------------------------------------------------------
    @staticmethod
    def maps_name(part: Path) -> str:
        return part.name.replace("part-", "maps-").replace(".parquet", ".npy")

    def next_seq(self) -> int:
        seqs = [
            int(m.group(2))
            for p in self.part_files()
            if (m := PART_RE.match(p.name)) and int(m.group(1)) == self.process_index
        ]
        return max(seqs, default=-1) + 1

    def write_part(self, seq: int, rows: Mapping[str, Any], maps: np.ndarray) -> Path:
        """Commit one part: maps shard first, then the Parquet file by an atomic rename."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.parts_dir.mkdir(parents=True, exist_ok=True)
        self.maps_dir.mkdir(parents=True, exist_ok=True)
        n = len(rows["id"])
        if maps.shape[0] != n:
            raise ValueError(f"part has {n} rows but {maps.shape[0]} maps")
        name = f"part-p{self.process_index:03d}-{seq:06d}.parquet"
        part = self.parts_dir / name
        buf = _npy_bytes(np.ascontiguousarray(maps, dtype=np.float32))
        _atomic_write_bytes(self.maps_dir / self.maps_name(part), buf)
        tmp = part.with_name(f".tmp-{os.getpid()}-{name}")
        pq.write_table(pa.table(dict(rows)), tmp)
        os.replace(tmp, part)
        return part

    def write_manifest(self, info: Mapping[str, Any]) -> Path:
        """Write ``manifest.json`` atomically, listing the committed parts."""
        body = dict(info)
        body["parts"] = [p.name for p in self.part_files()]
        path = self.root / MANIFEST
        self.root.mkdir(parents=True, exist_ok=True)
        _atomic_write_bytes(path, (json.dumps(body, indent=2, default=str) + "\n").encode())
        return path


def _npy_bytes(a: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()
