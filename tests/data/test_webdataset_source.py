"""WebDataset tar shards written by ``webdataset``, audited with the bundled model through
`tarfile` alone: any image extension per key, labels from ``.cls``/``.txt``/``.json``, ids
``<shard>:<key>``, damaged members and shards as error rows, resume, and processes that read
whole shards."""

from __future__ import annotations

import io
import tarfile

import numpy as np
import pytest
from loopback_audit import audit_processes, ids_by_process
from PIL import Image

from fastfem import sample
from fastfem.audit import ResultStore, audit
from fastfem.data.records import ReadOptions
from fastfem.data.sources import open_source

wds = pytest.importorskip("webdataset")

EXPECTED = (64, 64, 3)
N = 12
FORMATS = ("png", "webp", "png", "jpg")  # lossless but the JPEGs
OPTIONS = ReadOptions(threads=2)


def pixels(n: int = N) -> tuple[np.ndarray, list[int]]:
    s = sample.generate("test", n=n)
    return np.clip(np.rint(s.images * 255), 0, 255).astype(np.uint8), [int(y) for y in s.labels]


def encoded(img: np.ndarray, ext: str) -> bytes:
    buf = io.BytesIO()
    kind = {"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}[ext]
    Image.fromarray(img).save(buf, format=kind, **({"lossless": True} if ext == "webp" else {}))
    return buf.getvalue()


def write_shards(folder, n: int = N, per_shard: int = 4) -> list[str]:
    """``shard-00000k.tar`` with ``per_shard`` samples each (``webdataset.ShardWriter``): the
    image under a varying extension, the class index as ``.cls``, a ``.json`` with the name."""
    images, labels = pixels(n)
    folder.mkdir(exist_ok=True)
    with wds.ShardWriter(str(folder / "shard-%06d.tar"), maxcount=per_shard, verbose=0) as w:
        for i, (img, y) in enumerate(zip(images, labels, strict=True)):
            ext = FORMATS[i % len(FORMATS)]
            meta = {"name": sample.CLASS_NAMES[y], "label": y}
            w.write({"__key__": f"s{i:04d}", ext: encoded(img, ext), "cls": y, "json": meta})
    return sorted(p.name for p in folder.glob("shard-*.tar"))


def rows_by_id(out) -> dict[str, dict]:
    rows = ResultStore(out).read_rows()
    return {rid: {c: rows[c][i] for c in rows} for i, rid in enumerate(rows["id"])}


def key_id(i: int, per_shard: int = 4) -> str:
    return f"shard-{i // per_shard:06d}.tar:s{i:04d}"


def test_shards_read_with_any_image_extension_and_class_labels(tmp_path):
    assert write_shards(tmp_path / "w") == [f"shard-{k:06d}.tar" for k in range(3)]
    src = open_source(str(tmp_path / "w" / "shard-*.tar"), EXPECTED, OPTIONS)
    assert src.ids == [key_id(i) for i in range(N)]
    assert src.shards == [0] * 4 + [1] * 4 + [2] * 4
    images, labels = pixels()
    recs = list(src.read(lambda i, rid: True))
    assert [r.label for r in recs] == [str(y) for y in labels]  # .cls wins
    for i, (r, img) in enumerate(zip(recs, images, strict=True)):
        if FORMATS[i % len(FORMATS)] == "jpg":
            assert r.image.shape == img.shape and np.abs(r.image - img.astype(int)).mean() < 8
        else:
            np.testing.assert_array_equal(r.image, img)
    by_name = ReadOptions(threads=1, label_field="name")  # a field alone: the JSON's
    second = open_source(tmp_path / "w" / "shard-000001.tar", EXPECTED, by_name)
    assert second.ids == [key_id(i) for i in range(4, 8)]  # one shard: the same ids
    named = [r.label for r in second.read(lambda i, rid: True)]
    assert named == [sample.CLASS_NAMES[y] for y in labels[4:8]]


def test_damaged_members_and_shards_are_error_rows(tmp_path):
    images, _ = pixels(6)
    path = tmp_path / "mixed.tar"
    with wds.TarWriter(str(path)) as w:
        w.write({"__key__": "good", "png": encoded(images[0], "png"), "txt": "cat"})
        w.write({"__key__": "bytes", "jpg": b"\xff\xd8 not a jpeg", "cls": 1})
        w.write({"__key__": "nolabel", "webp": encoded(images[1], "webp")})
        w.write({"__key__": "noimage", "cls": 2})
        w.write(
            {
                "__key__": "twoimages",
                "png": encoded(images[2], "png"),
                "jpg": encoded(images[3], "jpg"),
                "cls": 0,
            }
        )
        w.write({"__key__": "badjson", "png": encoded(images[4], "png"), "json": "{oops"})
    recs = {r.id: r for r in open_source(path, EXPECTED, OPTIONS).read(lambda i, rid: True)}
    assert list(recs) == [
        f"mixed.tar:{k}" for k in ("good", "bytes", "nolabel", "noimage", "twoimages", "badjson")
    ]
    assert recs["mixed.tar:good"].label == "cat" and recs["mixed.tar:good"].error is None
    assert recs["mixed.tar:nolabel"].label is None and recs["mixed.tar:nolabel"].error is None
    assert "cannot decode image" in recs["mixed.tar:bytes"].error
    assert recs["mixed.tar:bytes"].label == "1"
    assert recs["mixed.tar:noimage"].error.startswith("no image member (members: .cls)")
    assert recs["mixed.tar:twoimages"].error.startswith("several image members (members: ")
    assert "Expecting property name" in recs["mixed.tar:badjson"].error
    chosen = ReadOptions(threads=1, image_column="jpg")  # the extension names the member
    (twice,) = open_source(path, EXPECTED, chosen).read(lambda i, rid: rid.endswith("twoimages"))
    assert twice.error is None and twice.label == "0"

    # shards cut inside a member, cut at a header, with a broken header, and no tar at all
    write_shards(tmp_path / "w", n=4)
    data = (tmp_path / "w" / "shard-000000.tar").read_bytes()
    with tarfile.open(tmp_path / "w" / "shard-000000.tar") as tar:
        members = {m.name: m for m in tar.getmembers()}
    at = members["s0002.cls"].offset  # the third sample's first header
    image = members["s0002.png"]
    damaged = {
        "cut_data": data[: image.offset_data + 100],
        "cut_header": data[:at],
        "bad_header": data[: at + 150] + b"\xff" + data[at + 151 :],
        "not_a_tar": b"hello" * 200,
    }
    for name, blob in damaged.items():
        (tmp_path / f"{name}.tar").write_bytes(blob)
    src = open_source([tmp_path / f"{n}.tar" for n in damaged], EXPECTED, OPTIONS)
    assert src.shards == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 3]
    recs = list(src.read(lambda i, rid: True))
    errors = {r.id: r.error for r in recs if r.error is not None}
    assert errors.pop("cut_data.tar:s0002") == f"member cut short: 100 of {image.size} bytes"
    after = image.offset_data + -(-image.size // 512) * 512  # where the next header was due
    assert "unexpected end of data" in errors.pop(f"\\!cut_data.tar:damaged-at-{after}")
    assert errors.pop(f"\\!cut_header.tar:damaged-at-{at}").endswith(
        f"ends without the end-of-archive marker (cut short?) at byte {at}; the rest is not read"
    )
    assert "has a damaged member header" in errors.pop(f"\\!bad_header.tar:damaged-at-{at}")
    assert "cannot read tar not_a_tar.tar" in errors.pop("\\!not_a_tar.tar:unreadable")
    assert errors == {}  # the samples before each damage are read
    assert sum(r.error is None for r in recs) == 2 * 3


def test_audit_labels_and_resume(tmp_path):
    write_shards(tmp_path / "w")
    out = tmp_path / "store"
    partial = audit(tmp_path / "w" / "shard-000000.tar", out=out)  # one shard: a partial store
    assert (partial.ok, partial.errors) == (4, 0)
    glob = str(tmp_path / "w" / "*.tar")
    with pytest.raises(ValueError, match="another configuration"):  # other reading options
        audit(glob, out=out, resume=True, label_field="name")
    s = audit(glob, out=out, resume=True)  # the three shards complete it
    assert (s.ok, s.errors, s.skipped_already_committed) == (8, 0, 4)
    rows = rows_by_id(out)
    _, labels = pixels()
    assert sorted(rows) == sorted(key_id(i) for i in range(N))
    assert all(rows[key_id(i)]["label"] == str(y) for i, y in enumerate(labels))
    again = audit(glob, out=out, resume=True)
    assert again.processed == 0 and again.message.startswith("nothing to do")


@pytest.mark.slow
def test_two_processes_read_whole_shards(tmp_path):
    write_shards(tmp_path / "w", per_shard=3)  # 4 shards
    out = tmp_path / "store"
    args = [str(tmp_path / "w" / "*.tar"), "--out", str(out), "--batch-size", "4"]
    results = audit_processes([*args, "--label-column", "json", "--label-field", "name"], 2)
    for rc, text in results:
        assert rc == 0, text[-3000:]
    owners = ids_by_process(out)
    shard = lambda rid: int(rid.split(".tar:")[0][len("shard-") :])  # noqa: E731
    assert {shard(rid) for rid in owners[0]} == {0, 2} and {shard(rid) for rid in owners[1]} == {
        1,
        3,
    }
    rows = rows_by_id(out)
    _, labels = pixels()
    names = {key_id(i, 3): sample.CLASS_NAMES[y] for i, y in enumerate(labels)}
    assert {rid: r["label"] for rid, r in rows.items()} == names
    assert all(r["status"] == "ok" for r in rows.values())
