"""The audit's result store: a directory of committed parts and a manifest.

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
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .sources import Record

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

    def read_map_shape(self) -> tuple[int, ...] | None:
        """The stored maps' shape (h, w), read from the first maps shard's header; None when
        nothing is committed."""
        parts = self.part_files()
        if not parts:
            return None
        shard = np.load(self.maps_dir / self.maps_name(parts[0]), mmap_mode="r")
        return tuple(int(d) for d in shard.shape[1:])

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


class PartWriter:
    """The part being filled: rows as columns (lists) and maps as blocks, committed to the store
    as one part every ``part_size`` rows (and at the end).

    ``columns`` are the Parquet columns in order (``id, label, status, error`` first, then the
    step's per-image results by name); ``labels`` maps a column of class indices to the class
    names it stores (FAM's prototypes). NaN in a float column is stored as null.
    """

    def __init__(
        self,
        store: ResultStore,
        columns: Sequence[str],
        map_shape: Sequence[int],
        part_size: int,
        labels: Mapping[str, np.ndarray] | None = None,
    ):
        self.store = store
        self.columns = list(columns)
        self.map_shape = tuple(int(d) for d in map_shape)
        self.part_size = int(part_size)
        self.labels = dict(labels or {})
        self.seq = store.next_seq()
        self.committed_rows = 0
        self._reset()

    def _reset(self) -> None:
        self.rows: dict[str, list] = {c: [] for c in self.columns}
        self.maps: list[np.ndarray | int] = []  # a block of maps, or a count of NaN maps

    def __len__(self) -> int:
        return len(self.rows["id"])

    def add_errors(self, items: Sequence[tuple[Record, str]]) -> None:
        """One error row per ``(record, reason)``: null results, a NaN map."""
        if not items:
            return
        n = len(items)
        for c in self.columns:
            self.rows[c].extend([None] * n)
        self.rows["id"][-n:] = [r.id for r, _ in items]
        self.rows["label"][-n:] = [r.label for r, _ in items]
        self.rows["status"][-n:] = ["error"] * n
        self.rows["error"][-n:] = [e for _, e in items]
        self.maps.append(n)
        self._maybe_commit()

    def add_batch(
        self, recs: Sequence[Record], out: Mapping[str, np.ndarray], errors: Sequence[str | None]
    ) -> int:
        """Append one batch's results (``out["map"]`` and a value per column); a record with a
        non-None entry in ``errors`` becomes an error row (NaN map, null results). Returns the
        number of ok rows."""
        ok = np.asarray([e is None for e in errors], bool)
        block = np.asarray(out["map"][: len(recs)], np.float32)
        if not ok.all():
            block = block.copy()
            block[~ok] = np.nan
        self.maps.append(block)
        self.rows["id"].extend(r.id for r in recs)
        self.rows["label"].extend(r.label for r in recs)
        self.rows["status"].extend("ok" if g else "error" for g in ok)
        self.rows["error"].extend(errors)
        for c in self.columns[4:]:
            values = np.asarray(out[c][: len(recs)])
            if c in self.labels:
                values = self.labels[c][values]
            col = values.tolist()
            if values.dtype.kind == "f":
                col = [None if v != v else v for v in col]  # NaN != NaN
            if not ok.all():
                col = [v if g else None for v, g in zip(col, ok, strict=True)]
            self.rows[c].extend(col)
        self._maybe_commit()
        return int(ok.sum())

    def _stacked_maps(self) -> np.ndarray:
        return np.concatenate(
            [
                b
                if isinstance(b, np.ndarray)
                else np.full((b, *self.map_shape), np.nan, np.float32)
                for b in self.maps
            ]
        )

    def _maybe_commit(self) -> None:
        if len(self) >= self.part_size:
            self.commit()

    def commit(self) -> None:
        """Write the rows held so far as one committed part (nothing when empty)."""
        if len(self):
            self.store.write_part(self.seq, self.rows, self._stacked_maps())
            self.seq += 1
            self.committed_rows += len(self)
            self._reset()
