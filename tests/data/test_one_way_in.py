"""One TFRecord file read by ``fastfem explain``, ``evaluate`` and ``audit``: the three read it
through `fastfem.data.sources` and give the same maps (and metrics) for the same rows."""

import csv
import io
import json
import struct

import numpy as np
from PIL import Image

import fastfem
from fastfem import sample
from fastfem.audit import ResultStore
from fastfem.cli import main
from fastfem.data.crc32c import masked_crc32c

LOC = ["pointing_game", "energy_pointing_game", "iou"]


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def example(features: dict[str, bytes]) -> bytes:
    """A ``tf.train.Example`` of bytes features, encoded by hand (Example.features = 1,
    Features.feature = 1 (map entry: key 1, value 2), Feature.bytes_list = 1, BytesList.value
    = 1)."""
    entries = b"".join(
        _field(1, _field(1, k.encode()) + _field(2, _field(1, _field(1, v))))
        for k, v in features.items()
    )
    return _field(1, entries)


def write_tfrecord(path, records: list[bytes]) -> None:
    """TFRecord framing: length (u64), its masked CRC-32C, the data, its masked CRC-32C."""
    with open(path, "wb") as f:
        for r in records:
            head = struct.pack("<Q", len(r))
            f.write(head + struct.pack("<I", masked_crc32c(head)))
            f.write(r + struct.pack("<I", masked_crc32c(r)))


def png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def test_one_tfrecord_gives_the_same_maps_in_explain_evaluate_and_audit(tmp_path):
    s = sample.generate("test", n=6)
    pixels = np.round(s.images * 255).astype(np.uint8)
    ids = [f"img-{i}" for i in range(len(pixels))]
    records = [
        example({"image": png(p), "id": i.encode()}) for p, i in zip(pixels, ids, strict=True)
    ]
    path = tmp_path / "six.tfrecord"
    write_tfrecord(path, records)
    boxes = s.boxes.astype(np.float32)
    np.save(tmp_path / "boxes.npy", boxes)
    with open(tmp_path / "boxes.csv", "w", newline="") as f:
        csv.writer(f).writerows(
            [("id", "x0", "y0", "x1", "y1")] + [(i, *b) for i, b in zip(ids, s.boxes, strict=True)]
        )
    src, quiet = str(path), "--quiet"

    assert main(["explain", src, quiet, "--out", str(tmp_path / "e")]) == 0
    assert json.loads((tmp_path / "e" / "ids.json").read_text()) == ids
    explained = np.load(tmp_path / "e" / "maps.npy")[..., 0]

    assert (
        main(
            [
                "audit",
                src,
                quiet,
                "--boxes",
                str(tmp_path / "boxes.csv"),
                "--out",
                str(tmp_path / "a"),
            ]
        )
        == 0
    )
    store = ResultStore(tmp_path / "a")
    rows, stored = store.read_rows(), store.read_maps()
    order = [list(rows["id"]).index(i) for i in ids]
    fem = fastfem.FEM(str(sample.MODEL_PATH))
    audited = np.asarray(fem.resize_maps(stored[order], (64, 64)))
    np.testing.assert_allclose(audited, explained, atol=1e-5)

    metrics = ",".join(LOC)
    args = [
        "--boxes",
        str(tmp_path / "boxes.npy"),
        "--metrics",
        metrics,
        "--out",
        str(tmp_path / "v"),
    ]
    assert main(["evaluate", src, quiet, *args]) == 0
    with open(tmp_path / "v" / "per_sample.csv", newline="") as f:
        scored = list(csv.DictReader(f))
    assert [r["id"] for r in scored] == ids
    for m in LOC:
        got = np.array([float(r[m]) for r in scored])
        np.testing.assert_allclose(got, rows[m][order], atol=1e-5, err_msg=m)
    # the pixels every verb read are the PNGs' (exact 8-bit values)
    direct = fem.explain(pixels.astype(np.float32) / 255.0)[..., 0]
    np.testing.assert_allclose(explained, direct, atol=1e-6)


def test_the_bundled_sample_is_one_opener():
    """No source is the bundled sample's test split, for the audit, the CLI and the report."""
    from fastfem.audit.report.page import images_by_id
    from fastfem.data.sources import open_source, read_images

    s = sample.generate("test", n=5)
    src = open_source(None, (64, 64, 3))
    assert src.ids[:5] == list(s.ids) and src.description.startswith("bundled sample")
    x, ids, labels, _ = read_images(None, (64, 64, 3), limit=5)
    np.testing.assert_array_equal(x, s.images)
    assert ids == list(s.ids) and labels == [sample.CLASS_NAMES[i] for i in s.labels]
    again = images_by_id("bundled:test", ids[3:], {"fit": "error"})
    np.testing.assert_array_equal(np.stack([again[i] for i in ids[3:]]), s.images[3:])
