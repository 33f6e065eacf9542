"""`fastfem.audit.store`: the part writer's commits, what a crash leaves, resume
bookkeeping."""

from __future__ import annotations

import numpy as np

from fastfem.audit.store.parts import ResultStore
from fastfem.audit.store.schema import store_schema
from fastfem.audit.store.writer import PartWriter
from fastfem.data.records import Record

COLUMNS = store_schema(["id", "label", "status", "error", "score"], {"score": "double"})


def records(start: int, n: int) -> list[Record]:
    return [Record(f"r{i:03d}", label="a" if i % 2 else None) for i in range(start, start + n)]


def batch_out(n: int, value: float) -> dict[str, np.ndarray]:
    return {"map": np.full((n, 2, 3), value, np.float32), "score": np.arange(n) + value}


def test_parts_commit_every_part_size_rows_in_order(tmp_path):
    store = ResultStore(tmp_path / "s")
    writer = PartWriter(store, COLUMNS, (2, 3), part_size=5)
    writer.add_batch(records(0, 4), batch_out(4, 1.0), [None, None, "bad", None])
    assert store.part_files() == []  # 4 rows held, nothing committed yet
    writer.add_errors([(r, "cannot decode") for r in records(4, 3)])  # 7 >= 5: one part
    writer.add_batch(records(7, 2), batch_out(2, 5.0), [None, None])
    writer.commit()
    names = [p.name for p in store.part_files()]
    assert names == ["part-p000-000000.parquet", "part-p000-000001.parquet"]
    rows = store.read_rows()
    assert list(rows["id"]) == [f"r{i:03d}" for i in range(9)]
    assert list(rows["status"]) == ["ok", "ok", "error", "ok"] + ["error"] * 3 + ["ok", "ok"]
    assert rows["error"][2] == "bad" and rows["error"][4] == "cannot decode"
    score = [None if v is None or v != v else v for v in rows["score"]]
    assert score[:2] == [1.0, 2.0] and score[2] is None and score[4:7] == [None] * 3
    maps = store.read_maps()
    assert maps.shape == (9, 2, 3) and store.read_map_shape() == (2, 3)
    assert np.isnan(maps[2]).all() and np.isnan(maps[4:7]).all() and (maps[7:] == 5).all()
    assert store.committed_ids() == {f"r{i:03d}" for i in range(9)}


def test_a_crash_leaves_nothing_counted_and_resume_continues_the_sequence(tmp_path):
    store = ResultStore(tmp_path / "s")
    writer = PartWriter(store, COLUMNS, (1, 1), part_size=2)
    writer.add_batch(records(0, 2), {"map": np.zeros((2, 1, 1)), "score": np.zeros(2)}, [None] * 2)
    # what a kill during the next commit can leave: a temporary Parquet file and orphan maps
    (store.parts_dir / ".tmp-123-part-p000-000001.parquet").write_bytes(b"half")
    np.save(store.maps_dir / "maps-p000-000001.npy", np.zeros((2, 1, 1), np.float32))
    assert store.committed_ids() == {"r000", "r001"}
    resumed = PartWriter(ResultStore(tmp_path / "s"), COLUMNS, (1, 1), part_size=2)
    assert resumed.seq == 1  # the orphan maps are overwritten by the next real commit
    resumed.add_batch(records(2, 2), {"map": np.ones((2, 1, 1)), "score": np.ones(2)}, [None] * 2)
    assert store.committed_ids() == {"r000", "r001", "r002", "r003"}
    assert (store.read_maps()[2:] == 1).all()


def test_processes_number_their_own_parts(tmp_path):
    for pid in (0, 1):
        writer = PartWriter(ResultStore(tmp_path / "s", pid), COLUMNS, (1, 1), part_size=1)
        writer.add_batch(
            [Record(f"p{pid}")], {"map": np.zeros((1, 1, 1)), "score": np.zeros(1)}, [None]
        )
    names = [p.name for p in ResultStore(tmp_path / "s").part_files()]
    assert names == ["part-p000-000000.parquet", "part-p001-000000.parquet"]


# ------------------------------------------------------------------------- one fixed schema


def test_every_part_has_the_fixed_schema_even_when_a_column_is_all_null(tmp_path):
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    store = ResultStore(tmp_path / "s")
    writer = PartWriter(store, COLUMNS, (1, 1), part_size=2)
    writer.add_batch(records(0, 2), {"map": np.zeros((2, 1, 1)), "score": np.ones(2)}, [None] * 2)
    writer.add_errors([(r, "cannot decode") for r in records(2, 2)])  # score: all null
    schemas = [pq.read_schema(p).remove_metadata() for p in store.part_files()]
    assert len(schemas) == 2 and all(s.equals(COLUMNS) for s in schemas)
    assert str(schemas[0].field("error").type) == "string"  # all null, still a string column
    table = ds.dataset(store.parts_dir).to_table()
    assert table.num_rows == 4 and table.column("error").null_count == 2


def test_a_column_without_a_type_is_refused():
    import pytest

    with pytest.raises(ValueError, match=r"no store type for the columns \['score'\]"):
        store_schema(["id", "score"])
