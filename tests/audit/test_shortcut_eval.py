"""The planted-shortcut benchmark: the audit's flags on CNNs trained with a shortcut (cached
weights, `tests/support/shortcut_models/`, rebuilt by ``python -m benchmarks.shortcut_models
train``) scored against the generator's ground truth — one set of thresholds for every
configuration, nothing told where the mark is."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.shortcuts import BUNDLED, audit_split, evaluate_store, model_path, zone_cells


# ---------------------------------------------------------------------------- scoring helpers
# (the generator itself: tests/test_shortcut_generator.py)
def test_zone_cells_maps_pixels_to_map_cells():
    zone = np.zeros((64, 64), bool)
    zone[56:62, 56:62] = True
    cells = zone_cells(zone, (16, 16))
    assert np.argwhere(cells).tolist() == [[14, 14], [14, 15], [15, 14], [15, 15]]
    assert zone_cells(zone, (16, 16), tolerance=1).sum() == 9


# ---------------------------------------------------------------------------- cached models
#: A sample of the benchmark's configurations: a corner (the bundled model), an edge middle,
#: the centre, each kind, and the control. The full table: ``python -m benchmarks.shortcuts``.
EVALUATED = [
    BUNDLED,
    "checker@centre",
    "text@bottom",
    "stripe@left",
    # The frame model trained with the label leak relies on its frame (66 of 66 marked images
    # of the other classes), and the detectors flag none of them: a frame spans the whole
    # border, not one compact hot spot. Strict: this fails once the detectors find it.
    pytest.param(
        "frame@border",
        marks=pytest.mark.xfail(strict=True, reason="detectors flag 0 of the relied-on frames"),
    ),
    "none",
]


@pytest.mark.slow
@pytest.mark.parametrize("name", EVALUATED)
def test_flags_recover_the_planted_shortcut(name, tmp_path):
    if name != BUNDLED:
        assert model_path(name).is_file(), "run: python -m benchmarks.shortcut_models train"
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
    maps: the stripe along the left edge is one candidate cluster at its place, its images
    flagged."""
    store, marked = audit_split("stripe@left", tmp_path / "fam", method="fam")
    res = evaluate_store("stripe@left", store, marked)
    det = res["detectors"]
    assert det["precision"] >= 0.9 and det["recall"] >= 0.9, det
    assert [c["peak_at_planted_place"] for c in res["candidates"]] == [True], res["candidates"]
