"""Hugging Face datasets written by ``datasets`` (Parquet and ``save_to_disk``), audited with the
bundled model through pyarrow alone: class names as labels, ids ``<shard>:<row>``, damaged
rows and files as error rows, resume, and processes that read whole shards."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from loopback_audit import audit_processes, ids_by_process
from PIL import Image

from fastfem import sample
from fastfem.audit import ResultStore, audit
from fastfem.data.records import ReadOptions
from fastfem.data.sources import open_source

datasets = pytest.importorskip("datasets")

EXPECTED = (64, 64, 3)
N = 12
BAD, NULL = 4, 9  # rows holding bytes that are no image, and a null image
OPTIONS = ReadOptions(threads=2)


def pixels(n: int = N) -> tuple[np.ndarray, list[str]]:
    s = sample.generate("test", n=n)
    images = np.clip(np.rint(s.images * 255), 0, 255).astype(np.uint8)
    return images, [sample.CLASS_NAMES[int(y)] for y in s.labels]


def png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def dataset(n: int = N):
    """A real ``datasets.Dataset``: an Image feature, a ClassLabel with the sample's classes,
    one row of bytes that are no image, one null image."""
    images, _ = pixels(n)
    s = sample.generate("test", n=n)
    cells = [{"bytes": png(img), "path": None} for img in images]
    cells[BAD] = {"bytes": b"not an image", "path": None}
    cells[NULL] = None
    features = datasets.Features(
        {
            "img": datasets.Image(),
            "category": datasets.ClassLabel(names=list(sample.CLASS_NAMES)),
            "note": datasets.Value("string"),
        }
    )
    rows = {"img": cells, "category": [int(y) for y in s.labels], "note": ["x"] * n}
    return datasets.Dataset.from_dict(rows, features=features)


def rows_by_id(out) -> dict[str, dict]:
    rows = ResultStore(out).read_rows()
    return {rid: {c: rows[c][i] for c in rows} for i, rid in enumerate(rows["id"])}


def test_parquet_rows_read_as_the_dataset_holds_them(tmp_path):
    dataset().to_parquet(tmp_path / "train.parquet", batch_size=5)  # 3 row groups
    assert pq.ParquetFile(tmp_path / "train.parquet").num_row_groups == 3
    src = open_source(tmp_path / "train.parquet", EXPECTED, OPTIONS)
    assert src.ids == [f"train.parquet:{r}" for r in range(N)] and src.shards == [0] * N
    images, names = pixels()
    recs = list(src.read(lambda i, rid: True))
    assert [r.label for r in recs] == names  # the ClassLabel's names, found in the metadata
    for r, img in zip(recs, images, strict=True):
        if r.id.endswith((f":{BAD}", f":{NULL}")):
            assert r.image is None
        else:
            np.testing.assert_array_equal(r.image, img)
    assert "cannot decode image" in recs[BAD].error and recs[NULL].error == "the image is null"
    # only the selected rows are read, in order
    picked = list(src.read(lambda i, rid: i in (1, 7, 11)))
    assert [r.id for r in picked] == ["train.parquet:1", "train.parquet:7", "train.parquet:11"]


def test_any_selection_reads_the_same_rows(tmp_path, monkeypatch):
    """Resume and multi-process slicing select rows: any selection reads exactly those rows,
    across row groups, record batches inside them, and files."""
    import fastfem.data.hf as hf

    monkeypatch.setattr(hf, "BATCH_ROWS", 2)  # several batches per row group
    ds = dataset()
    ds.to_parquet(tmp_path / "a.parquet", batch_size=5)
    ds.save_to_disk(tmp_path / "saved", num_shards=2)
    rng = np.random.default_rng(0)
    for source in (
        [tmp_path / "a.parquet", tmp_path / "saved" / "data-00001-of-00002.arrow"],
        tmp_path / "saved",
    ):
        src = open_source(source, EXPECTED, OPTIONS)
        everything = {r.id: r for r in src.read(lambda i, rid: True)}
        assert list(everything) == src.ids
        for keep in [rng.random(len(src.ids)) < p for p in (0.1, 0.3, 0.6)]:
            got = list(src.read(lambda i, rid, keep=keep: bool(keep[i])))
            assert [r.id for r in got] == [rid for rid, k in zip(src.ids, keep, strict=True) if k]
            for r in got:
                full = everything[r.id]
                assert r.label == full.label and r.error == full.error
                assert (r.image is None) == (full.image is None)
                if r.image is not None:
                    np.testing.assert_array_equal(r.image, full.image)


def test_save_to_disk_audit_labels_errors_and_resume(tmp_path):
    saved = tmp_path / "saved"
    dataset().save_to_disk(saved, num_shards=3)  # data-0000k-of-00003.arrow, 4 rows each
    first = saved / "data-00000-of-00003.arrow"
    out = tmp_path / "store"
    partial = audit(first, out=out)  # one shard of three: a partial store
    assert (partial.ok, partial.errors) == (4, 0)
    s = audit(saved, out=out, resume=True)  # the whole dataset completes it
    assert (s.ok, s.errors, s.skipped_already_committed) == (6, 2, 4)
    rows = rows_by_id(out)
    _, names = pixels()
    expected_ids = [f"data-0000{r // 4}-of-00003.arrow:{r % 4}" for r in range(N)]
    assert sorted(rows) == sorted(expected_ids)
    for r, rid in enumerate(expected_ids):
        assert rows[rid]["label"] == names[r]
        assert rows[rid]["status"] == ("error" if r in (BAD, NULL) else "ok"), rid
    assert rows[expected_ids[NULL]]["error"] == "the image is null"
    again = audit(saved, out=out, resume=True)
    assert again.processed == 0 and again.message.startswith("nothing to do")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["rows"] == N


def test_columns_chosen_by_option_and_named_when_missing(tmp_path):
    images, _ = pixels(3)
    features = datasets.Features(
        {
            "a": datasets.Image(),
            "b": datasets.Image(),
            "caption": datasets.Value("string"),
            "n": datasets.Value("int64"),
        }
    )
    flipped = [img[::-1] for img in images]
    rows = {"a": list(images), "b": flipped, "caption": ["p", "q", "r"], "n": [1, 2, 3]}
    datasets.Dataset.from_dict(rows, features=features).to_parquet(tmp_path / "two.parquet")
    with pytest.raises(ValueError, match=r"two.parquet: several Image columns \['a', 'b'\]"):
        open_source(tmp_path / "two.parquet", EXPECTED, OPTIONS)
    chosen = ReadOptions(threads=1, image_column="b", label_column="caption")
    recs = list(open_source(tmp_path / "two.parquet", EXPECTED, chosen).read(lambda i, r: True))
    assert [r.label for r in recs] == ["p", "q", "r"]
    np.testing.assert_array_equal(recs[1].image, images[1][::-1])
    with pytest.raises(ValueError, match=r"no label column 'labels'; the columns are \['a', 'b'"):
        missing = ReadOptions(threads=1, image_column="a", label_column="labels")
        open_source(tmp_path / "two.parquet", EXPECTED, missing)
    wrong = ReadOptions(threads=1, image_column="n")
    with pytest.raises(ValueError, match="image column 'n' is int64, not image bytes"):
        open_source(tmp_path / "two.parquet", EXPECTED, wrong)


def test_an_image_kept_as_a_path_is_read_from_disk(tmp_path, monkeypatch):
    images, _ = pixels(2)
    for k, name in enumerate(("zero.png", "gone.png")):
        Image.fromarray(images[k]).save(tmp_path / name)
    monkeypatch.chdir(tmp_path)  # datasets keeps relative paths as they are
    features = datasets.Features({"image": datasets.Image()})
    datasets.Dataset.from_dict({"image": ["zero.png", "gone.png"]}, features=features).to_parquet(
        tmp_path / "paths.parquet"
    )
    assert pq.read_table(tmp_path / "paths.parquet")["image"][0].as_py() == {
        "bytes": None,
        "path": "zero.png",
    }
    (tmp_path / "gone.png").unlink()
    monkeypatch.chdir(tmp_path.parent)  # relative paths are read from the file's folder
    ok, gone = open_source(tmp_path / "paths.parquet", EXPECTED, OPTIONS).read(lambda i, r: True)
    np.testing.assert_array_equal(ok.image, images[0])
    assert ok.label is None and gone.image is None and "gone.png" in gone.error


def test_damaged_files_are_error_rows(tmp_path):
    ds = dataset()
    ds.to_parquet(tmp_path / "good.parquet", batch_size=4)
    data = (tmp_path / "good.parquet").read_bytes()
    (tmp_path / "cut.parquet").write_bytes(data[: len(data) // 2])  # no footer
    meta = pq.ParquetFile(tmp_path / "good.parquet").metadata
    page = meta.row_group(1).column(0).data_page_offset  # row group 1's image page header
    flipped = bytearray(data)
    flipped[page : page + 24] = bytes(b ^ 0x5A for b in flipped[page : page + 24])
    (tmp_path / "flip.parquet").write_bytes(bytes(flipped))
    src = open_source(str(tmp_path / "*.parquet"), EXPECTED, OPTIONS)
    assert src.shards == [0] + [1] * N + [2] * N  # cut, flip, good (sorted names)
    errors = {r.id: r.error for r in src.read(lambda i, rid: True) if r.error is not None}
    assert errors.pop("\\!cut.parquet:unreadable").startswith("cannot read cut.parquet: ")
    for r in (4, 5, 6, 7):  # the damaged row group's rows
        assert errors.pop(f"flip.parquet:{r}").startswith("cannot read row group 1 of flip")
    assert sorted(errors) == [f"flip.parquet:{NULL}", f"good.parquet:{BAD}", f"good.parquet:{NULL}"]
    # an Arrow stream cut inside its second batch: read up to the damage
    ds.save_to_disk(tmp_path / "saved", num_shards=1)
    arrow = tmp_path / "saved" / "data-00000-of-00001.arrow"
    blob = arrow.read_bytes()
    (tmp_path / "cut.arrow").write_bytes(blob[: len(blob) - 200])
    recs = list(open_source(tmp_path / "cut.arrow", EXPECTED, OPTIONS).read(lambda i, r: True))
    assert recs[-1].id.startswith("\\!cut.arrow:damaged-after-row-")
    assert "is damaged after row" in recs[-1].error


def test_a_dataset_dict_names_its_splits(tmp_path):
    ds = dataset()
    datasets.DatasetDict({"train": ds, "test": ds}).save_to_disk(tmp_path / "dd")
    with pytest.raises(ValueError, match=r"holds a DatasetDict \(splits \['test', 'train'\]\)"):
        open_source(tmp_path / "dd", EXPECTED, OPTIONS)


@pytest.mark.slow
def test_two_processes_read_whole_shards(tmp_path):
    saved = tmp_path / "saved"
    dataset().save_to_disk(saved, num_shards=3)
    out = tmp_path / "store"
    args = [str(saved), "--out", str(out), "--batch-size", "4", "--image-column", "img"]
    results = audit_processes([*args, "--label-column", "category"], 2)
    for rc, text in results:
        assert rc == 0, text[-3000:]
    owners = ids_by_process(out)
    shard = lambda rid: int(rid.split(":")[0][len("data-") :][:5])  # noqa: E731
    assert {shard(rid) for rid in owners[0]} == {0, 2} and {shard(rid) for rid in owners[1]} == {1}
    rows = rows_by_id(out)
    assert len(rows) == N and sum(r["status"] == "error" for r in rows.values()) == 2
    config = json.loads((out / "manifest.json").read_text())["config"]
    assert config["image_column"] == "img" and config["label_column"] == "category"
