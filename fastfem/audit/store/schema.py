"""The store's one Arrow schema: an explicit type per column, every column nullable.

Every part is written with the schema `store_schema` builds from the audit's
columns: an explicit Arrow type per column (`COLUMN_TYPES`), every column nullable, never
inferred from a part's values (an all-null ``error`` column is still ``string``). So the parts
of every process and every resumed run read as one table with ``pyarrow.dataset``,
``pandas.read_parquet(DIR/parts)`` or DuckDB (``SELECT ... FROM 'DIR/parts/*.parquet'``).
``id_raw`` holds the raw bytes of an id that is not valid UTF-8 (``id`` then holds a readable
form); null otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyarrow as pa

#: The Arrow type of every column an audit writes (``pyarrow.type_for_alias`` names); all are
#: nullable. Columns taken from each input's `fastfem.data.records.Record` come first.
COLUMN_TYPES: dict[str, str] = {
    "id": "string",
    "id_raw": "binary",
    "label": "string",
    "status": "string",
    "error": "string",
    "peak_y": "float64",
    "peak_x": "float64",
    "border_energy": "float64",
    "corner_energy": "float64",
    "entropy": "float64",
    "frac_above": "float64",
    "prediction": "int64",
    "confidence": "float64",
    "similarity": "float64",
    "prototype": "string",
    "nearest_prototype": "string",
    "pointing_game": "float64",
    "energy_pointing_game": "float64",
    "iou": "float64",
}
RECORD_COLUMNS = ("id", "id_raw", "label", "status", "error")


def store_schema(columns: Sequence[str], types: Mapping[str, str] | None = None) -> pa.Schema:
    """The store's Arrow schema for ``columns`` in order: `COLUMN_TYPES`, or ``types`` for
    columns of another name; every field nullable. A ValueError names a column without a
    type."""
    import pyarrow as pa

    known = {**COLUMN_TYPES, **(types or {})}
    unknown = [c for c in columns if c not in known]
    if unknown:
        raise ValueError(f"no store type for the columns {unknown}; known: {sorted(known)}")
    return pa.schema([pa.field(c, pa.type_for_alias(known[c]), nullable=True) for c in columns])


def schema_types(schema: pa.Schema) -> dict[str, str]:
    """``{column: type name}`` of a schema (what the manifest records)."""
    return {f.name: str(f.type) for f in schema}
