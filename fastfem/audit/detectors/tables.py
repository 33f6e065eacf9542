"""``DIR/flags.parquet`` and ``DIR/clusters.parquet``: the detectors' results beside the parts.

Both files have fixed, explicit Parquet schemas (nullable where a value can be missing; never
inferred from the values) and are written like the store's parts (`fastfem.audit.store.safe_write.
write_table_atomic`): to a temporary name, then renamed over the old file — a reader sees the
old file or the new one, never half of one; a write failure is a `StoreError`.
They are rewritten at the end of every audit run, a no-op resume included.

``flags.parquet``: one row per flagged input, highest score first::

    id       string   not null   the input's id
    score    float64  not null   the largest statistic/threshold ratio of the detectors that
                                 fired (>= 1)
    reason   string   not null   the detectors that fired, e.g. "hot spot 3, outside box"
    cluster  int32    null       the shortcut-candidate cluster whose hot spot fired, else the
                                 row's explanation cluster (null: no map clustered)
    rank     int32    not null   1 = highest score
    region   string   null       the reliance test: the region whose removal knocked the
                                 row's predicted class out (`fastfem.audit.reliance`)
    fill     string   null       how that region was hidden
    output_change float64 null   the fall of the predicted class's probability

``clusters.parquet``: one row per explanation cluster (`fastfem.audit.detectors.summary`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fastfem.audit.store.safe_write import write_table_atomic

FLAGS_FILE = "flags.parquet"
CLUSTERS_FILE = "clusters.parquet"


def flags_schema():
    import pyarrow as pa

    return pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("score", pa.float64(), nullable=False),
            pa.field("reason", pa.string(), nullable=False),
            pa.field("cluster", pa.int32(), nullable=True),
            pa.field("rank", pa.int32(), nullable=False),
            pa.field("region", pa.string(), nullable=True),
            pa.field("fill", pa.string(), nullable=True),
            pa.field("output_change", pa.float64(), nullable=True),
        ]
    )


def clusters_schema():
    import pyarrow as pa

    return pa.schema(
        [
            pa.field("cluster", pa.int32(), nullable=False),
            pa.field("size", pa.int64(), nullable=False),
            pa.field("candidate", pa.bool_(), nullable=False),
            pa.field("score", pa.float64(), nullable=False),
            pa.field("contrast", pa.float64(), nullable=False),
            pa.field("variation", pa.float64(), nullable=False),
            pa.field("hot_energy", pa.float64(), nullable=False),
            pa.field("hot_cells", pa.int32(), nullable=False),
            pa.field("peak_y", pa.float64(), nullable=False),
            pa.field("peak_x", pa.float64(), nullable=False),
            pa.field("classes", pa.list_(pa.string()), nullable=False),
            pa.field("class_counts", pa.list_(pa.int64()), nullable=False),
            pa.field("top_class", pa.string(), nullable=True),
            pa.field("top_class_share", pa.float64(), nullable=True),
            pa.field("class_skew", pa.float64(), nullable=True),
            pa.field("disagreement", pa.float64(), nullable=True),
            pa.field("flagged", pa.int64(), nullable=False),
            pa.field("map_height", pa.int32(), nullable=False),
            pa.field("map_width", pa.int32(), nullable=False),
            pa.field("mean_map", pa.list_(pa.float32()), nullable=False),
            pa.field("members", pa.list_(pa.string()), nullable=False),
        ]
    )


def write_table(path: Path, table: Any) -> Path:
    """``table`` to ``path`` (its folder made if missing) by `write_table_atomic`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_table_atomic(path, table)
    return path


def table_from_columns(columns: Mapping[str, Sequence[Any]], schema: Any) -> Any:
    import pyarrow as pa

    missing = [f.name for f in schema if f.name not in columns]
    if missing:
        raise ValueError(f"missing columns {missing} for {schema.names}")
    return pa.Table.from_pydict({f.name: list(columns[f.name]) for f in schema}, schema=schema)


def write_flags(root: str | os.PathLike, columns: Mapping[str, Sequence[Any]]) -> Path:
    """Write ``root/flags.parquet`` (schema of the module docstring) atomically."""
    return write_table(Path(root) / FLAGS_FILE, table_from_columns(columns, flags_schema()))


def write_clusters(root: str | os.PathLike, columns: Mapping[str, Sequence[Any]]) -> Path:
    """Write ``root/clusters.parquet`` (schema `clusters_schema`) atomically."""
    return write_table(Path(root) / CLUSTERS_FILE, table_from_columns(columns, clusters_schema()))


def read_table(root: str | os.PathLike, name: str) -> dict[str, list] | None:
    """``root/name`` as columns of Python lists, or None when the file does not exist."""
    import pyarrow.parquet as pq

    path = Path(root) / name
    if not path.exists():
        return None
    return pq.read_table(path).to_pydict()
