"""`fastfem.audit`: flags recover the planted watermarks, bad files become error rows, resume is
exact after kill -9, sharded and multi-process runs give the same rows, memory stays flat."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from subprocess_runs import run_python, simulated_devices

from fastfem import sample
from fastfem.audit import ResultStore, audit

TESTS_DIR = Path(__file__).parents[1] / "support"
STAT_COLS = ["peak_y", "peak_x", "border_energy", "corner_energy", "entropy", "frac_above"]


def rows_by_id(out) -> dict[str, dict]:
    rows = ResultStore(out).read_rows()
    return {rid: {c: rows[c][i] for c in rows} for i, rid in enumerate(rows["id"])}


def test_bundled_audit_flags_the_planted_watermarks(tmp_path):
    summary = audit(out=tmp_path / "a")
    assert summary.processed == summary.ok == 512 and summary.errors == 0
    rows = ResultStore(tmp_path / "a").read_rows()
    s = sample.generate("test")
    planted = {rid for rid, w in zip(s.ids, s.watermark, strict=True) if w}
    # the audit's flags: the location-agnostic detectors, written to flags.parquet
    table = pq.read_table(tmp_path / "a" / "flags.parquet").to_pydict()
    flagged = set(table["id"])
    tp = len(flagged & planted)
    precision, recall = tp / len(flagged), tp / len(planted)
    assert precision >= 0.9 and recall >= 0.9, (precision, recall)
    assert summary.flagged == table["id"][:20] and summary.flag_rule.startswith("hot spot")
    acc = np.mean([rows["prediction"][i] == s.labels[int(r[5:])] for i, r in enumerate(rows["id"])])
    assert acc > 0.95
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    counts = {"rows": 512, "errors": 0, "flagged": len(flagged)}
    assert manifest["layer"] == "last_conv" and manifest["counts"] == counts
    assert summary.flagged_total == len(flagged) and summary.errors_total == 0
    assert manifest["parts"] and manifest["map_shape"] == [16, 16]
    maps = ResultStore(tmp_path / "a").read_maps()
    assert maps.shape == (512, 16, 16) and np.isfinite(maps).all()


def test_existing_store_needs_resume_and_finished_store_is_a_no_op(tmp_path):
    x = sample.generate("test", n=40).images
    audit(x, out=tmp_path / "s", batch_size=16, part_size=16)
    with pytest.raises(FileExistsError, match="--resume"):
        audit(x, out=tmp_path / "s")
    (tmp_path / "s" / "flags.parquet").unlink()  # the detectors' tables: rewritten by a no-op
    (tmp_path / "s" / "clusters.parquet").unlink()
    again = audit(x, out=tmp_path / "s", resume=True)
    assert again.processed == 0 and again.skipped_already_committed == 40
    assert "nothing to do" in again.message and again.committed_total == 40
    # the totals describe the whole store, also on a no-op resume
    first = pq.read_table(tmp_path / "s" / "flags.parquet")
    assert again.flagged_total == first.num_rows and again.errors_total == 0
    assert pq.read_table(tmp_path / "s" / "clusters.parquet").num_rows >= 1


def write_png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def test_bad_files_become_error_rows_and_good_ones_match_a_clean_run(tmp_path):
    s = sample.generate("test", n=20)
    good = tmp_path / "good"
    sample.write_png_folder(s, good)
    mixed = tmp_path / "mixed"
    sample.write_png_folder(s, mixed)
    bad_dir = mixed / "bad"
    bad_dir.mkdir()
    (bad_dir / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\nnot a png at all" * 3)
    full = (good / os.listdir(good)[0]).iterdir().__next__().read_bytes()
    (bad_dir / "truncated.png").write_bytes(full[: len(full) // 2])
    (bad_dir / "empty.png").write_bytes(b"")
    write_png(bad_dir / "gray.png", np.full((64, 64), 128, np.uint8))
    write_png(bad_dir / "small.png", np.zeros((32, 32, 3), np.uint8))

    clean = audit(good, out=tmp_path / "clean", batch_size=8)
    got = audit(mixed, out=tmp_path / "mixed_out", batch_size=8, threads=3)
    assert clean.processed == 20 and clean.errors == 0
    assert got.processed == 25 and got.ok == 20 and got.errors == got.errors_total == 5
    rows = rows_by_id(tmp_path / "mixed_out")
    errors = {rid: r["error"] for rid, r in rows.items() if r["status"] == "error"}
    assert set(errors) == {
        f"bad/{n}.png" for n in ("corrupt", "truncated", "empty", "gray", "small")
    }
    assert "empty file" in errors["bad/empty.png"]
    assert "grayscale" in errors["bad/gray.png"]
    assert "32x32" in errors["bad/small.png"]
    assert "cannot decode" in errors["bad/corrupt.png"]
    assert (
        "cannot decode" in errors["bad/truncated.png"] or "truncated" in errors["bad/truncated.png"]
    )
    ref = rows_by_id(tmp_path / "clean")
    for rid, r in ref.items():
        for c in STAT_COLS + ["prediction", "confidence", "label"]:
            assert rows[rid][c] == pytest.approx(r[c], abs=1e-6), (rid, c)
    # fit="squash" converts and resizes instead of error rows
    fixed = audit(mixed, out=tmp_path / "resized", fit="squash")
    assert fixed.errors == 3 and fixed.ok == 22


def test_model_source_mismatch_fails_fast(tmp_path):
    with pytest.raises(
        ValueError, match="model/source mismatch: grayscale image where the model expects 3"
    ):
        audit(np.zeros((4, 64, 64, 1), np.float32), out=tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_nan_activations_become_error_rows(tmp_path):
    x = sample.generate("test", n=10).images.copy()
    x[4, 3, 3, 1] = np.nan
    summary = audit(x, out=tmp_path / "n", batch_size=4)
    rows = rows_by_id(tmp_path / "n")
    assert summary.errors == 1 and rows["4"]["status"] == "error"
    assert "NaN" in rows["4"]["error"] and len(rows) == 10


AUDIT_NPY = """
import sys
from fastfem.audit import audit
audit(sys.argv[1] if len(sys.argv) > 1 else {src!r}, out={out!r}, batch_size=64,
      part_size={part}, resume=True)
"""


@pytest.mark.slow
def test_kill_9_then_resume_counts_every_id_once(tmp_path):
    x = np.concatenate([sample.generate("test").images] * 4)  # 2048 images
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "store"
    code = AUDIT_NPY.format(src=str(tmp_path / "x.npy"), out=str(out), part=128)
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        env={**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    store = ResultStore(out)
    deadline = time.time() + 300
    while len(store.part_files()) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    committed_before = len(store.committed_ids())
    assert 0 < committed_before < 2048, committed_before
    resumed = run_python(code, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    rows = store.read_rows()
    assert sorted(rows["id"].tolist(), key=int) == [str(i) for i in range(2048)]  # once each
    assert len(store.read_maps()) == 2048


SHARDED = """
from fastfem.audit import audit
from fastfem import sample
import jax
assert jax.device_count() == 4
audit(sample.generate("test", n=100).images, out={out!r}, batch_size=30, part_size=64)
"""


def test_four_devices_give_the_same_rows_as_one(tmp_path):
    r = run_python(
        SHARDED.format(out=str(tmp_path / "four")),
        env=simulated_devices(4),
    )
    assert r.returncode == 0, r.stderr[-2000:]
    audit(sample.generate("test", n=100).images, out=tmp_path / "one", batch_size=30)
    four, one = rows_by_id(tmp_path / "four"), rows_by_id(tmp_path / "one")
    assert four.keys() == one.keys() and len(one) == 100
    for rid in one:
        for c in STAT_COLS + ["prediction", "confidence"]:
            assert four[rid][c] == pytest.approx(one[rid][c], abs=1e-5), (rid, c)


DISTRIBUTED = """
import sys
from fastfem.audit import audit
pid = int(sys.argv[1])
s = audit({src!r}, out={out!r}, batch_size=32, part_size=64,
          distributed=dict(coordinator_address="127.0.0.1:{port}", num_processes=2,
                           process_id=pid))
print(s.processed)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_on_loopback_equal_one_process(tmp_path):
    np.save(tmp_path / "x.npy", sample.generate("test", n=150).images)
    code = DISTRIBUTED.format(
        src=str(tmp_path / "x.npy"), out=str(tmp_path / "multi"), port=free_port()
    )
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(i)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    assert sorted(int(o.strip().splitlines()[-1]) for o, _ in outs) == [75, 75]
    parts = {p.name[:9] for p in ResultStore(tmp_path / "multi").part_files()}
    assert parts == {"part-p000", "part-p001"}
    manifest = json.loads((tmp_path / "multi" / "manifest.json").read_text())
    assert manifest["process_count"] == 2 and manifest["counts"]["rows"] == 150
    audit(tmp_path / "x.npy", out=tmp_path / "single")
    multi, single = rows_by_id(tmp_path / "multi"), rows_by_id(tmp_path / "single")
    assert multi.keys() == single.keys()
    for rid in single:
        for c in STAT_COLS + ["prediction"]:
            assert multi[rid][c] == pytest.approx(single[rid][c], abs=1e-5)


RSS = """
import resource, sys, numpy as np
from fastfem import sample
from fastfem.audit import audit
n = int(sys.argv[1])
base = sample.generate("test").images  # 512 images, streamed n // 512 times
batches = (base for _ in range(n // 512))
s = audit(batches, out={out!r} + str(n), batch_size=256)
assert s.processed == n // 512 * 512, s
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


@pytest.mark.slow
def test_peak_memory_flat_in_dataset_size(tmp_path):
    code = RSS.format(out=str(tmp_path / "o"))
    rss = {}
    for n in (2_048, 20_480):
        r = subprocess.run(
            [sys.executable, "-c", code, str(n)],
            capture_output=True,
            text=True,
            env={**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3"},
            timeout=900,
        )
        assert r.returncode == 0, r.stderr[-2000:]
        rss[n] = int(r.stdout.strip().splitlines()[-1])
    assert rss[20_480] <= 1.5 * rss[2_048], rss


def test_every_source_type_gives_the_same_rows(tmp_path):
    import io

    tf = pytest.importorskip("tensorflow")
    s = sample.generate("test", n=12)
    audit(s.images, out=tmp_path / "array")
    ref = rows_by_id(tmp_path / "array")

    np.savez(tmp_path / "x.npz", images=s.images, ids=np.arange(12).astype(str), labels=s.labels)
    audit(tmp_path / "x.npz", out=tmp_path / "npz")
    npz = rows_by_id(tmp_path / "npz")
    assert npz["3"]["label"] == str(s.labels[3])

    with tf.io.TFRecordWriter(str(tmp_path / "x.tfrecord")) as w:
        for i, img in enumerate(s.images):
            buf = io.BytesIO()
            Image.fromarray(np.round(img * 255).astype(np.uint8)).save(buf, format="PNG")
            feat = {
                "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[buf.getvalue()])),
                "id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[str(i).encode()])),
            }
            w.write(tf.train.Example(features=tf.train.Features(feature=feat)).SerializeToString())
    audit(tmp_path / "x.tfrecord", out=tmp_path / "tfr")
    tfr = rows_by_id(tmp_path / "tfr")

    ds = tf.data.Dataset.from_tensor_slices((s.images, s.labels)).batch(5)
    audit(ds, out=tmp_path / "ds")
    audit(iter([s.images[:7], s.images[7:]]), out=tmp_path / "it")
    one_hot = np.eye(4, dtype=np.float32)[s.labels]  # Keras's (x, y_one_hot) elements
    audit(tf.data.Dataset.from_tensor_slices((s.images, one_hot)).batch(5), out=tmp_path / "oh")
    for name in ("ds", "oh"):  # the element's second item is each row's label
        rows = rows_by_id(tmp_path / name)
        assert [rows[str(i)]["label"] for i in range(12)] == [str(v) for v in s.labels], name
    assert rows_by_id(tmp_path / "it")["3"]["label"] is None
    for other, tol in (
        (npz, 0),
        (rows_by_id(tmp_path / "ds"), 0),
        (rows_by_id(tmp_path / "it"), 0),
        (tfr, 0.02),
    ):
        assert other.keys() == ref.keys()
        for rid in ref:
            for c in ("corner_energy", "entropy", "confidence"):
                assert other[rid][c] == pytest.approx(ref[rid][c], abs=tol + 1e-6), (rid, c)


@pytest.mark.parametrize("activation", ["sigmoid", None])
def test_a_keras_binary_classifier_with_one_output_unit(tmp_path, activation):
    # Dense(1, sigmoid) gives P(class 1), Dense(1) its logit: either way the store holds the
    # class (p > 0.5) and its probability max(p, 1 - p)
    from tiny_models import small_cnn

    model = small_cnn((32, 32, 3), seed=4, outputs=1, activation=activation)
    x = np.random.default_rng(0).random((40, 32, 32, 3), dtype=np.float32)
    out = np.asarray(model.predict(x, verbose=0), np.float64)[:, 0]
    p = out if activation else 1 / (1 + np.exp(-out))
    assert 0 < np.mean(p > 0.5) < 1  # both classes predicted
    audit(x, model, out=tmp_path / "b", reliance_sample=0)
    rows = ResultStore(tmp_path / "b").read_rows()
    at = rows["id"].astype(int)
    np.testing.assert_array_equal(rows["prediction"], (p[at] > 0.5).astype(int))
    np.testing.assert_allclose(rows["confidence"], np.maximum(p, 1 - p)[at], atol=1e-5)
