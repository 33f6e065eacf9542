"""The sweep's candidates (`fastfem.audit.reliance.choice`): a lead the labels confirm grows,
and sets its row threshold, on the rows it may flag — those labelled another class."""

from __future__ import annotations

import numpy as np

from fastfem.audit.reliance import rules
from fastfem.audit.reliance.choice import Sweep
from fastfem.audit.reliance.probes import sweep_probes


def _watermark_sweep(labelled: bool = True) -> tuple[Sweep, int, int]:
    """A sweep of 320 rows (4 classes) on the real 64 px probe family: class 1's first 40
    rows are images of other classes a mark moved to it, its height varying — the band y48-56
    hides it on 20 of them and half hides it on 8 more (a drop of 0.3), the band y40-56 hides
    it on 35. Every wide band also hides the class's own objects on 30 of its other rows,
    every other narrow band half hides them on 8. Returns the sweep and the two probes."""
    probes = sweep_probes(64, 64)
    names = [p.name for p in probes]
    narrow, wide = names.index("band y48-56 (inpaint)"), names.index("band y40-56 (inpaint)")
    rng = np.random.default_rng(3)
    pred = np.repeat(np.arange(4), 80)
    drop = np.where(rng.uniform(size=(320, len(probes))) < 0.01, 0.6, 0.0)
    mine = np.flatnonzero(pred == 1)
    labels = pred.copy()
    labels[mine[:40]] = rng.choice([0, 2, 3], 40)
    drop[mine, :] = 0.0
    for j, p in enumerate(probes):
        if p.region.kind in ("band", "band wide"):
            own, fall = (30, 0.6) if p.region.kind == "band wide" else (8, 0.3)
            drop[rng.choice(mine[40:], own, replace=False), j] = fall
    drop[mine[:20], narrow] = 0.7
    drop[mine[20:28], narrow] = 0.3
    drop[mine[:35], wide] = 0.7
    dose = np.zeros_like(drop)
    sweep = Sweep(
        None, np.zeros((320, 1)), probes, pred, drop, dose, labels=labels if labelled else None
    )
    return sweep, narrow, wide


def test_a_lead_grows_on_the_rows_labelled_another_class():
    sw, narrow, wide = _watermark_sweep()
    lead = next(t for t in sw.tests if (t.probe, t.cls) == (narrow, 1))
    every = next(t for t in sw.tests if (t.probe, t.cls) == (wide, 1))
    assert every.place_lift < rules.MIN_LIFT  # over every row of the class: no growth
    assert rules.widest_extent([lead], sw.tests, sw.drop, sw.pred, sw.regions, sw.n_tests) == [lead]
    grown = sw.lead_extent(lead)
    assert grown is every  # the test over every row, for the evidence


def test_without_a_row_labelled_another_class_a_lead_stays():
    sw, narrow, _ = _watermark_sweep(labelled=False)
    lead = next(t for t in sw.tests if (t.probe, t.cls) == (narrow, 1))
    assert sw.lead_extent(lead) is lead


def test_a_lead_s_row_threshold_is_set_on_the_rows_it_may_flag():
    # on the class's rows labelled another class the narrow band hides the mark on 20 rows
    # and half hides it on 8, the other narrow bands nothing: the lowest threshold keeps a
    # place lift of 10; over every row the objects they half hide hold it higher
    sw, narrow, _ = _watermark_sweep()
    lead = next(t for t in sw.tests if (t.probe, t.cls) == (narrow, 1))
    assert rules.row_threshold(lead, sw.drop, sw.pred, sw.regions, sw.dose)[0] > min(rules.ROW_TAUS)
    tau, _ = rules.row_threshold(lead, sw.drop, sw.flaggable, sw.regions, sw.dose)
    assert tau == min(rules.ROW_TAUS)


def test_the_rows_a_lead_may_flag_are_those_labelled_another_class():
    pred = np.asarray([0, 0, 1, 1, 2])
    labels = np.asarray([0, 1, 1, -1, 0])  # own, another, own, none, another
    assert rules.labelled_other(pred, labels).tolist() == [-1, 0, -1, -1, 2]
