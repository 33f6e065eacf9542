"""TFRecords read without TensorFlow: CRC-32C against its definition and TensorFlow's writer,
``tf.train.Example`` parsed like TensorFlow parses it, damaged files audited up to the damage
(one error row with the offset), shards by glob, ids that are not UTF-8."""

from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from PIL import Image

from fastfem.audit import ResultStore, audit
from fastfem.data.crc32c import crc32c, masked_crc32c
from fastfem.data.sources import open_source
from fastfem.data.tfrecord import ExampleError, parse_example, scan_records

tf = pytest.importorskip("tensorflow")

EXPECTED = (64, 64, 3)
RNG = np.random.default_rng(0)


def crc32c_bitwise(data: bytes) -> int:
    """CRC-32C from its definition: reflected polynomial 0x82F63B78, bit by bit."""
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


@pytest.mark.parametrize("n", [0, 1, 3, 4, 5, 255, 256, 257, 511, 513, 4099, 20_000, 70_001])
def test_crc32c_matches_its_definition(n):
    data = RNG.integers(0, 256, n, dtype=np.uint8).tobytes()
    assert crc32c(data) == crc32c_bitwise(data)


def test_crc32c_check_value():
    assert crc32c(b"123456789") == 0xE3069283


def png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def feature_bytes(v: bytes):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v]))


def example(image: bytes | None, rid: bytes | None = None, **extra) -> bytes:
    feats = {} if image is None else {"image": feature_bytes(image)}
    if rid is not None:
        feats["id"] = feature_bytes(rid)
    feats.update(extra)
    return tf.train.Example(features=tf.train.Features(feature=feats)).SerializeToString()


def write_records(path, records: list[bytes]) -> list[int]:
    """Write with TensorFlow's writer; returns each record's start offset and the end."""
    with tf.io.TFRecordWriter(str(path)) as w:
        for r in records:
            w.write(r)
    offsets = [0]
    for r in records:
        offsets.append(offsets[-1] + 12 + len(r) + 4)
    assert path.stat().st_size == offsets[-1]
    return offsets


def test_tensorflow_files_verify_and_parse_like_tensorflow(tmp_path):
    recs = [
        example(
            png(RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8)),
            f"id-{i}".encode(),
            floats=tf.train.Feature(float_list=tf.train.FloatList(value=[0.5, -2.25, i])),
            ints=tf.train.Feature(int64_list=tf.train.Int64List(value=[-1, 2**40, i])),
            multi=tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"a", b"", b"c"])),
        )
        for i in range(5)
    ]
    offsets = write_records(tmp_path / "x.tfrecord", recs)
    raw = (tmp_path / "x.tfrecord").read_bytes()
    assert struct.unpack("<I", raw[8:12])[0] == masked_crc32c(raw[:8])
    with open(tmp_path / "x.tfrecord", "rb") as f:
        frames = list(scan_records(f))
    assert [fr.offset for fr in frames] == offsets[:-1]
    assert all(fr.problem is None for fr in frames)
    for fr, rec in zip(frames, recs, strict=True):
        ref = tf.train.Example.FromString(rec).features.feature
        got = parse_example(fr.data)
        assert set(got) == set(ref)
        for name, feat in ref.items():
            kind, values = got[name]
            which = feat.WhichOneof("kind")
            assert kind == which.split("_")[0]
            if kind == "bytes":
                assert [fr.data[s:e] for s, e in values] == list(feat.bytes_list.value)
            elif kind == "float":
                np.testing.assert_array_equal(values, np.float32(feat.float_list.value))
            else:
                assert values == list(feat.int64_list.value)


def test_malformed_examples_raise_example_error():
    good = example(b"xyz", b"a")
    for bad in (good[:-2], b"\x0a\xff\xff\xff\xff\x0f", b"\x0f"):
        with pytest.raises(ExampleError):
            parse_example(bad)


def images(n: int) -> list[np.ndarray]:
    return [RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(n)]


def rows_by_id(out) -> dict[str, dict]:
    rows = ResultStore(out).read_rows()
    return {rid: {c: rows[c][i] for c in rows} for i, rid in enumerate(rows["id"])}


def test_damaged_tfrecords_are_audited_up_to_the_damage(tmp_path):
    recs = [example(png(img)) for img in images(6)]
    good = tmp_path / "good.tfrecord"
    offsets = write_records(good, recs)
    data = good.read_bytes()
    # the attacks: cut short (inside a header, inside data), a flipped byte in a header, in
    # the data, in a data checksum
    cut_header, cut_data = offsets[3] + 5, offsets[4] + 40
    damaged = {
        "cut_header": data[:cut_header],
        "cut_data": data[:cut_data],
        "flip_header": _flip(data, offsets[2] + 3),
        "flip_data": _flip(data, offsets[3] + 12 + 30),
        "flip_crc": _flip(data, offsets[5] - 2),
    }
    for name, blob in damaged.items():
        (tmp_path / f"{name}.tfrecord").write_bytes(blob)
    with pytest.raises(tf.errors.DataLossError):  # TensorFlow's own reader stops here
        list(tf.data.TFRecordDataset(str(tmp_path / "cut_data.tfrecord")))

    paths = [tmp_path / f"{name}.tfrecord" for name in ("good", *damaged)]
    s = audit(paths, out=tmp_path / "out")
    rows = rows_by_id(tmp_path / "out")
    expected_ok = {
        "good": range(6),
        "cut_header": range(3),
        "cut_data": range(4),
        "flip_header": range(2),
        "flip_data": [0, 1, 2, 4, 5],
        "flip_crc": [0, 1, 2, 3, 5],
    }
    for name, ok in expected_ok.items():
        for i in ok:
            assert rows[f"{name}.tfrecord:{i}"]["status"] == "ok", (name, i)
    damage = {rid: r["error"] for rid, r in rows.items() if r["status"] == "error"}
    assert damage == {  # damaged records have reserved ids (`fastfem.data.ids.reserved_id`)
        f"\\!cut_header.tfrecord:damaged-at-{offsets[3]}": _any("truncated", f"byte {offsets[3]}"),
        f"\\!cut_data.tfrecord:damaged-at-{offsets[4]}": _any("truncated", f"byte {offsets[4]}"),
        f"\\!flip_header.tfrecord:damaged-at-{offsets[2]}": _any("length checksum fails"),
        "\\!flip_data.tfrecord:3": _any("data checksum fails", f"byte {offsets[3]}"),
        "\\!flip_crc.tfrecord:4": _any("data checksum fails", f"byte {offsets[4]}"),
    }
    assert s.ok == 6 + 3 + 4 + 2 + 5 + 5 and s.errors == 5 and len(rows) == s.ok + s.errors


class _any(str):
    """A string that equals any text containing all of ``parts``."""

    def __new__(cls, *parts):
        obj = super().__new__(cls, " & ".join(parts))
        obj.parts = parts
        return obj

    def __eq__(self, other):
        return isinstance(other, str) and all(p in other for p in self.parts)

    __hash__ = str.__hash__


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x5A]) + data[at + 1 :]


def test_shards_by_glob_with_common_feature_names(tmp_path):
    imgs = images(6)
    for k in range(3):
        recs = [
            example(
                None,
                None,
                **{
                    "image/encoded": feature_bytes(png(img)),
                    "image/class/label": tf.train.Feature(int64_list=tf.train.Int64List(value=[k])),
                },
            )
            for img in imgs[2 * k : 2 * k + 2]
        ]
        write_records(tmp_path / f"train-{k:05d}-of-00003.tfrecord", recs)
    src = open_source(str(tmp_path / "train-*.tfrecord"), EXPECTED)
    assert src.ids[:3] == [
        "train-00000-of-00003.tfrecord:0",
        "train-00000-of-00003.tfrecord:1",
        "train-00001-of-00003.tfrecord:0",
    ]
    assert src.shards == [0, 0, 1, 1, 2, 2]
    recs = list(src.read(lambda i, rid: True))
    assert [r.label for r in recs] == ["0", "0", "1", "1", "2", "2"]
    for r, img in zip(recs, imgs, strict=True):
        np.testing.assert_array_equal(r.image, img)
    # an image-less record is one error row, not the end of the file
    write_records(tmp_path / "noimage.tfrecord", [example(None, b"lonely")])
    (rec,) = open_source(tmp_path / "noimage.tfrecord", EXPECTED).read(lambda i, rid: True)
    assert "no image or image/encoded bytes feature" in rec.error


def test_non_utf8_and_repeated_tfrecord_ids(tmp_path):
    imgs = images(2)
    write_records(
        tmp_path / "a.tfrecord", [example(png(imgs[0]), b"caf\xe9"), example(png(imgs[1]), b"x")]
    )
    src = open_source(tmp_path / "a.tfrecord", EXPECTED)
    assert src.ids == ["caf\\xe9", "x"]
    first = next(iter(src.read(lambda i, rid: True)))
    assert first.raw_id == b"caf\xe9" and first.error is None
    assert audit(tmp_path / "a.tfrecord", out=tmp_path / "out").ok == 2
    write_records(tmp_path / "dup.tfrecord", [example(png(imgs[0]), b"same")] * 2)
    with pytest.raises(ValueError, match=r"ids are not unique: \['same'\]"):
        open_source(tmp_path / "dup.tfrecord", EXPECTED)


def test_a_damaged_record_never_takes_a_real_id(tmp_path):
    """Ids "1".."40" with the data of record 4 damaged: the damage is a reserved id (never the
    index "4", which is a real id), so the 39 good records are audited."""
    imgs = images(40)
    recs = [example(png(img), str(i + 1).encode()) for i, img in enumerate(imgs)]
    path = tmp_path / "ids.tfrecord"
    offsets = write_records(path, recs)
    path.write_bytes(_flip(path.read_bytes(), offsets[4] + 12 + 30))
    src = open_source(path, EXPECTED)
    assert len(set(src.ids)) == 40 and "4" in src.ids and "\\!ids.tfrecord:4" in src.ids
    rows = list(src.read(lambda i, rid: True))
    errors = {r.id: r.error for r in rows if r.error is not None}
    assert (
        list(errors) == ["\\!ids.tfrecord:4"]
        and "data checksum fails" in errors["\\!ids.tfrecord:4"]
    )
    good = [r for r in rows if r.error is None]
    assert sorted(int(r.id) for r in good) == [i for i in range(1, 41) if i != 5]
    # a record without an id among records with ids takes a reserved id too
    write_records(tmp_path / "mixed.tfrecord", [example(png(imgs[0]), b"0"), example(png(imgs[1]))])
    assert open_source(tmp_path / "mixed.tfrecord", EXPECTED).ids == ["0", "\\!mixed.tfrecord:1"]
    # ... while a file without ids keeps its index ids
    write_records(tmp_path / "plain.tfrecord", [example(png(imgs[0])), example(png(imgs[1]))])
    assert open_source(tmp_path / "plain.tfrecord", EXPECTED).ids == ["0", "1"]


def test_reserved_ids_never_equal_an_escaped_id():
    from fastfem.data.ids import is_reserved, readable_id, reserved_id

    for text in ["\\!a:4", "\\\\!a:4", "!a:4", "\\x21a", "a\udce9"]:
        assert not is_reserved(readable_id(text)), text
    assert reserved_id("a.tfrecord", 4) == "\\!a.tfrecord:4" and is_reserved(reserved_id("x", 1))
