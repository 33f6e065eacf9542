"""Fuzzing the audit's inputs (seeded, a few seconds): valid files of every allowed format with
flipped, overwritten, inserted and cut bytes, and TFRecords cut short or with a flipped byte.
The audit always exits 0 with exactly one row per input."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from PIL import Image

from fastfem.audit import ResultStore
from fastfem.cli import main
from fastfem.data.decode import ALLOWED_FORMATS

SEED = 20261124
MUTANTS_PER_FILE = 14
RNG = np.random.default_rng(SEED)


def valid_files() -> dict[str, bytes]:
    """One small valid file per allowed format (and a few variants of the risky ones)."""
    rgb = Image.fromarray(RNG.integers(0, 256, (40, 56, 3), dtype=np.uint8))
    out = {}
    for fmt in ALLOWED_FORMATS:
        buf = io.BytesIO()
        rgb.save(buf, format=fmt)
        out[f"base.{fmt.lower()}"] = buf.getvalue()
    variants = {
        "lzw.tiff": (rgb, "TIFF", {"compression": "tiff_lzw"}),
        "deep.png": (Image.fromarray(RNG.integers(0, 65536, (40, 56), dtype=np.uint16)), "PNG", {}),
        "progressive.jpeg": (rgb, "JPEG", {"progressive": True}),
        "alpha.webp": (rgb.convert("RGBA"), "WEBP", {"lossless": True}),
    }
    for name, (img, fmt, kw) in variants.items():
        buf = io.BytesIO()
        img.save(buf, format=fmt, **kw)
        out[name] = buf.getvalue()
    return out


def mutate(data: bytes, rng: np.random.Generator) -> bytes:
    """One random corruption: flipped bytes, an overwritten run, inserted bytes or a cut."""
    b = bytearray(data)
    kind = rng.integers(4)
    if kind == 0:
        for at in rng.integers(0, len(b), rng.integers(1, 4)):
            b[at] ^= int(rng.integers(1, 256))
    elif kind == 1:
        at = int(rng.integers(0, len(b)))
        run = rng.integers(0, 256, int(rng.integers(1, 16)), dtype=np.uint8).tobytes()
        b[at : at + len(run)] = run
    elif kind == 2:
        at = int(rng.integers(0, len(b)))
        b[at:at] = rng.integers(0, 256, int(rng.integers(1, 16)), dtype=np.uint8).tobytes()
    else:
        del b[int(rng.integers(0, len(b))) :]
    return bytes(b)


def audit_rows(source: list[str], out, fit: str = "crop") -> dict[str, str]:
    code = main(["audit", *source, "--fit", fit, "--quiet", "--threads", "2", "--out", str(out)])
    assert code == 0
    rows = ResultStore(out).read_rows()
    return dict(zip(rows["id"], rows["status"], strict=True))


@pytest.mark.slow
def test_fuzzed_image_files_each_give_one_row(tmp_path):
    start = time.perf_counter()
    folder = tmp_path / "fuzz"
    folder.mkdir()
    names = []
    for name, data in valid_files().items():
        stem, ext = name.rsplit(".", 1)
        for k in range(MUTANTS_PER_FILE):
            path = folder / f"{stem}-{k:02d}.{ext}"
            path.write_bytes(mutate(data, RNG))
            names.append(path.name)
        (folder / name).write_bytes(data)
        names.append(name)
    status = audit_rows([str(folder)], tmp_path / "out")
    assert sorted(status) == sorted(names)
    for name in valid_files():  # the intact originals are read
        assert status[name] == "ok", name
    assert time.perf_counter() - start < 60


def tfrecord_of(path, n: int) -> tuple[bytes, list[int]]:
    """A valid TFRecord of ``n`` examples (written by TensorFlow) and its record offsets."""
    tf = pytest.importorskip("tensorflow")
    offsets = [0]
    with tf.io.TFRecordWriter(str(path)) as w:
        for _ in range(n):
            buf = io.BytesIO()
            Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "PNG")
            feat = tf.train.Feature(bytes_list=tf.train.BytesList(value=[buf.getvalue()]))
            features = tf.train.Features(feature={"image": feat})
            rec = tf.train.Example(features=features).SerializeToString()
            w.write(rec)
            offsets.append(offsets[-1] + 16 + len(rec))
    return path.read_bytes(), offsets


def rows_expected(offsets: list[int], cut: int | None = None, flip: int | None = None) -> int:
    """Rows of a damaged file: the records before the damage, then one row for the damage
    (a damaged data section is the record's own row; the file goes on)."""
    n = len(offsets) - 1
    if cut is not None:
        whole = sum(end <= cut for end in offsets[1:])
        return whole if cut == offsets[whole] else whole + 1
    k = max(i for i in range(n) if offsets[i] <= flip)
    return k + 1 if flip - offsets[k] < 12 else n


@pytest.mark.slow
def test_fuzzed_tfrecords_each_give_their_rows(tmp_path):
    data, offsets = tfrecord_of(tmp_path / "valid.tfrecords.bin", 5)
    paths, expected = [], {}
    for k in range(12):
        path = tmp_path / f"shard-{k:02d}.tfrecord"
        if k % 2:
            at = int(RNG.integers(0, len(data)))
            path.write_bytes(
                data[:at] + bytes([data[at] ^ int(RNG.integers(1, 256))]) + data[at + 1 :]
            )
            expected[path.name] = rows_expected(offsets, flip=at)
        else:
            cut = int(RNG.integers(0, len(data)))
            path.write_bytes(data[:cut])
            expected[path.name] = rows_expected(offsets, cut=cut)
        paths.append(str(path))
    status = audit_rows(paths, tmp_path / "out", fit="error")
    per_file = {name: 0 for name in expected}
    for rid in status:
        per_file[rid.removeprefix("\\!").split(":")[0]] += 1  # damage: a reserved id
    assert per_file == expected


# ------------------------------------------------------------------------ the store's own files

STORE_TARGETS = (
    "parts/part-p000-000000.parquet",
    "parts/part-p000-000001.parquet",
    "maps/maps-p000-000001.npy",
    "manifest.json",
    "audit.lock",
    "flags.parquet",
    "clusters.parquet",
    "report.html",
)
ATTACKS = ("random", "mutate", "empty", "symlink", "folder")


def attack(path, kind: str, victim, rng: np.random.Generator) -> None:
    """Replace the store file ``path`` by random bytes, a mutant of itself, nothing, a link to
    ``victim`` (outside the store) or a folder."""
    old = path.read_bytes() if path.is_file() else b""
    if path.exists() or path.is_symlink():
        path.unlink()
    if kind == "random":
        path.write_bytes(rng.integers(0, 256, int(rng.integers(1, 4096)), np.uint8).tobytes())
    elif kind == "mutate":
        path.write_bytes(mutate(old or b"{}", rng))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "symlink":
        path.symlink_to(victim)
    else:
        path.mkdir()
        (path / "inside").write_bytes(b"x")


def _ran(argv: list[str], capsys) -> int:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code in (0, 2), (argv, code, err)
    if code:  # refused: one line, never a traceback
        assert err.count("\n") == 0 and "Traceback" not in err, err
    return code


@pytest.mark.slow
def test_fuzzed_store_contents_work_or_refuse_in_one_line(tmp_path, capsys):
    """Random bytes, mutants, empty files, links out of the store and folders at each file of
    a store (parts, maps, manifest, lock, flags, clusters, report): ``--resume`` and ``report``
    each work or refuse in one line; a file outside the store stays byte-identical and nothing
    is written beside the store."""
    import shutil

    from fastfem import sample

    rng = np.random.default_rng(SEED + 1)
    np.save(tmp_path / "x.npy", sample.generate("test", n=24).images)
    base = tmp_path / "base"
    audit = ["audit", str(tmp_path / "x.npy"), "--batch-size", "8", "--part-size", "8", "--quiet"]
    assert main([*audit, "--out", str(base)]) == 0 and main(["report", str(base)]) == 0
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "victim.txt"
    victim.write_bytes(b"outside the store\n")
    start = time.perf_counter()
    outcomes = []
    for k in range(12):
        case = tmp_path / f"case{k:02d}"
        out = case / "s"
        shutil.copytree(base, out)
        target = STORE_TARGETS[k % len(STORE_TARGETS)]
        kind = ATTACKS[int(rng.integers(len(ATTACKS)))]
        attack(out / target, kind, victim, rng)
        first = _ran(["report", str(out)], capsys)  # the damaged store as it is
        resumed = _ran([*audit, "--resume", "--out", str(out)], capsys)
        reported = _ran(["report", str(out)], capsys)
        outcomes.append((target, kind, first, resumed, reported))
        assert victim.read_bytes() == b"outside the store\n", (target, kind)
        assert sorted(p.name for p in outside.iterdir()) == ["victim.txt"], (target, kind)
        assert [p.name for p in case.iterdir()] == ["s"], (target, kind)
    assert any(o[3] == 0 for o in outcomes) and any(o[4] == 0 for o in outcomes)
    assert time.perf_counter() - start < 120, outcomes
