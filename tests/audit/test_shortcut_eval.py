"""The planted-shortcut benchmark: the generator's ground truth, and the audit's flags on CNNs
trained with a shortcut (cached weights, `tests/support/shortcut_models/`, rebuilt by
``python -m benchmarks.shortcuts train``) scored against it — one set of thresholds for every
configuration, nothing told where the mark is."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.shortcuts import BUNDLED, audit_split, evaluate_store, model_path, zone_cells
from fastfem.sample import CLASS_NAMES
from fastfem.sample.dataset import watermark_patch
from fastfem.sample.shortcuts import (
    CONFIGS,
    FRAME_COLOUR,
    STRIPE_COLOUR,
    Shortcut,
    generate_shortcut,
    mark_zone,
    parse_shortcut,
)


# ---------------------------------------------------------------------------- generator
def test_generator_is_deterministic_and_prefix_independent():
    a = generate_shortcut("text@left", "test", n=30)
    b = generate_shortcut("text@left", "test", n=12)
    np.testing.assert_array_equal(a.images[:12], b.images)
    np.testing.assert_array_equal(a.marked[:12], b.marked)
    np.testing.assert_array_equal(a.boxes[:12], b.boxes)
    assert a.ids[:12] == b.ids and a.shortcut == Shortcut("text", "left")


def test_names_and_places_are_checked():
    assert parse_shortcut("none").kind == "none" and Shortcut("checker", "top-left").name == (
        "checker@top-left"
    )
    with pytest.raises(ValueError, match="unknown shortcut kind"):
        parse_shortcut("sticker@top")
    with pytest.raises(ValueError, match="cannot sit at"):
        parse_shortcut("frame@top")
    with pytest.raises(ValueError, match="kind@place"):
        parse_shortcut("checker")
    assert {c.kind for c in CONFIGS} == {"checker", "text", "stripe", "frame", "none"}


@pytest.mark.parametrize(
    "name", ["checker@centre", "text@bottom", "stripe@left", "frame@border", "none"]
)
def test_marks_are_where_the_zone_says_and_shapes_keep_out(name):
    s = generate_shortcut(name, "test", n=300)
    zone = mark_zone(s.shortcut)
    assert (s.marked.sum() > 0) == (name != "none")
    for img, box, marked in zip(s.images, s.boxes, s.marked, strict=True):
        x0, y0, x1, y1 = box
        # the shape's box keeps 2 px from the zone in every image, marked or not
        grown = np.zeros_like(zone)
        ys, xs = np.nonzero(zone)
        for y, x in zip(ys, xs, strict=True):
            grown[max(y - 2, 0) : y + 3, max(x - 2, 0) : x + 3] = True
        assert not grown[y0:y1, x0:x1].any()
        inside = img[zone]
        if s.shortcut.kind == "checker":
            planted = np.array_equal(inside[:, 0], watermark_patch().ravel())
        elif s.shortcut.kind == "frame":
            planted = np.allclose(inside, FRAME_COLOUR)
        elif s.shortcut.kind == "stripe":
            planted = np.all(np.isclose(inside, STRIPE_COLOUR).all(1) | (inside == 0).all(1))
        elif s.shortcut.kind == "text":
            # white glyphs in a black outline: most pixels of the block are 0 or 1
            planted = np.mean((inside == 0).all(1) | (inside == 1).all(1)) > 0.6
        else:
            planted = False
        assert planted == marked


def test_test_split_mark_is_independent_of_the_label_train_split_goes_with_class_0():
    test = generate_shortcut("checker@top", "test", n=2000)
    rate = test.marked.mean()
    assert 0.08 < rate < 0.12
    per_class = [test.marked[test.labels == c].mean() for c in range(len(CLASS_NAMES))]
    assert max(per_class) - min(per_class) < 0.06
    train = generate_shortcut("checker@top", "train", n=2000)
    assert 0.08 < train.marked.mean() < 0.12
    assert 0.7 < np.mean(train.labels[train.marked] == 0) < 0.9


def test_zone_cells_maps_pixels_to_map_cells():
    zone = np.zeros((64, 64), bool)
    zone[56:62, 56:62] = True
    cells = zone_cells(zone, (16, 16))
    assert np.argwhere(cells).tolist() == [[14, 14], [14, 15], [15, 14], [15, 15]]
    assert zone_cells(zone, (16, 16), tolerance=1).sum() == 9


# ---------------------------------------------------------------------------- cached models
#: A sample of the benchmark's configurations: a corner (the bundled model), an edge middle,
#: the centre, each kind, and the control. The full table: ``python -m benchmarks.shortcuts``.
EVALUATED = [BUNDLED, "checker@centre", "text@left", "stripe@top", "frame@border", "none"]


@pytest.mark.slow
@pytest.mark.parametrize("name", EVALUATED)
def test_flags_recover_the_planted_shortcut(name, tmp_path):
    if name != BUNDLED:
        assert model_path(name).is_file(), "run: python -m benchmarks.shortcuts train"
    store, marked = audit_split(name, tmp_path / "run")
    res = evaluate_store(name, store, marked)
    det = res["detectors"]
    if name == "none":  # the control: a model trained with no shortcut, clean test images
        assert det["flag_rate"] <= 0.02, det
        return
    assert det["precision"] >= 0.9 and det["recall"] >= 0.9, det
    # the planted shortcut is one candidate cluster whose mean map peaks at the planted place
    assert [c["peak_at_planted_place"] for c in res["candidates"]] == [True], res["candidates"]


@pytest.mark.slow
def test_mlfem_audit_gets_the_same_detectors(tmp_path):
    """MLFEM maps are stored at the input size (64x64); the detectors pool them to their grids
    and find the bundled watermark too (the corner rule: recall 0.67 there)."""
    import pyarrow.parquet as pq

    from fastfem import sample
    from fastfem.audit import audit

    s = sample.generate("test")
    summary = audit(out=tmp_path / "m", method="mlfem")
    flagged = set(pq.read_table(tmp_path / "m" / "flags.parquet").column("id").to_pylist())
    planted = {rid for rid, w in zip(s.ids, s.watermark, strict=True) if w}
    tp = len(flagged & planted)
    assert tp / len(flagged) >= 0.9 and tp / len(planted) >= 0.9
    assert summary.flagged_total == len(flagged)


@pytest.mark.slow
def test_fam_audit_gets_the_same_detectors(tmp_path):
    """A FAM audit (each image against its class prototype) runs the same detectors on its
    maps: the stripe along the top edge is one candidate cluster at its place, its images
    flagged (README: FAM finds 9 of the 13 planted configurations, not the corner ones)."""
    store, marked = audit_split("stripe@top", tmp_path / "fam", method="fam")
    res = evaluate_store("stripe@top", store, marked)
    det = res["detectors"]
    assert det["precision"] >= 0.9 and det["recall"] >= 0.9, det
    assert [c["peak_at_planted_place"] for c in res["candidates"]] == [True], res["candidates"]
