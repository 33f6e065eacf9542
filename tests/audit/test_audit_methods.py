"""`fastfem.audit` with ground-truth boxes (localisation columns, outside-box flag, box files and
their errors) and with the MLFEM and FAM methods: rows equal the metrics and explainers called
directly on the same images."""

import json

import numpy as np
import pytest
from PIL import Image

import fastfem
from fastfem import sample
from fastfem.audit import ResultStore, audit
from fastfem.data.boxes import match_boxes, read_boxes
from fastfem.evaluation import evaluate
from fastfem.metrics import localisation_metrics

LOC = ["pointing_game", "energy_pointing_game", "iou"]
N = 24


@pytest.fixture(scope="module")
def small():
    return sample.generate("test", n=N)


def ordered(store_dir, ids):
    """Rows and maps of a store, in the order of ``ids``."""
    store = ResultStore(store_dir)
    rows, maps = store.read_rows(), store.read_maps()
    pos = {rid: i for i, rid in enumerate(rows["id"])}
    idx = np.array([pos[r] for r in ids])
    return {k: v[idx] for k, v in rows.items()}, maps[idx]


def write_csv(path, rows):
    path.write_text("id,x0,y0,x1,y1\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))
    return path


def test_bundled_sample_boxes_give_evaluate_s_metrics(tmp_path, small):
    """audit(boxes='sample') of a PNG folder: metric columns == fastfem.evaluate of FEM on the
    same (decoded) images and boxes, and == localisation_metrics of FEM.explain's maps."""
    folder = tmp_path / "png"
    sample.write_png_folder(small, folder)
    audit(folder, out=tmp_path / "a", boxes="sample", batch_size=16)
    ids = [
        f"{sample.CLASS_NAMES[lab]}/{rid}.png"
        for lab, rid in zip(small.labels, small.ids, strict=True)
    ]
    rows, _ = ordered(tmp_path / "a", ids)
    x = np.stack([np.asarray(Image.open(folder / i), np.float32) / 255.0 for i in ids])
    model = str(sample.MODEL_PATH)
    ev = evaluate(fastfem.FEM(model), x, boxes=small.boxes, metrics=LOC, model=model)
    assert ev.config["fused"]
    direct = localisation_metrics(fastfem.FEM(model).explain(x), small.boxes)
    for m in LOC:
        np.testing.assert_allclose(rows[m], ev.per_sample[m], atol=1e-6, err_msg=m)
        np.testing.assert_allclose(rows[m], np.asarray(getattr(direct, m)), atol=1e-6, err_msg=m)
    assert 0.3 < np.mean(rows["energy_pointing_game"]) < 0.9  # the maps look at the shapes
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["boxes"]["images_with_boxes"] == N


def test_union_of_boxes_and_null_metrics_without_boxes(tmp_path, small):
    x = small.images[:6]
    b = small.boxes
    # image 0: two boxes (its own box and the watermark corner) -> scored against the union;
    # image 1: its own box; the others: no box -> null metrics
    csv = write_csv(tmp_path / "b.csv", [(0, *b[0]), (0, *sample.WATERMARK_BOX), (1, *b[1])])
    audit(x, out=tmp_path / "u", boxes=csv)
    rows, _ = ordered(tmp_path / "u", [str(i) for i in range(6)])
    union = np.zeros((2, 64, 64), bool)
    for i, boxes in enumerate([[b[0], sample.WATERMARK_BOX], [b[1]]]):
        for x0, y0, x1, y1 in boxes:
            union[i, y0:y1, x0:x1] = True
    ref = localisation_metrics(fastfem.FEM(str(sample.MODEL_PATH)).explain(x[:2]), union)
    for m in LOC:
        np.testing.assert_allclose(rows[m][:2], np.asarray(getattr(ref, m)), atol=1e-6)
        assert np.all(np.isnan(rows[m][2:])), m  # null in Parquet
    # the JSON form gives the same rows
    (tmp_path / "b.json").write_text(
        json.dumps({"0": [list(map(int, b[0])), list(sample.WATERMARK_BOX)], "1": b[1].tolist()})
    )
    audit(x, out=tmp_path / "j", boxes=tmp_path / "b.json")
    rows_j, _ = ordered(tmp_path / "j", [str(i) for i in range(6)])
    for m in LOC:
        np.testing.assert_array_equal(rows_j[m], rows[m])


def test_unknown_box_ids_are_an_error_before_any_work(tmp_path, small):
    csv = write_csv(tmp_path / "b.csv", [(0, 1, 1, 9, 9), ("cat-7", 1, 1, 9, 9)])
    with pytest.raises(ValueError, match=r"1 of 2 box ids match no input .*'cat-7'"):
        audit(small.images[:4], out=tmp_path / "x", boxes=csv)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("text", "suffix", "message"),
    [
        ("id,x0,y0,x1\n0,1,1,5\n", ".csv", r"missing column\(s\) \['y1'\]"),
        ("id,x0,y0,x1,y1\n0,1,1,5,five\n", ".csv", r"line 2: coordinates .* not all numbers"),
        ("id,x0,y0,x1,y1\n0,1,1,5,6\n0,9,1,5,6\n", ".csv", r"line 3: .*empty \(need x1 > x0"),
        ("id,x0,y0,x1,y1\n0,1,nan,5,6\n", ".csv", "NaN/inf"),
        ("id,x0,y0,x1,y1\n", ".csv", "no boxes"),
        ('{"0": [1, 2, 3]}', ".json", "four numbers"),
        ('{"0": []}', ".json", "expected a box"),
        ('{"0": [1, 1, 5, 5], "0": [1, 1, 6, 6]}', ".json", "'0' appears twice"),
        ("[[1, 1, 5, 5]]", ".json", "expected an object"),
        ("{not json", ".json", "not valid JSON"),
        ("id x0", ".txt", "must be a .csv or .json"),
    ],
)
def test_malformed_boxes_files_name_the_problem(tmp_path, text, suffix, message):
    path = tmp_path / f"boxes{suffix}"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as err:
        read_boxes(path)
    assert str(path) in str(err.value)


def test_boxes_outside_the_model_input_and_ambiguous_stems(tmp_path, small):
    csv = write_csv(tmp_path / "b.csv", [(0, 1, 1, 70, 9)])
    with pytest.raises(ValueError, match="outside the model input"):
        audit(small.images[:2], out=tmp_path / "o", boxes=csv)
    with pytest.raises(ValueError, match="ambiguous"):
        match_boxes({"a": np.ones((1, 4))}, ["x/a.png", "y/a.png"])
    matched, unknown = match_boxes({"a": np.ones((1, 4)), "b": np.ones((1, 4))}, ["x/a.png"])
    assert list(matched) == ["x/a.png"] and unknown == ["b"]


def test_outside_box_detector_flags_the_rows_whose_energy_is_outside(tmp_path):
    import pyarrow.parquet as pq

    audit(out=tmp_path / "s", boxes="sample")
    rows = ResultStore(tmp_path / "s").read_rows()
    outside = dict(zip(rows["id"], 1 - rows["energy_pointing_game"], strict=True))
    flags = pq.read_table(tmp_path / "s" / "flags.parquet").to_pydict()
    by_box = {
        i: s
        for i, s, r in zip(flags["id"], flags["score"], flags["reason"], strict=True)
        if "outside box" in r
    }
    assert by_box and set(by_box) == {i for i, v in outside.items() if v > 0.8}
    # one scale: each row scores at least its ratio outside / threshold, >= 1 when it fires
    assert all(s >= max(outside[i] / 0.8 - 1e-9, 1.0) for i, s in by_box.items())
    # the report shows the new columns
    from fastfem.audit.report.page import write_report

    page = write_report(tmp_path / "s").read_text()
    assert "mean energy_pointing_game" in page and "outside box" in page


def test_mlfem_rows_equal_mlfem_explain(tmp_path, small):
    x = small.images[:10]
    summary = audit(x, out=tmp_path / "m", method="mlfem", batch_size=4)
    assert summary.ok == 10
    rows, maps = ordered(tmp_path / "m", [str(i) for i in range(10)])
    ml = fastfem.MLFEM(str(sample.MODEL_PATH))
    ref = ml.explain(x)[..., 0]
    assert maps.shape == (10, 64, 64)
    np.testing.assert_allclose(maps, ref, atol=1e-6)
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    assert manifest["method"] == "mlfem" and manifest["layer"] == ",".join(ml.layer_names)
    # product fusion and an explicit layer list reach the explainer's logic too
    layers = list(ml.layer_names[1:])
    audit(x, out=tmp_path / "p", method="mlfem", layer=layers, fusion="product")
    _, maps_p = ordered(tmp_path / "p", [str(i) for i in range(10)])
    ref_p = fastfem.MLFEM(str(sample.MODEL_PATH), layers=layers, fusion="product").explain(x)
    np.testing.assert_allclose(maps_p, ref_p[..., 0], atol=1e-6)


def test_fam_rows_equal_explain_episode_against_class_prototypes(tmp_path, small):
    labels = np.array([sample.CLASS_NAMES[i] for i in small.labels])
    np.savez(tmp_path / "x.npz", images=small.images, ids=np.array(small.ids), labels=labels)
    audit(tmp_path / "x.npz", out=tmp_path / "f", method="fam", batch_size=8)
    rows, maps = ordered(tmp_path / "f", small.ids)
    fam = fastfem.FAM(str(sample.MODEL_PATH))
    ep = fam.explain_episode(
        small.images, labels, small.images, query_labels=labels, support_maps=False, resize=False
    )
    np.testing.assert_allclose(maps, ep.query_maps, atol=1e-6)
    target = np.searchsorted(ep.classes, labels)
    np.testing.assert_allclose(rows["similarity"], ep.similarities[np.arange(N), target], atol=1e-6)
    assert rows["prototype"].tolist() == labels.tolist()
    assert rows["nearest_prototype"].tolist() == ep.predictions.tolist()
    # references: prototypes from another labelled source; a label without a prototype is
    # explained against the nearest one, with a warning
    keep = labels != "cross"
    np.savez(tmp_path / "r.npz", images=small.images[keep], labels=labels[keep])
    with pytest.warns(UserWarning, match="no prototype"):
        audit(tmp_path / "x.npz", out=tmp_path / "r", method="fam", references=tmp_path / "r.npz")
    rows_r, maps_r = ordered(tmp_path / "r", small.ids)
    support = (small.images[keep], labels[keep])
    ep_known = fam.explain_episode(
        *support, small.images[keep], query_labels=labels[keep], support_maps=False, resize=False
    )
    ep_nearest = fam.explain_episode(
        *support, small.images[~keep], support_maps=False, resize=False
    )
    assert rows_r["prototype"][keep].tolist() == labels[keep].tolist()
    assert rows_r["prototype"][~keep].tolist() == ep_nearest.predictions.tolist()
    np.testing.assert_allclose(maps_r[keep], ep_known.query_maps, atol=1e-6)
    np.testing.assert_allclose(maps_r[~keep], ep_nearest.query_maps, atol=1e-6)
    manifest = json.loads((tmp_path / "r" / "manifest.json").read_text())
    assert manifest["fam_labels_without_prototype"] == ["cross"]


def test_unknown_method_and_misplaced_options_fail_fast(tmp_path):
    with pytest.raises(ValueError, match="unknown audit method 'gradcam'"):
        audit(out=tmp_path / "x", method="gradcam")
    with pytest.raises(ValueError, match="only used by method='fam'"):
        audit(out=tmp_path / "x", references="somewhere")
    with pytest.raises(ValueError, match="only used by method='mlfem'"):
        audit(out=tmp_path / "x", fusion="product")


def test_cli_audit_with_sample_boxes_and_methods(tmp_path, small, monkeypatch, capsys):
    from fastfem.cli import main

    monkeypatch.setenv("FASTFEM_COMPILE_CACHE", "0")  # no process-wide JAX cache in pytest
    folder = tmp_path / "png"
    sample.write_png_folder(sample.generate("test", n=12), folder)
    assert main(["audit", str(folder), "--boxes", "sample", "--out", str(tmp_path / "c")]) == 0
    rows = ResultStore(tmp_path / "c").read_rows()
    assert set(LOC) <= set(rows) and np.isfinite(rows["iou"]).all() and len(rows["id"]) == 12
    capsys.readouterr()
    for method in ("mlfem", "fam"):
        out = tmp_path / method
        assert main(["audit", str(folder), "--method", method, "--out", str(out), "--quiet"]) == 0
        summary = json.loads(capsys.readouterr().out)
        assert summary["ok"] == 12 and summary["errors"] == 0
        assert json.loads((out / "manifest.json").read_text())["method"] == method
    bad = tmp_path / "bad.csv"
    bad.write_text("id,x0,y0,x1,y1\ntest-00003,5,5,2,9\n")
    assert main(["audit", str(folder), "--boxes", str(bad), "--out", str(tmp_path / "z")]) == 2
    err = capsys.readouterr().err
    assert "fastfem audit: error:" in err and "bad.csv line 2:" in err and "empty" in err


@pytest.mark.slow
def test_cli_fills_the_persistent_compilation_cache(tmp_path):
    import os
    import subprocess
    import sys

    cache = tmp_path / "jaxcache"
    env = {**os.environ, "FASTFEM_COMPILE_CACHE": str(cache), "KERAS_BACKEND": "jax"}
    np.save(tmp_path / "x.npy", sample.generate("test", n=8).images)
    cmd = [sys.executable, "-m", "fastfem", "audit", str(tmp_path / "x.npy"), "--quiet"]
    r = subprocess.run([*cmd, "--out", str(tmp_path / "a")], env=env, capture_output=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert any(cache.iterdir())  # the compiled audit step is on disk for the next run
