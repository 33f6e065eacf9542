"""`PartWriter`: the part being filled, committed to a `fastfem.audit.store.parts.ResultStore`
in parts of a fixed number of rows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from fastfem.audit.store.parts import ResultStore
from fastfem.audit.store.schema import RECORD_COLUMNS
from fastfem.data.records import Record

if TYPE_CHECKING:
    import pyarrow as pa


class PartWriter:
    """The part being filled: rows as columns (lists) and maps as blocks, committed to the store
    as parts of exactly ``part_size`` rows (a batch that crosses the boundary is split; the last
    part holds the rest).

    ``schema`` is the store's (`store_schema`): the record columns (`RECORD_COLUMNS`) come
    from each input's record (``id_raw``: ``record.raw_id`` when the source sets it), the
    others are the step's per-image results by name. ``labels`` maps a column of class indices
    to the class names it stores (FAM's prototypes). NaN in a float column is stored as null.
    ``metadata``: the Parquet key-value metadata of every part (the run's configuration,
    `fastfem.audit.store.manifest.part_metadata`).
    """

    def __init__(
        self,
        store: ResultStore,
        schema: pa.Schema,
        map_shape: Sequence[int],
        part_size: int,
        labels: Mapping[str, np.ndarray] | None = None,
        metadata: Mapping[bytes, bytes] | None = None,
    ):
        self.store = store
        self.schema = schema
        self.columns = list(schema.names)
        self.result_columns = [c for c in self.columns if c not in RECORD_COLUMNS]
        self.map_shape = tuple(int(d) for d in map_shape)
        self.part_size = int(part_size)
        self.labels = dict(labels or {})
        self.metadata = dict(metadata or {})
        self.seq = store.next_seq()
        self._reset()

    def _reset(self) -> None:
        self.rows: dict[str, list] = {c: [] for c in self.columns}
        self.maps: list[np.ndarray | int] = []  # a block of maps, or a count of NaN maps

    def __len__(self) -> int:
        return len(self.rows["id"])

    def _add_records(self, recs: Sequence[Record], errors: Sequence[str | None]) -> None:
        record_values = {
            "id": [r.id for r in recs],
            "id_raw": [getattr(r, "raw_id", None) for r in recs],
            "label": [r.label for r in recs],
            "status": ["ok" if e is None else "error" for e in errors],
            "error": list(errors),
        }
        for c in RECORD_COLUMNS:
            if c in self.rows:
                self.rows[c].extend(record_values[c])

    def add_errors(self, items: Sequence[tuple[Record, str]]) -> None:
        """One error row per ``(record, reason)``: null results, a NaN map."""
        if not items:
            return
        self._add_records([r for r, _ in items], [e for _, e in items])
        for c in self.result_columns:
            self.rows[c].extend([None] * len(items))
        self.maps.append(len(items))
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
        self._add_records(recs, errors)
        for c in self.result_columns:
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
        while len(self) >= self.part_size:
            self._commit_rows(self.part_size)

    def commit(self) -> None:
        """Write the rows held so far as one committed part (nothing when empty)."""
        if len(self):
            self._commit_rows(len(self))

    def _commit_rows(self, n: int) -> None:
        """Commit the first ``n`` rows held as one part; the rest stay held (nothing changes
        when the write fails)."""
        import pyarrow as pa

        maps = self._stacked_maps()
        table = pa.table({c: v[:n] for c, v in self.rows.items()}, schema=self.schema)
        if self.metadata:
            table = table.replace_schema_metadata(self.metadata)
        self.store.write_part(self.seq, table, maps[:n])
        self.seq += 1
        self.rows = {c: v[n:] for c, v in self.rows.items()}
        self.maps = [maps[n:]] if len(maps) > n else []
