"""Audit sources under attack: Latin-1 file names and lone-surrogate ids stored and resumed,
symlink loops and dangling links, special files, the bomb and PostScript in a folder, uint8
arrays scaled like PNG pixels, a photo collection of every mode with each fit, several folders."""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from hostile_files import EPS, bomb_png, huge_gray_png
from PIL import Image

from fastfem import sample
from fastfem.audit import ResultStore, audit
from fastfem.data.folders import walk_images
from fastfem.data.ids import id_and_raw, readable_id
from fastfem.data.records import ReadOptions, Source, process_of
from fastfem.data.sources import open_source

EXPECTED = (64, 64, 3)
RNG = np.random.default_rng(0)


def rows_by_id(out) -> dict[str, dict]:
    rows = ResultStore(out).read_rows()
    return {rid: {c: rows[c][i] for c in rows} for i, rid in enumerate(rows["id"])}


def write_png(path, arr: np.ndarray) -> None:
    Image.fromarray(arr).save(path, format="PNG")


def pixels(n: int = 1, size=(64, 64)) -> np.ndarray:
    return (RNG.random((n, *size, 3)) * 255).astype(np.uint8)


# ------------------------------------------------------------------------------------ ids


def test_escaped_ids_are_readable_unique_and_keep_their_bytes():
    assert readable_id("plain/name.png") == "plain/name.png"
    latin1 = os.fsdecode(b"caf\xe9.png")  # 'caf\udce9.png'
    assert readable_id(latin1) == "caf\\xe9.png"
    assert readable_id("caf\\xe9.png") == "caf\\\\xe9.png"  # a real backslash: its own id
    assert readable_id("a\ud800b") == "a\\ud800b"
    assert id_and_raw(latin1, file_name=True) == ("caf\\xe9.png", b"caf\xe9.png")
    assert id_and_raw("ok.png", file_name=True) == ("ok.png", None)
    names = [latin1, "caf\\xe9.png", "caf\\\\xe9.png", "café.png", "a\ud800", "a\\ud800"]
    ids = [readable_id(n) for n in names]
    assert len(set(ids)) == len(ids) and all(i.encode("utf-8") for i in ids)


def test_latin1_file_names_are_stored_and_resume(tmp_path):
    root = tmp_path / "photos"
    (root / "cls").mkdir(parents=True)
    imgs = pixels(4)
    raw_root = os.fsencode(root)
    names = [b"cls/caf\xe9.png", b"cls/caf\\xe9.png", b"\xff\xfe/x.png", b"plain.png"]
    for name, img in zip(names, imgs, strict=True):
        os.makedirs(os.path.dirname(os.path.join(raw_root, name)), exist_ok=True)
        with open(os.path.join(raw_root, name), "wb") as f:
            f.write(_png_bytes(img))
    src = open_source(root, EXPECTED)
    # sorted as the names are (a literal backslash before byte 0xE9, bytes >= 0x80 last)
    assert src.ids == ["cls/caf\\\\xe9.png", "cls/caf\\xe9.png", "plain.png", "\\xff\\xfe/x.png"]
    recs = {r.id: r for r in src.read(lambda i, rid: True)}
    assert recs["cls/caf\\xe9.png"].raw_id == b"cls/caf\xe9.png"
    assert recs["cls/caf\\\\xe9.png"].raw_id == b"cls/caf\\xe9.png"
    assert recs["\\xff\\xfe/x.png"].label == "\\xff\\xfe" and recs["plain.png"].raw_id is None
    assert all(r.error is None for r in recs.values())

    first = audit(root, out=tmp_path / "out")
    assert first.ok == 4 and first.errors == 0
    assert set(rows_by_id(tmp_path / "out")) == set(src.ids)
    again = audit(root, out=tmp_path / "out", resume=True)
    assert again.processed == 0 and again.skipped_already_committed == 4


def test_lone_surrogate_npz_ids_are_stored_and_resume(tmp_path):
    x = pixels(3)
    ids = np.array(["a\udce9", "b\ud800", "c"])
    np.savez(tmp_path / "x.npz", images=x, ids=ids)
    src = open_source(tmp_path / "x.npz", EXPECTED)
    assert src.ids == ["a\\xe9", "b\\ud800", "c"]
    recs = list(src.read(lambda i, rid: True))
    assert recs[0].raw_id == "a\udce9".encode("utf-8", "surrogatepass") and recs[2].raw_id is None
    s = audit(tmp_path / "x.npz", out=tmp_path / "out")
    assert s.ok == 3
    assert set(rows_by_id(tmp_path / "out")) == {"a\\xe9", "b\\ud800", "c"}
    assert audit(tmp_path / "x.npz", out=tmp_path / "out", resume=True).processed == 0


def _png_bytes(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


# ------------------------------------------------------------------------------- folders


def test_symlink_loops_list_each_file_once(tmp_path):
    root = tmp_path / "data"
    (root / "cls").mkdir(parents=True)
    for i, img in enumerate(pixels(3)):
        write_png(root / "cls" / f"{i}.png", img)
    os.symlink("..", root / "cls" / "up")  # the loop
    os.symlink("../cls", root / "cls" / "again")  # a second loop
    os.symlink(root, root / "self")
    outside = tmp_path / "outside"
    outside.mkdir()
    write_png(outside / "o.png", pixels(1)[0])
    os.symlink(outside, root / "linked")  # followed once
    os.symlink(outside, root / "linked_twice")  # the same folder: not again
    os.symlink(root / "cls" / "0.png", root / "file_link.png")  # a link to a file: listed
    os.symlink(tmp_path / "missing.png", root / "cls" / "dead.png")  # dangling
    start = time.perf_counter()
    entries = walk_images(root)
    assert time.perf_counter() - start < 5
    ids = [e.id for e in entries]
    assert ids == [
        "cls/0.png",
        "cls/1.png",
        "cls/2.png",
        "cls/dead.png",
        "file_link.png",
        "linked/o.png",
    ]
    dead = entries[3]
    assert dead.problem.startswith("dangling symbolic link to")
    s = audit(root, out=tmp_path / "out")
    rows = rows_by_id(tmp_path / "out")
    assert s.ok == 5 and s.errors == 1 and len(rows) == 6
    assert rows["cls/dead.png"]["status"] == "error"
    assert "dangling symbolic link" in rows["cls/dead.png"]["error"]


def test_special_files_and_unlistable_folders_are_error_rows(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    write_png(root / "ok.png", pixels(1)[0])
    os.mkfifo(root / "pipe.png")  # reading it would block forever
    locked = root / "locked"
    locked.mkdir()
    write_png(locked / "hidden.png", pixels(1)[0])
    locked.chmod(0)
    try:
        entries = {e.id: e for e in walk_images(root)}
        recs = {r.id: r for r in open_source(root, EXPECTED).read(lambda i, rid: True)}
    finally:
        locked.chmod(0o755)
    assert entries["pipe.png"].problem == "not a regular file (FIFO, device or socket)"
    assert recs["pipe.png"].error == entries["pipe.png"].problem
    assert recs["ok.png"].error is None
    if os.geteuid() != 0:  # root reads any folder
        assert recs["locked/"].error.startswith("cannot list folder")


def test_bomb_postscript_and_huge_png_in_a_folder_are_error_rows(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    for i, img in enumerate(pixels(2)):
        write_png(root / f"good{i}.png", img)
    (root / "bomb.png").write_bytes(bomb_png())
    (root / "postscript.png").write_bytes(EPS)
    (root / "huge.png").write_bytes(huge_gray_png())
    s = audit(root, out=tmp_path / "out", fit="crop")
    rows = rows_by_id(tmp_path / "out")
    assert s.ok == 2 and s.errors == 3 and len(rows) == 5
    assert "decompression bomb refused" in rows["bomb.png"]["error"]
    assert "not a readable PNG" in rows["postscript.png"]["error"]
    assert "pixel budget of 50,000,000" in rows["huge.png"]["error"]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["config"]["fit"] == "crop" and manifest["config"]["max_pixels"] == 50_000_000


def test_uint8_npz_and_the_same_png_pixels_give_identical_rows(tmp_path):
    s = sample.generate("test", n=10)
    u8 = np.clip(np.rint(s.images * 255), 0, 255).astype(np.uint8)
    folder = tmp_path / "png"
    folder.mkdir()
    for rid, img in zip(s.ids, u8, strict=True):
        write_png(folder / f"{rid}.png", img)
    np.savez(tmp_path / "u8.npz", images=u8, ids=np.array([f"{r}.png" for r in s.ids]))
    np.save(tmp_path / "f32.npy", u8.astype(np.float32) / np.float32(255))
    audit(folder, out=tmp_path / "a")
    audit(tmp_path / "u8.npz", out=tmp_path / "b")
    audit(tmp_path / "f32.npy", out=tmp_path / "c")
    a, b = rows_by_id(tmp_path / "a"), rows_by_id(tmp_path / "b")
    c = rows_by_id(tmp_path / "c")
    assert a.keys() == b.keys()
    for i, sid in enumerate(s.ids):
        rid = f"{sid}.png"
        assert a[rid] == b[rid], rid  # every column, exactly
        assert {**c[str(i)], "id": rid} == a[rid], rid
    np.testing.assert_array_equal(
        ResultStore(tmp_path / "a").read_maps(), ResultStore(tmp_path / "b").read_maps()
    )


def photo_collection(root: Path) -> dict[str, str]:
    """Photos of mixed sizes and modes; -> name: what ``fit='error'`` must name."""
    root.mkdir(parents=True)
    base = Image.fromarray(pixels(1, (120, 160))[0])
    exif = Image.Exif()
    exif[0x0112] = 6
    photos = {
        "wide.jpg": (base, {}, "120x160"),
        "tall.png": (base.transpose(Image.Transpose.ROTATE_90), {}, "160x120"),
        "cmyk.jpg": (base.resize((64, 64)).convert("CMYK"), {}, "CMYK"),
        "gray.png": (base.resize((64, 64)).convert("L"), {}, "grayscale (L)"),
        "deep.png": (
            Image.fromarray((RNG.random((64, 64)) * 65535).astype(np.uint16)),
            {},
            "16-bit",
        ),
        "palette.gif": (base.resize((50, 70)).convert("P"), {}, "70x50"),
        "rotated.jpg": (base.resize((64, 48)), {"exif": exif.tobytes()}, "64x48"),
        "small.webp": (base.resize((40, 40)), {}, "40x40"),
        "rgba.tif": (base.convert("RGBA"), {}, "120x160"),
    }
    for name, (img, kw, _) in photos.items():
        img.save(root / name, **kw)
    write_png(root / "fits.png", pixels(1)[0])  # already the model's input
    return {name: what for name, (_, _, what) in photos.items()}


def test_a_photo_collection_fits_with_crop_and_is_named_with_error(tmp_path):
    mismatched = photo_collection(tmp_path / "photos")
    crop = audit(tmp_path / "photos", out=tmp_path / "crop", fit="crop")
    assert crop.ok == len(mismatched) + 1 and crop.errors == 0
    strict = audit(tmp_path / "photos", out=tmp_path / "strict")
    rows = rows_by_id(tmp_path / "strict")
    assert strict.ok == 1 and rows["fits.png"]["status"] == "ok"
    for name, what in mismatched.items():
        assert rows[name]["status"] == "error" and what in rows[name]["error"], (name, rows[name])
    pad = audit(tmp_path / "photos", out=tmp_path / "pad", fit="pad", alpha="white")
    squash = audit(tmp_path / "photos", out=tmp_path / "squash", fit="squash")
    assert pad.errors == squash.errors == 0
    manifest = json.loads((tmp_path / "pad" / "manifest.json").read_text())
    assert manifest["config"]["fit"] == "pad" and manifest["config"]["alpha"] == "white"


def test_arrays_of_another_size_are_fitted_like_files(tmp_path):
    x = pixels(3, (48, 80))
    with pytest.raises(ValueError, match="model/source mismatch: image is 48x80"):
        audit(x, out=tmp_path / "strict")
    s = audit(x, out=tmp_path / "crop", fit="crop")
    assert s.ok == 3
    folder = tmp_path / "png"
    folder.mkdir()
    for i, img in enumerate(x):
        write_png(folder / f"{i}.png", img)
    audit(folder, out=tmp_path / "files", fit="crop")
    np.testing.assert_array_equal(
        ResultStore(tmp_path / "crop").read_maps(), ResultStore(tmp_path / "files").read_maps()
    )
    with pytest.raises(ValueError, match="dtype int64"):
        audit(x.astype(np.int64), out=tmp_path / "int")


# ------------------------------------------------------------------------------ shards


def test_several_folders_and_globs_are_shards(tmp_path):
    for split in ("train", "val"):
        for cls in ("a", "b"):
            (tmp_path / split / cls).mkdir(parents=True)
            for i, img in enumerate(pixels(2)):
                write_png(tmp_path / split / cls / f"{i}.png", img)
    src = open_source(str(tmp_path / "*"), EXPECTED)
    assert src.ids[:2] == ["train/a/0.png", "train/a/1.png"] and len(src.ids) == 8
    assert src.shards == [0] * 4 + [1] * 4
    labels = {r.id: r.label for r in src.read(lambda i, rid: True)}
    assert labels["val/b/1.png"] == "b"
    listed = open_source([tmp_path / "train", tmp_path / "val"], EXPECTED)
    assert listed.ids == src.ids
    with pytest.raises(FileNotFoundError, match="no file or folder matches"):
        open_source(str(tmp_path / "nothing-*"), EXPECTED)
    with pytest.raises(ValueError, match="all image folders or all TFRecord files"):
        open_source([tmp_path / "train", tmp_path / "train" / "a" / "0.png"], EXPECTED)


def test_processes_split_sharded_sources_by_shard():
    def source(shards):
        return Source([str(i) for i in range(6)], lambda select: iter(()), "", shards)

    by_shard = process_of(source([0, 0, 1, 1, 2, 2]), 2)
    assert [by_shard(i) for i in range(6)] == [0, 0, 1, 1, 0, 0]
    few = process_of(source([0, 0, 1, 1]), 3)  # fewer shards than processes: by index
    assert [few(i) for i in range(4)] == [0, 1, 2, 0]
    unsharded = process_of(source(None), 2)
    assert [unsharded(i) for i in range(2)] == [0, 1]


def test_read_options_reach_the_decoder(tmp_path):
    write_png(tmp_path / "a.png", pixels(1, (80, 80))[0])
    (rec,) = open_source(tmp_path, EXPECTED, ReadOptions(fit="crop", max_pixels=100)).read(
        lambda i, rid: True
    )
    assert "pixel budget of 100" in rec.error


def test_cli_fit_flags_and_several_sources(tmp_path, capsys):
    from fastfem.cli import main

    for split in ("a", "b"):
        (tmp_path / split).mkdir()
        for i, img in enumerate(pixels(2, (40, 90))):
            write_png(tmp_path / split / f"{i}.png", img)
    out = tmp_path / "out"
    args = [str(tmp_path / "a"), str(tmp_path / "b"), "--quiet", "--out", str(out)]
    assert main(["audit", *args, "--fit", "pad", "--alpha", "white", "--max-pixels", "5000"]) == 0
    config = json.loads((out / "manifest.json").read_text())["config"]
    assert config["fit"] == "pad" and config["alpha"] == "white" and config["max_pixels"] == 5000
    assert sorted(rows_by_id(out)) == ["a/0.png", "a/1.png", "b/0.png", "b/1.png"]
    assert all(r["status"] == "ok" for r in rows_by_id(out).values())
    squash = tmp_path / "squash"
    assert (
        main(["audit", str(tmp_path / "a"), "--fit", "squash", "--quiet", "--out", str(squash)])
        == 0
    )
    assert json.loads((squash / "manifest.json").read_text())["config"]["fit"] == "squash"
    with pytest.raises(SystemExit):
        main(["audit", str(tmp_path / "a"), "--fit", "stretch", "--out", str(tmp_path / "x")])
    assert "invalid choice: 'stretch'" in capsys.readouterr().err
    # explain loads folders through the same decoder and fit
    exp = tmp_path / "explain"
    assert (
        main(["explain", str(tmp_path / "a"), "--fit", "crop", "--quiet", "--out", str(exp)]) == 0
    )
    assert json.loads((exp / "summary.json").read_text())["images"] == 2


def test_report_reads_images_fitted_as_the_audit_fitted_them(tmp_path):
    from fastfem.audit.report.page import images_by_id

    write_png(tmp_path / "wide.png", pixels(1, (40, 90))[0])
    audit(tmp_path, out=tmp_path / "out", fit="crop")
    config = json.loads((tmp_path / "out" / "manifest.json").read_text())["config"]
    assert config["input_size"] == [64, 64]
    fitted = images_by_id(str(tmp_path), ["wide.png"], config)
    assert fitted["wide.png"].shape == (64, 64, 3)
    assert images_by_id(str(tmp_path), ["wide.png"])["wide.png"].shape == (40, 90, 3)


def test_array_source_with_a_fit_and_a_model_of_free_size_keeps_each_image_size():
    """A model with free spatial dimensions: nothing to fit to, the images keep their size
    (a fit mode no longer breaks the up-front check)."""
    from fastfem.data.arrays import array_source

    x = np.random.default_rng(0).integers(0, 255, (2, 10, 12, 3), dtype=np.uint8)
    src = array_source(x, (None, None, 3), "arr", ReadOptions(fit="crop"))
    recs = list(src.read(lambda i, rid: True))
    assert [r.error for r in recs] == [None, None]
    np.testing.assert_array_equal(np.stack([r.image for r in recs]), x)
    with pytest.raises(ValueError, match="model/source mismatch"):
        array_source(x, (None, None, 1), "arr", ReadOptions(fit="crop"))


def test_a_batch_without_a_channel_axis_is_one_channel_images_for_a_one_channel_model(tmp_path):
    """MNIST-style (N, H, W) arrays: read as (N, H, W, 1) for a model of one input channel (as
    Keras reads them), the same rows as the array with its channel axis; refused, naming the
    rank, for a model of three channels."""
    from tiny_models import small_cnn

    grey = (RNG.random((12, 32, 32)) * 255).astype(np.uint8)
    one = small_cnn((32, 32, 1))
    audit(grey, one, out=tmp_path / "hw", batch_size=8)
    audit(grey[..., None], one, out=tmp_path / "hwc", batch_size=8)
    a, b = rows_by_id(tmp_path / "hw"), rows_by_id(tmp_path / "hwc")
    assert a.keys() == b.keys() and len(a) == 12
    for rid in a:
        assert a[rid]["status"] == "ok"
        for col in ("prediction", "confidence", "peak_y", "peak_x", "entropy", "border_energy"):
            assert a[rid][col] == pytest.approx(b[rid][col], abs=1e-6), (rid, col)
    np.save(tmp_path / "grey.npy", grey)  # memory-mapped, read image by image
    audit(str(tmp_path / "grey.npy"), one, out=tmp_path / "npy", batch_size=8)
    assert rows_by_id(tmp_path / "npy").keys() == a.keys()
    # streams too: batches (B, H, W) and single images (H, W), with their labels
    labels = np.arange(12) % 3
    audit(
        iter([(grey[:5], labels[:5]), (grey[5:], labels[5:])]),
        one,
        out=tmp_path / "it",
        batch_size=8,
    )
    audit(iter(list(grey)), one, out=tmp_path / "single", batch_size=8)
    for name in ("it", "single"):
        rows = rows_by_id(tmp_path / name)
        assert rows.keys() == a.keys(), name
        for rid in a:
            assert rows[rid]["confidence"] == pytest.approx(a[rid]["confidence"], abs=1e-5)
    assert [rows_by_id(tmp_path / "it")[str(i)]["label"] for i in range(12)] == [
        str(v) for v in labels
    ]
    with pytest.raises(ValueError, match=r"got rank 3 \(12, 32, 32\).*one input channel"):
        audit(grey, small_cnn((32, 32, 3)), out=tmp_path / "rgb")


def test_stream_labels_are_one_per_image_or_refused():
    """A stream element's second item: class indices, names, bytes or one-hot rows give one
    label per image; a count that does not match the images is refused, naming the shapes."""
    from fastfem.data.arrays import element_labels

    assert element_labels(np.array([2, 0, 1]), 3) == ["2", "0", "1"]
    assert element_labels(np.eye(3)[[2, 0]], 2) == ["2", "0"]
    assert element_labels(np.array([0.1, 0.7, 0.2]), 1) == ["1"]  # one image's probabilities
    assert element_labels(np.array([b"cat", b"dog"]), 2) == ["cat", "dog"]
    assert element_labels(np.float32(4.0), 1) == ["4"]
    assert element_labels({"a": 1}, 2) == [None, None]
    with pytest.raises(ValueError, match=r"labels of shape \(3,\) for 2 images"):
        element_labels(np.array([1, 2, 3]), 2)
