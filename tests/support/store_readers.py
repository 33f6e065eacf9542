"""Read an audit's result store with the three readers a user would use, and check they agree.

`read_with_every_reader` reads ``DIR/parts`` with ``pyarrow.dataset``,
``pandas.read_parquet`` and DuckDB (``SELECT ... FROM 'DIR/parts/*.parquet'``): each must
read every part as one table. `assert_one_table` compares them with the store's own reader.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fastfem.audit.store.parts import ResultStore


def read_with_every_reader(out: Path) -> dict[str, dict[str, list]]:
    """``{reader: {column: values sorted by id}}`` for pyarrow.dataset, pandas and DuckDB."""
    import duckdb
    import pandas as pd
    import pyarrow.dataset as ds

    parts = Path(out) / "parts"
    table = ds.dataset(parts, format="parquet").to_table().sort_by("id")
    frame = pd.read_parquet(parts).sort_values("id", kind="stable")
    con = duckdb.connect()
    cursor = con.execute(f"SELECT * FROM '{parts}/*.parquet' ORDER BY id")
    names = [d[0] for d in cursor.description]
    duck = dict(zip(names, map(list, zip(*cursor.fetchall(), strict=True)), strict=True))
    con.close()
    return {
        "pyarrow.dataset": table.to_pydict(),
        "pandas": {c: [_none(v) for v in frame[c].tolist()] for c in frame.columns},
        "duckdb": duck,
    }


def _none(v):
    """pandas' missing values (NaN, None, pd.NA) as None."""
    import pandas as pd

    return None if v is None or v is pd.NA or (isinstance(v, float) and v != v) else v


def assert_one_table(out: Path) -> dict[str, list]:
    """Every reader reads the same rows as `ResultStore.read_rows` (ids, status, error, the
    map statistics); returns the pyarrow.dataset columns."""
    rows = ResultStore(out).read_rows()
    order = np.argsort(rows["id"], kind="stable")
    expected = {c: [_none(v) for v in np.asarray(rows[c], dtype=object)[order]] for c in rows}
    readers = read_with_every_reader(out)
    for name, got in readers.items():
        assert list(got) == list(rows), (name, list(got))
        for c in ("id", "status", "error", "label"):
            assert got[c] == expected[c], (name, c)
        for c in ("corner_energy", "confidence"):
            a = np.asarray([np.nan if v is None else v for v in got[c]], float)
            b = np.asarray([np.nan if v is None else v for v in expected[c]], float)
            np.testing.assert_array_equal(a, b, err_msg=f"{name}: {c}")
    return readers["pyarrow.dataset"]
