"""The reliance sweep's statistics (`fastfem.audit.reliance.stats`)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import stats as sps

from fastfem.audit.reliance import others, rules, thresholds
from fastfem.audit.reliance import stats as S
from fastfem.audit.reliance.labels import label_evidence, labels_confirm, labels_verdict


@pytest.mark.parametrize(
    ("k", "n", "q"), [(5, 20, 0.1), (0, 10, 0.3), (30, 80, 0.05), (80, 80, 0.5), (3, 200, 0.001)]
)
def test_binomial_tail_equals_scipy(k, n, q):
    assert S.binomial_tail(k, n, q) == pytest.approx(
        sps.binom.sf(k - 1, n, q), rel=1e-9, abs=1e-300
    )


def _null_sweep(n=400, probes=40, classes=4, seed=0, rate=0.1):
    rng = np.random.default_rng(seed)
    pred = rng.integers(0, classes, n)
    drop = np.where(rng.uniform(size=(n, probes)) < rate, 0.6, 0.0)
    return drop, pred


def test_no_candidate_when_every_class_is_hit_alike():
    drop, pred = _null_sweep()
    tests = S.probe_tests(drop, pred, np.unique(pred))
    assert rules.select_candidates(tests, drop, pred) == []


def test_a_region_that_knocks_out_one_class_is_found_first():
    drop, pred = _null_sweep(rate=0.03)
    rows = np.flatnonzero(pred == 2)[:40]
    drop[rows, 7] = 0.8
    drop[rows, 8] = 0.7  # an overlapping region hiding the same mark: the same finding
    tests = S.probe_tests(drop, pred, np.unique(pred))
    found = rules.select_candidates(tests, drop, pred)
    assert len(found) == 1 and found[0].probe in (7, 8) and found[0].cls == 2
    t = found[0]
    assert t.hits >= 40 and t.lift > 5 and t.place_lift > 5 and t.p_value < 1e-20


def test_a_class_hit_at_every_place_alike_is_objects_not_a_mark():
    # class 1 is fragile under every region (thin objects): many hits, high class lift,
    # but no place stands out among regions of its size
    drop, pred = _null_sweep(rate=0.02)
    rows = pred == 1
    rng = np.random.default_rng(1)
    drop[rows] = np.where(rng.uniform(size=(rows.sum(), drop.shape[1])) < 0.4, 0.7, 0.0)
    tests = S.probe_tests(drop, pred, np.unique(pred))
    assert max(t.lift for t in tests if t.cls == 1) > rules.MIN_LIFT
    assert rules.select_candidates(tests, drop, pred) == []


def test_place_lift_compares_regions_of_the_same_size():
    drop, pred = _null_sweep(probes=8, rate=0.0)
    rows = np.flatnonzero(pred == 0)
    drop[rows[:60], 4:] = 0.9  # every big region hides class 0's objects alike
    areas = [0.05] * 4 + [0.25] * 4
    tests = {(t.probe, t.cls): t for t in S.probe_tests(drop, pred, np.unique(pred), areas)}
    assert tests[(7, 0)].place_lift < 2  # compared with the other big regions, not the small
    glob = S.probe_tests(drop, pred, np.unique(pred), [0.05] * 4 + [0.25] * 3 + [0.0])
    assert {(t.probe, t.cls): t for t in glob}[(7, 0)].place_lift == float("inf")


def test_translates_are_the_family_apart_from_the_region():
    areas = [0.1] * 6
    families = ["band"] * 4 + ["cell"] * 2
    overlaps = np.eye(6, dtype=bool)
    overlaps[0, 1] = overlaps[1, 0] = True
    compare = S.translates(areas, families, overlaps)
    assert compare[2].tolist() == [True, True, False, True, False, False]  # its family apart
    # band 0 has 2 translates apart (< 3): every other region of its size, overlapping or not
    assert compare[0].tolist() == [False, True, True, True, True, True]


def test_a_global_probe_must_knock_out_the_rows_it_changes_most():
    drop, pred = _null_sweep(probes=2, rate=0.0)
    rows = np.flatnonzero(pred == 1)[:50]
    drop[rows, 1] = 0.8
    areas = [0.1, 0.0]  # probe 1 is global
    dose = np.full(drop.shape, 0.05)
    ordinary = S.probe_tests(drop, pred, np.unique(pred), areas, None, None, dose=dose)
    assert rules.select_candidates(ordinary, drop, pred) == []  # a class that needs colour
    dose[rows, 1] = 0.3  # the knocked-out rows are the ones the probe changes most: a tint
    tinted = S.probe_tests(drop, pred, np.unique(pred), areas, None, None, dose=dose)
    (found,) = rules.select_candidates(tinted, drop, pred)
    assert (found.probe, found.cls) == (1, 1) and found.dose_lift > 1.5


def _ring_sweep(ring_hits: int):
    """Probes 0-3: wide bands (translates of each other) that hide class 0's objects twice as
    often as the other classes'; probe 4: a border ring (no translates, same area) that hides
    almost no object, and ``ring_hits`` rows of class 0 (a frame the class relies on)."""
    rng = np.random.default_rng(3)
    pred = np.repeat(np.arange(4), 80)
    drop = np.zeros((len(pred), 5))
    rate = np.where(pred == 0, 0.3, 0.15)[:, None]
    drop[:, :4] = np.where(rng.uniform(size=(len(pred), 4)) < rate, 0.6, 0.0)
    drop[rng.choice(np.flatnonzero(pred != 0), 2, replace=False), 4] = 0.6
    drop[np.flatnonzero(pred == 0)[:ring_hits], 4] = 0.6
    areas, families = [0.25] * 5, ["band wide"] * 4 + ["border"]
    overlaps = np.ones((5, 5), bool)
    overlaps[:4, :4] = np.eye(4, dtype=bool)
    return drop, pred, S.RegionInfo(areas, families, overlaps)


def test_a_region_without_translates_is_compared_by_lift_not_by_rate():
    # the ring knocks out 29 of class 0's 80 rows and 2 of the 240 others; the bands knock out
    # ~30% of class 0 (its objects are fragile) and ~15% of the others: by rate the ring would
    # look ordinary for class 0 (36% vs 30%), by lift it stands out (~29x vs ~2x)
    drop, pred, regions = _ring_sweep(29)
    tests = S.probe_tests(drop, pred, np.unique(pred), *regions)
    t = {(t.probe, t.cls): t for t in tests}[(4, 0)]
    assert t.place_lift > 5
    assert [(f.probe, f.cls) for f in rules.select_candidates(tests, drop, pred)] == [(4, 0)]
    # a ring that knocks out class 0 no more, relative to the others, than the bands do
    drop, pred, regions = _ring_sweep(0)
    drop[np.flatnonzero(pred == 0)[:1], 4] = 0.6
    assert (
        rules.select_candidates(S.probe_tests(drop, pred, np.unique(pred), *regions), drop, pred)
        == []
    )


def _band_sweep():
    """Probe 0: a narrow band hiding part of a mark (20 rows of class 1), probe 1: the wide
    band around it hiding all of it (35 rows, incl. those 20) but also the other classes'
    objects (15 rows of each: the class lift stays < MIN_LIFT), probe 2: a column overlapping
    both (more hits of the class, less specific), probes 3-7: narrow bands elsewhere
    (translates), probes 8-11: wide bands elsewhere."""
    rng = np.random.default_rng(4)
    pred = np.repeat(np.arange(4), 80)
    drop = np.where(rng.uniform(size=(len(pred), 12)) < 0.02, 0.6, 0.0)
    mine = np.flatnonzero(pred == 1)
    drop[mine[:20], 0] = 0.7
    drop[mine[:35], 1] = 0.7
    for k in (0, 2, 3):  # every other class alike: objects, not one fragile class
        drop[rng.choice(np.flatnonzero(pred == k), 15, replace=False), 1] = 0.6
    drop[mine[:20], 2] = 0.7
    drop[mine[60:75], 2] = 0.7
    drop[rng.choice(np.flatnonzero(pred != 1), 30, replace=False), 2] = 0.6
    areas = [0.1, 0.2, 0.15] + [0.1] * 5 + [0.2] * 4
    families = ["band", "band wide", "column"] + ["band"] * 5 + ["band wide"] * 4
    overlaps = np.eye(12, dtype=bool)
    overlaps[np.ix_([0, 1, 2], [0, 1, 2])] = True
    return drop, pred, S.RegionInfo(areas, families, overlaps)


def test_a_candidate_grows_to_its_widest_passing_neighbour_of_the_same_shape():
    drop, pred, regions = _band_sweep()
    tests = S.probe_tests(drop, pred, np.unique(pred), *regions)
    by = {(t.probe, t.cls): t for t in tests}
    assert by[(1, 1)].lift < rules.MIN_LIFT  # the wide band alone would not be a candidate
    found = rules.select_candidates(tests, drop, pred, 48)
    assert [(f.probe, f.cls) for f in found] == [(0, 1)]
    (grown,) = rules.widest_extent(found, tests, drop, pred, regions, 48)
    assert (grown.probe, grown.cls) == (1, 1) and grown.hits >= 35  # not the column (a column)


def test_a_candidate_does_not_grow_into_a_neighbour_hiding_other_rows():
    drop, pred, regions = _band_sweep()
    mine = np.flatnonzero(pred == 1)
    drop[mine[:20], 1] = 0.0  # the wide band knocks out other rows of the class, not these
    drop[mine[40:60], 1] = 0.7
    tests = S.probe_tests(drop, pred, np.unique(pred), *regions)
    found = rules.select_candidates(tests, drop, pred, 48)
    assert [
        (t.probe, t.cls) for t in rules.widest_extent(found, tests, drop, pred, regions, 48)
    ] == [(0, 1)]


def test_a_global_property_every_class_has_is_not_a_shortcut_of_one():
    # the probe changes 15% of every class's rows much (strongly coloured photographs) and
    # knocks out the dosed rows of class 0 only: the model ties colour to class 0, but the
    # property does not gather in it — no candidate; when the dosed rows of the other classes
    # are (nearly) all predicted class 0 instead, it is one
    pred = np.repeat(np.arange(4), 100)
    dose = np.full((400, 1), 0.02)
    rows = np.concatenate([np.flatnonzero(pred == c)[:15] for c in range(4)])
    dose[rows] = 0.2
    drop = np.zeros((400, 1))
    drop[np.flatnonzero(pred == 0)[:15]] = 0.7
    tests = S.probe_tests(drop, pred, np.unique(pred), [0.0], None, None, dose=dose)
    assert {t.cls: t for t in tests}[0].place_lift > 10  # its dosed rows are knocked out
    assert rules.select_candidates(tests, drop, pred) == []
    pred[rows[15:]] = 0  # the marked images of the other classes are predicted class 0
    drop[rows] = 0.7
    tests = S.probe_tests(drop, pred, np.unique(pred), [0.0], None, None, dose=dose)
    (found,) = rules.select_candidates(tests, drop, pred)
    assert found.cls == 0 and found.hits == 60 and found.lift >= rules.MIN_GLOBAL_LIFT


def _partly_hidden_mark(mark_drop: float, object_drop: float, object_rows: int, seed: int = 0):
    """240 rows of 3 classes under 8 disjoint bands; objects knock out a row at a random band
    (drop ``object_drop``, at 4% of (row, band)); 24 rows of class 0 carry a mark in band 3 that
    the probe hides only partly (drop ``mark_drop``), and ``object_rows`` further rows of class
    0 have objects in band 3 (drop 0.3)."""
    rng = np.random.default_rng(seed)
    pred = np.repeat(np.arange(3), 80)
    drop = np.where(rng.uniform(size=(240, 8)) < 0.04, object_drop, 0.0)
    drop[:, 3] = 0.0
    drop[:24, 3] = mark_drop
    drop[24 : 24 + object_rows, 3] = 0.3
    regions = S.RegionInfo([1 / 8] * 8, ["band"] * 8, np.eye(8, dtype=bool))
    tests = S.probe_tests(drop, pred, np.unique(pred), *regions)
    return next(t for t in tests if (t.probe, t.cls) == (3, 0)), drop, pred, regions


def test_the_row_threshold_follows_how_cleanly_the_probe_hides_the_mark():
    # the probe hides the mark partly: every marked row falls by 0.3 — a 0.5 threshold would
    # flag none of them; the class's objects elsewhere fall by more (0.6) and no more often at
    # 0.25 than at 0.5, so the lowest threshold is clean
    test, drop, pred, regions = _partly_hidden_mark(0.3, object_drop=0.6, object_rows=0)
    assert thresholds.row_threshold(test, drop, pred, regions, None) == (0.25, S.MIN_DOSE_LIFT)
    # objects fall by 0.3 where hidden, in the band too (20 rows of class 0): flagging at 0.25
    # would take them with the mark's rows (place lift 8.8 < 10); 0.35 keeps the mark's rows
    test, drop, pred, regions = _partly_hidden_mark(0.4, object_drop=0.3, object_rows=20)
    tau, _ = thresholds.row_threshold(test, drop, pred, regions, None)
    assert tau == 0.35
    flagged = (pred == 0) & (drop[:, 3] >= tau)
    assert flagged[:24].all() and not flagged[24:].any()


def _centre_mark(dented: int):
    """240 rows of 3 classes; probe 0 is a region without translates (the centre: the only
    member of its family), compared with 8 columns of its area that objects knock out at
    random (4% of (row, column)). 32 rows of class 0 carry a mark at the centre, 16 hidden
    whole by the probe (drop 0.7), 16 partly (0.4); ``dented`` rows of each other class have
    objects the centre dents by 0.4."""
    rng = np.random.default_rng(3)
    pred = np.repeat(np.arange(3), 80)
    drop = np.where(rng.uniform(size=(240, 9)) < 0.04, 0.6, 0.0)
    drop[:, 0] = 0.0
    drop[:16, 0] = 0.7
    drop[16:32, 0] = 0.4
    drop[80 : 80 + dented, 0] = drop[160 : 160 + dented, 0] = 0.4
    regions = S.RegionInfo([0.25] * 9, ["quarter"] + ["column wide"] * 8, np.eye(9, dtype=bool))
    tests = S.probe_tests(drop, pred, np.unique(pred), *regions)
    return next(t for t in tests if (t.probe, t.cls) == (0, 0)), drop, pred, regions


def test_a_region_without_translates_goes_down_to_the_threshold_its_flags_score_best_at():
    # 0.5 is clean (place lift 11.6 on the 16 rows hidden whole); at 0.35 the other classes'
    # dented objects raise the place null, an upper bound here, to a place lift of 4.4, but the
    # 16 partly hidden rows double the flags: expected F1 0.87 against 0.72
    test, drop, pred, regions = _centre_mark(dented=4)
    places = thresholds.row_places(test, drop, pred, regions, None)
    assert (
        places[(0.5, S.MIN_DOSE_LIFT)]
        >= thresholds.ROW_PLACE_LIFT
        > places[(0.35, S.MIN_DOSE_LIFT)]
    )
    tau, _ = thresholds.row_threshold(test, drop, pred, regions, None)
    flagged = (pred == 0) & (drop[:, 0] >= tau)
    assert tau == 0.35 and flagged[:32].all() and not flagged[32:].any()
    # where the other classes are dented at the centre as often as the class's extra rows
    # (place lift 1.2 at 0.35), the expected F1 keeps the clean threshold
    test, drop, pred, regions = _centre_mark(dented=20)
    assert thresholds.row_threshold(test, drop, pred, regions, None)[0] == 0.5


def test_expected_f1_counts_the_rows_the_place_null_expects_from_objects():
    # h hits at place lift L: h (1 - 1/L) from the mark; M the most any threshold expects
    def counted(hits: int, place_lift: float) -> S.ProbeTest:
        return S.ProbeTest(0, 0, hits, 80, 0, 160, 9.0, 1e-9, place_lift=place_lift)

    tests = {(0.5, 1.5): counted(12, 12.0), (0.35, 1.5): counted(19, 6.0)}
    m = {k: t.hits * (1 - 1 / t.place_lift) for k, t in tests.items()}
    most = max(m.values())
    got = thresholds.expected_f1(tests)
    for k, t in tests.items():
        assert got[k] == pytest.approx(2 * m[k] / (t.hits + most))
    assert got[(0.35, 1.5)] > got[(0.5, 1.5)]


def _corner_and_centre_sweep(hit_centre_mirrors: bool):
    """A 4x4 grid of cells (probe = row * 4 + col, 64 px): class 0 is knocked out at the
    central cell (1, 1) on 24 of its 80 rows; its mirror images (1, 2), (2, 1), (2, 2) knock out
    20 rows each when ``hit_centre_mirrors`` (objects, which sit at the centre in any of the
    four), none otherwise (a mark at one place); other cells rarely."""
    rng = np.random.default_rng(5)
    pred = np.repeat(np.arange(3), 80)
    drop = np.where(rng.uniform(size=(240, 16)) < 0.02, 0.6, 0.0)
    drop[:24, 5] = 0.6
    if hit_centre_mirrors:
        for j, start in ((6, 24), (9, 44), (10, 4)):
            drop[start : start + 20, j] = 0.6
    return drop, pred


def _cells():
    from fastfem.audit.reliance.probes import Probe, region_mirrors
    from fastfem.kernels.occlusion import _box_region

    probes = [
        Probe(
            _box_region(
                f"cell {r},{c}", "cell", 64, 64, (16 * c, 16 * r, 16 * c + 16, 16 * r + 16)
            ),
            ("inpaint",),
        )
        for r in range(4)
        for c in range(4)
    ]
    return probes, region_mirrors(probes)


def test_mirror_images_are_the_reflected_regions_of_the_family():
    probes, mirrors = _cells()
    assert mirrors[0] == [3, 12, 15] and mirrors[5] == [6, 9, 10] and mirrors[6] == [5, 9, 10]


def test_a_region_hit_as_often_as_its_mirror_images_is_objects_not_a_mark():
    _, mirrors = _cells()
    regions = S.RegionInfo([1 / 16] * 16, ["cell"] * 16, np.eye(16, dtype=bool), mirrors)
    for objects, expected in ((False, [(5, 0)]), (True, [])):
        drop, pred = _corner_and_centre_sweep(objects)
        tests = S.probe_tests(drop, pred, np.unique(pred), *regions)
        found = rules.select_candidates(tests, drop, pred)
        assert [(t.probe, t.cls) for t in found] == expected


def _global_mark(natural_hits: int):
    """240 rows of 3 classes under one global probe (area 0). 24 rows of class 0 carry a mark
    the probe removes (drop 0.8): 12 of them changed 1.8x as much as an ordinary row, 12 only
    1.4x (a mark that is a small part of what the fill changes). ``natural_hits`` unmarked
    rows of class 0, changed as much as any row, also fall (the class needs what the fill
    removes)."""
    rng = np.random.default_rng(2)
    pred = np.repeat(np.arange(3), 80)
    dose = rng.uniform(0.9, 1.1, size=(240, 1))
    drop = np.zeros((240, 1))
    dose[:12], dose[12:24] = 1.8, 1.4
    drop[:24] = 0.8
    drop[24 : 24 + natural_hits] = 0.6
    regions = S.RegionInfo([0.0], ["image"], np.zeros((1, 1), bool))
    tests = S.probe_tests(drop, pred, np.unique(pred), *regions, dose)
    return next(t for t in tests if t.cls == 0), drop, pred, regions, dose


def test_a_global_candidates_dose_floor_goes_down_while_its_flags_stay_clean():
    test, drop, pred, regions, dose = _global_mark(natural_hits=0)
    assert rules.select_candidates([test], drop, pred)  # found on its strongly changed rows
    tau, lift = thresholds.row_threshold(test, drop, pred, regions, dose)
    counted = (pred == 0) & (drop[:, 0] >= tau) & (dose[:, 0] >= S.dose_floor(dose[:, 0], lift))
    assert lift == min(thresholds.ROW_DOSE_LIFTS) and counted[:24].all() and not counted[24:].any()
    # where the class's ordinary rows fall under the fill too, the floor stops above them
    test, drop, pred, regions, dose = _global_mark(natural_hits=30)
    tau, lift = thresholds.row_threshold(test, drop, pred, regions, dose)
    counted = (pred == 0) & (drop[:, 0] >= tau) & (dose[:, 0] >= S.dose_floor(dose[:, 0], lift))
    assert min(thresholds.ROW_DOSE_LIFTS) < lift < S.MIN_DOSE_LIFT
    assert counted[:24].all() and not counted[24:].any()


def _quarter_sweep(seed: int = 3):
    """The 9 quarters of a 96 px image (3 x 3 at a stride of a quarter side), 240 rows of 3
    classes: class 1 falls whenever a quarter is hidden, more often at the top (60% of its rows
    under the top row, 40% the middle row, 15% the bottom row: a class that needs most of the
    image); class 0 carries a mark in the bottom-right corner that only the quarters covering
    it hide (24 rows at the bottom-right quarter, 12 at its two half-overlapping neighbours)."""
    from fastfem.audit.reliance.probes import Probe, region_mirrors, region_overlaps
    from fastfem.kernels.occlusion import region_family

    quarters = [r for r in region_family(96, 96) if r.kind == "quarter"]
    probes = [Probe(r, ("inpaint",)) for r in quarters]
    rng = np.random.default_rng(seed)
    pred = np.repeat(np.arange(3), 80)
    drop = np.where(rng.uniform(size=(240, 9)) < 0.02, 0.6, 0.0)
    rate = np.repeat([0.6, 0.4, 0.15], 3)  # quarter k = row * 3 + col
    drop[80:160] = np.where(rng.uniform(size=(80, 9)) < rate, 0.6, 0.0)
    drop[:24, 8] = 0.6
    drop[:12, [5, 7]] = 0.6
    regions = S.RegionInfo(
        [float(r.mask.mean()) for r in quarters],
        [r.kind for r in quarters],
        region_overlaps(probes),
        region_mirrors(probes),
    )
    return drop, pred, regions


def test_a_class_that_needs_most_of_the_image_is_not_a_mark_of_its_upper_half(monkeypatch):
    drop, pred, regions = _quarter_sweep()
    tests = S.probe_tests(drop, pred, np.unique(pred), *regions)
    found = {(t.probe, t.cls) for t in rules.select_candidates(tests, drop, pred)}
    assert (8, 0) in found  # the mark's quarter
    assert not any(c == 1 for _, c in found)  # family lift: 1.5 at most for class 1
    upper = next(t for t in tests if (t.probe, t.cls) == (1, 1))
    assert upper.place_lift >= rules.MIN_LIFT > upper.family_lift  # only the family lift holds
    monkeypatch.setattr(S, "FAMILY_PEAK_MEMBERS", 100)  # without it: a false candidate
    tests = S.probe_tests(drop, pred, np.unique(pred), *regions)
    assert any(t.cls == 1 for t in rules.select_candidates(tests, drop, pred))


def test_one_fragile_other_class_does_not_hide_a_mark_of_another():
    # class 0 falls under every region (a class predicted from weak, spread-out evidence);
    # region 7 holds a mark class 2 relies on. Pooled in, class 0's hits there lift the other
    # classes' rate to class 2's own; the lift compares with the median other class.
    drop, pred = _null_sweep(rate=0.02)
    rng = np.random.default_rng(3)
    fragile = pred == 0
    drop[fragile] = np.where(rng.uniform(size=(fragile.sum(), drop.shape[1])) < 0.6, 0.7, 0.0)
    marked = np.flatnonzero(pred == 2)[:40]
    drop[marked, 7] = 0.8
    hit = drop >= S.TAU
    q = others.others_rate(others.class_hits(hit, pred), 2)
    per_class = sorted((hit[pred == k, 7].sum() + 1) / (np.sum(pred == k) + 2) for k in (0, 1, 3))
    assert q[7] == pytest.approx(per_class[1])  # the median of the three other classes
    pooled = (np.sum(hit[:, 7] & (pred != 2)) + 1) / (np.sum(pred != 2) + 2)
    assert (40 / np.sum(pred == 2)) / pooled < rules.MIN_LIFT  # the pooled lift would miss it
    tests = S.probe_tests(drop, pred, np.unique(pred))
    found = rules.select_candidates(tests, drop, pred)
    assert [(t.probe, t.cls) for t in found] == [(7, 2)]
    assert found[0].lift > 5
    # fewer than MEDIAN_OTHERS other classes: the pooled rate
    two = pred % 2
    q2 = others.others_rate(others.class_hits(hit, two), 1)
    assert q2[7] == pytest.approx((np.sum(hit[:, 7] & (two == 0)) + 1) / (np.sum(two == 0) + 2))


def _fragile_sweep(everywhere: float, at_mark: float):
    """Classes 0 and 1 fall under every region on ``everywhere`` of their rows (on ``at_mark``
    at region 7), class 3 on 2%; class 2 on none, but region 7 knocks out 40 of its rows."""
    drop, pred = _null_sweep(rate=0.02)
    rng = np.random.default_rng(5)
    for k in (0, 1):
        rows = pred == k
        u = rng.uniform(size=(rows.sum(), drop.shape[1]))
        drop[rows] = np.where(u < everywhere, 0.7, 0.0)
        drop[rows, 7] = np.where(u[:, 7] < at_mark, 0.7, 0.0)
    drop[pred == 2] = 0.0
    drop[np.flatnonzero(pred == 2)[:40], 7] = 0.8
    return drop, pred


def test_classes_fragile_everywhere_do_not_hide_a_mark_of_a_robust_class(monkeypatch):
    # Two of the three other classes fall under any region (measured: a ResNet's photos
    # classes, 0.4-0.75 of their rows at every region): their rate at region 7 says how
    # fragile they are, not that region 7 hides their objects. At class 2's fragility they
    # would fall there on few rows; the mark class 2 relies on is found.
    drop, pred = _fragile_sweep(everywhere=0.5, at_mark=0.5)
    hit = drop >= S.TAU
    plain = others.others_rate(others.class_hits(hit, pred), 2)
    assert (40 / np.sum(pred == 2)) / plain[7] < 1.0  # the unmatched lift: no candidate
    tests = S.probe_tests(drop, pred, np.unique(pred))
    found = rules.select_candidates(tests, drop, pred)
    assert [(t.probe, t.cls) for t in found] == [(7, 2)]
    assert found[0].lift > 5
    monkeypatch.setattr(others, "FRAGILE_RATIO", 1000.0)  # none fragile enough: not matched
    tests = S.probe_tests(drop, pred, np.unique(pred))
    assert rules.select_candidates(tests, drop, pred) == []


def test_a_region_that_hides_every_class_is_no_mark_of_the_robust_one(monkeypatch):
    # Region 7 knocks out the fragile classes three times as often as any other region (it
    # hides their objects: the centre of centred objects): it is special for them too, so
    # their rate there is not scaled to class 2's fragility, and class 2, knocked out there
    # alone on 40 rows, has no lift over them. Scaled anyway, it would pass.
    drop, pred = _fragile_sweep(everywhere=0.3, at_mark=0.9)
    tests = S.probe_tests(drop, pred, np.unique(pred))
    t = next(t for t in tests if (t.probe, t.cls) == (7, 2))
    assert t.lift < 1.0 and rules.select_candidates(tests, drop, pred) == []
    monkeypatch.setattr(others, "PLAIN_EXCESS", 100.0)
    tests = S.probe_tests(drop, pred, np.unique(pred))
    assert [(t.probe, t.cls) for t in rules.select_candidates(tests, drop, pred)] == [(7, 2)]


def test_a_candidate_must_collapse_its_class_not_dent_it():
    # region 7 knocks out 30 rows of class 1 far more than elsewhere: by 0.3 (part of an
    # object hidden: a dent) the region is not a candidate; by 0.7 (the class's evidence
    # gone) it is. The lifts are the same either way.
    drop, pred = _null_sweep(rate=0.02)
    rows = np.flatnonzero(pred == 1)[:30]
    for fall, found in ((0.3, False), (0.7, True)):
        d = drop.copy()
        d[rows, 7] = fall
        tests = S.probe_tests(d, pred, np.unique(pred))
        t = next(t for t in tests if (t.probe, t.cls) == (7, 1))
        assert t.lift > 5 and t.place_lift > 5 and t.hits >= 30
        assert t.collapse == pytest.approx(
            np.mean(d[d[:, 7] >= S.TAU][pred[d[:, 7] >= S.TAU] == 1, 7] >= 0.5)
        )
        assert (
            (7, 1) in {(u.probe, u.cls) for u in rules.select_candidates(tests, d, pred)}
        ) is found
    # a global probe's collapse counts its dosed hits only
    mine = pred == 1
    hit = np.zeros(len(pred), bool)
    hit[rows] = True
    dose = np.where(hit, 3.0, 1.0)
    deep = np.zeros(len(pred), bool)
    deep[rows[:10]] = True
    g = S.global_test(0, 1, mine, hit, dose, deep=deep)
    assert g.hits == 30 and g.collapse == pytest.approx(10 / 30)


def test_of_two_regions_hiding_the_same_mark_the_more_significant_stands_for_it():
    # region 7 knocks out 36 rows of class 2 (and 4 of each other class), region 8 — a weaker
    # instrument over the same mark — 14 of them and none elsewhere: 8 is the more specific
    # (larger lift), 7 the more significant (smaller p-value) and the one that covers the mark
    drop, pred = _null_sweep(rate=0.0)
    rows = np.flatnonzero(pred == 2)[:36]
    drop[rows, 7] = 0.8
    for k in (0, 1, 3):
        drop[np.flatnonzero(pred == k)[:4], 7] = 0.8
    drop[rows[:14], 8] = 0.8
    tests = S.probe_tests(drop, pred, np.unique(pred))
    t7, t8 = (next(t for t in tests if (t.probe, t.cls) == (p, 2)) for p in (7, 8))
    assert min(t8.lift, t8.place_lift) > min(t7.lift, t7.place_lift) and t7.p_value < t8.p_value
    assert [(t.probe, t.cls) for t in rules.select_candidates(tests, drop, pred)] == [(7, 2)]


def test_a_region_that_is_not_enough_by_itself_is_skipped_and_hides_nothing():
    drop, pred = _null_sweep(rate=0.0)
    rows = np.flatnonzero(pred == 2)[:36]
    drop[rows, 7] = 0.8
    drop[rows[:30], 8] = 0.8  # the same finding, less significant
    tests = S.probe_tests(drop, pred, np.unique(pred))
    asked = []

    def enough(t):
        asked.append(t.probe)
        return t.probe != 7

    found = rules.select_candidates(tests, drop, pred, enough=enough)
    assert [(t.probe, t.cls) for t in found] == [(8, 2)]  # 7 refused: 8 is not redundant
    assert asked == [7, 8]  # asked only of the tests that would be taken
    assert [t.probe for t in rules.select_candidates(tests, drop, pred)] == [7]


def test_sufficient_needs_the_transplant_above_its_null_and_a_multiple_of_it():
    assert rules.sufficient(0.76, 0.37) and rules.sufficient(0.25, 0.0)
    assert not rules.sufficient(0.1, 0.0)  # too few rows moved at all
    assert not rules.sufficient(0.95, 0.6)  # 0.35 above, but the seams alone move 60%


def test_a_tag_in_any_corner_is_found_by_the_corners_together():
    # class 2's rows carry a 6 px tag in one of the four corners, at random; a region hides
    # it when it covers the tag whole. Objects sit inside the frame: a region of a quarter of
    # the image or more (wide bands and columns, quarters) hides the object of 15% of every
    # class's rows, the others and the corners (no object there) 3%. Each corner cell alone
    # is hit as often as its mirror images (the other corners), which the place lift reads as
    # objects; the four corners together hide every tag.
    from fastfem.audit.reliance.probes import Probe, region_mirrors, region_overlaps
    from fastfem.kernels.occlusion import region_family

    rng = np.random.default_rng(5)
    probes = [Probe(r, ("inpaint",)) for r in region_family(64, 64)]
    masks = np.stack([p.region.mask > 0 for p in probes])
    pred = np.repeat(np.arange(4), 80)
    big = np.asarray([p.region.mask.mean() >= 0.25 and p.region.kind != "corners" for p in probes])
    drop = np.where(rng.uniform(size=(320, len(probes))) < np.where(big, 0.15, 0.03), 0.6, 0.0)
    for i in np.flatnonzero(pred == 2)[:40]:
        y, x = (int(rng.choice([2, 56])) for _ in range(2))
        drop[i, masks[:, y : y + 6, x : x + 6].all(axis=(1, 2))] = 0.9
    kinds = [p.region.kind for p in probes]
    areas = [float(p.region.mask.mean()) for p in probes]
    regions = S.RegionInfo(areas, kinds, region_overlaps(probes), region_mirrors(probes))
    tests = S.probe_tests(drop, pred, np.unique(pred), *regions)
    found = rules.select_candidates(tests, drop, pred)
    assert [(probes[t.probe].region.name, t.cls) for t in found] == [("corners", 2)]
    alone = [k for k, p in enumerate(probes) if p.region.kind != "corners"]
    tests = S.probe_tests(drop[:, alone], pred, np.unique(pred), *_subset(regions, alone))
    assert rules.select_candidates(tests, drop[:, alone], pred) == []  # no corner by itself


def _subset(regions, keep):
    """``regions`` (`stats.RegionInfo`) of the probes ``keep`` only, renumbered."""
    index = {k: j for j, k in enumerate(keep)}
    mirrors = [[index[m] for m in regions.mirrors[k] if m in index] for k in keep]
    return S.RegionInfo(
        [regions.areas[k] for k in keep],
        [regions.families[k] for k in keep],
        regions.overlaps[np.ix_(keep, keep)],
        mirrors,
    )


def test_near_misses_are_the_tests_close_to_every_rule_with_what_they_lack():
    # region 7 knocks out 30 rows of class 1 and nothing elsewhere; how many of them collapse
    # (fall by 0.5) decides: 10 of 30 passes (1/3), 9 (0.3: 90% of the floor) is a near miss
    # that lacks the collapse, 3 (0.1) is neither
    drop, pred = _null_sweep(rate=0.0)
    rows = np.flatnonzero(pred == 1)[:30]
    got = {}
    for deep in (10, 9, 3):
        d = drop.copy()
        d[rows, 7] = 0.3
        d[rows[:deep], 7] = 0.7
        tests = S.probe_tests(d, pred, np.unique(pred))
        taken = rules.select_candidates(tests, d, pred)
        near = rules.near_misses(tests, taken, d, pred)
        t = next(t for t in tests if (t.probe, t.cls) == (7, 1))
        got[deep] = (
            (7, 1) in {(u.probe, u.cls) for u in taken},
            t in near,
            rules.shortfall(t, 160),
        )
    assert got[10] == (True, False, "")
    assert got[9][:2] == (False, True) and got[9][2] == "collapse 0.3 < 0.333"
    assert got[3][:2] == (False, False)
    assert rules.standing(t, 160) == pytest.approx(0.1 / (1 / 3))


def test_a_region_refused_by_the_transplant_test_is_a_near_miss_once():
    drop, pred = _null_sweep(rate=0.0)
    rows = np.flatnonzero(pred == 2)[:36]
    drop[rows, 7] = 0.8
    drop[rows[:30], 8] = 0.8  # the same finding: reported once, by the more significant
    tests = S.probe_tests(drop, pred, np.unique(pred))
    refused = rules.select_candidates(tests, drop, pred, enough=lambda t: False)
    near = rules.near_misses(tests, refused, drop, pred)
    assert refused == [] and [(t.probe, t.cls) for t in near] == [(7, 2)]
    assert rules.passes(near[0], len(tests)) and rules.shortfall(near[0], len(tests)) == ""
    # taken as a candidate, neither it nor its repeat is a near miss
    taken = rules.select_candidates(tests, drop, pred)
    assert rules.near_misses(tests, taken, drop, pred) == []


def test_a_colour_test_is_a_lead_at_the_colour_lift_and_never_without_it():
    from dataclasses import replace

    # a colour probe's test that passes every rule but the global lift floor (5) is a lead at
    # the colour floor (2), below a region's (2.5: a mark the model follows on part of its
    # images, like the photos' sticker at 2.43); one at 0.8 of that floor is a near miss like
    # any other test, below it none; the same tests of another probe are none
    n = 160
    t = S.ProbeTest(3, 1, 30, 80, 2, 240, 3.0, 1e-12, 20.0, dose_lift=3.0, collapse=0.7)
    assert rules.shortfall(t, n) == "lift 3 < 5" and rules.colour_lead(t, n)
    assert rules.shortfall(t, n, colour=True) == ""
    partial = replace(t, lift=2.2)
    assert rules.MIN_COLOUR_LIFT < partial.lift < rules.MIN_LIFT
    assert rules.colour_lead(partial, n) and not rules.passes(partial, n)
    close, weak = replace(t, lift=1.7), replace(t, lift=1.5)
    assert not rules.colour_lead(close, n) and not rules.colour_lead(weak, n)
    assert rules.shortfall(close, n, colour=True) == "lift 1.7 < 2"
    drop, pred = _null_sweep(rate=0.0)
    near = rules.near_misses([t, close, weak], [], drop, pred, n, colour={3})
    assert near == [t, close]
    assert rules.passes(t, n) is False and rules.passes(replace(t, lift=6.0), n)
    assert rules.near_misses([t, close, weak], [], drop, pred, n) == []  # standing 3 / 5 < 0.8


def test_a_hue_s_area_view_is_a_lead_only_at_the_global_lift():
    from dataclasses import replace

    # a hue by area (`no <hue> area`) is a colour probe held to the global floor (5): large
    # areas of a colour are a class's own objects and scenes (the photos' class 1 magenta at
    # 2.05); the same test by vividness is a lead at 2.05
    n = 160
    t = S.ProbeTest(3, 1, 30, 80, 2, 240, 2.05, 1e-12, 20.0, dose_lift=3.0, collapse=0.7)
    area = replace(t, area=True)
    assert rules.colour_lead(t, n) and not rules.colour_lead(area, n)
    assert rules.shortfall(area, n, colour=True) == "lift 2.05 < 5"
    assert rules.colour_lead(replace(area, lift=5.7), n)


def test_without_labels_a_colour_lead_on_part_of_its_class_is_a_candidate():
    from dataclasses import replace

    # the lead above knocks out 30 of its class's 80 rows: without labels a candidate, taken
    # after a test of any other probe, flagging every row (it needs no labels). Knocking out
    # 70 of them (the class's own colour is on its images) it stays a lead and says why; a
    # colour test short of a lead is none; with labels, the labels decide
    n = 160
    t = S.ProbeTest(3, 1, 30, 80, 2, 240, 3.0, 1e-12, 20.0, dose_lift=3.0, collapse=0.7)
    drop, pred = _null_sweep(rate=0.0)
    assert rules.select_candidates([t], drop, pred, n, colour={3}) == [t]
    assert not rules.needs_labels(t, n, {3}, labelled=False) and rules.needs_labels(t, n, {3})
    whole = replace(t, hits=70)
    assert whole.rate > rules.MAX_COLOUR_RATE >= t.rate and rules.colour_lead(whole, n)
    assert rules.select_candidates([whole], drop, pred, n, colour={3}) == []
    assert rules.needs_labels(whole, n, {3}, labelled=False)
    status = rules.why_not(whole, n, {}, kind="a colour")
    assert "a colour" in status and "knocks out 0.88 of its class > 0.75" in status, status
    # ... unless its rows, the colour taken away, go back to many classes (`returns`)
    back, one = replace(whole, return_share=0.3), replace(whole, return_share=0.6)
    assert rules.select_candidates([back], drop, pred, n, colour={3}) == [back]
    assert rules.select_candidates([one], drop, pred, n, colour={3}) == []
    status = rules.why_not(one, n, {}, kind="a colour")
    assert status.endswith("; its rows go to one class: 0.60 >= 0.5"), status
    assert rules.select_candidates([replace(t, lift=1.9)], drop, pred, n, colour={3}) == []
    assert rules.select_candidates([t], drop, pred, n, None, {3}, lambda u: False) == []
    assert rules.select_candidates([t], drop, pred, n, None, {3}, lambda u: True) == [t]
    # labels that say nothing (`labels.labels_verdict` None) leave a colour lead on part of
    # its class a candidate, not one on all of it, nor a near miss of another probe
    assert rules.select_candidates([t], drop, pred, n, None, {3}, lambda u: None) == [t]
    assert rules.select_candidates([whole], drop, pred, n, None, {3}, lambda u: None) == []
    near = replace(t, lift=2.2, dose_lift=float("inf"))  # a region at 0.88 of its floor
    assert rules.standing(near, n) >= rules.NEAR_MISS and not rules.passes(near, n)
    assert rules.select_candidates([near], drop, pred, n, None, (), lambda u: None) == []
    assert rules.select_candidates([near], drop, pred, n, None, (), lambda u: True) == [near]
    # a region test that passes every rule comes first
    band = S.ProbeTest(5, 2, 20, 80, 2, 240, 9.0, 1e-9, 9.0, collapse=0.8)
    assert rules.select_candidates([t, band], drop, pred, n, colour={3}) == [band, t]


def test_a_clean_sweep_has_no_near_miss():
    drop, pred = _null_sweep()
    tests = S.probe_tests(drop, pred, np.unique(pred))
    assert rules.near_misses(tests, [], drop, pred) == []


def test_the_rules_are_the_candidate_rules():
    # passes() is exactly what select_candidates keeps: over many random sweeps, a test is
    # taken only if it passes, and each passing test is taken or repeats one taken
    rng = np.random.default_rng(3)
    for seed in range(20):
        drop, pred = _null_sweep(seed=seed, rate=0.05)
        rows = np.flatnonzero(pred == seed % 4)[: rng.integers(3, 40)]
        drop[rows, seed % 40] = rng.choice([0.3, 0.7], len(rows))
        tests = S.probe_tests(drop, pred, np.unique(pred))
        n = len(tests)
        taken = rules.select_candidates(tests, drop, pred)
        assert all(rules.passes(t, n) for t in taken)
        for t in tests:
            if rules.passes(t, n) and t not in taken:
                assert rules._repeats(t, taken, drop, pred)


def test_label_evidence_is_the_share_of_hit_rows_labelled_another_class():
    # class 0's rows 0-9 are dosed and knocked out, 8 of them labelled 1 (a mark moved them);
    # its other rows are labelled 0, one of them 1; rows without a label are left out
    n = 60
    pred = np.repeat([0, 1], 30)
    drop = np.zeros((n, 1))
    dose = np.full((n, 1), 0.1)
    drop[:10, 0], dose[:10, 0] = 0.6, 1.0
    labels = pred.copy()
    labels[:8] = 1
    labels[20] = 1
    labels[25:30] = -1  # no label
    t = S.ProbeTest(0, 0, 10, 30, 0, 30, 9.0, 1e-9, 9.0, dose_lift=3.0)
    share, rest = label_evidence(t, drop, dose, pred, labels)
    assert (share, rest) == (0.8, 1 / 15)
    assert labels_confirm(share, rest)
    assert not labels_confirm(0.8, 0.45)  # other labels everywhere in the class
    assert not labels_confirm(0.4, 0.0)  # most of its rows are the class's own
    own = label_evidence(t, drop, dose, pred, pred)
    assert own == (0.0, 0.0) and not labels_confirm(*own)
    none = label_evidence(t, drop, dose, pred, np.full(n, -1))
    assert np.isnan(none).all() and not labels_confirm(*none)
    # the labels' word: confirm, disown (the class's own rows), or nothing to say
    assert labels_verdict(share, rest) is True and labels_verdict(*own) is False
    assert labels_verdict(0.8, 0.45) is None and labels_verdict(*none) is None
    assert labels_verdict(0.4, 0.0) is False


def test_a_colour_lead_the_labels_confirm_comes_after_a_region_finding_the_same_rows():
    # a red line in a band: the band and `no red` knock out the same 10 rows of class 0, the
    # colour more significantly; the band is the finding (it flags every row it knocks out),
    # the colour a repeat of it. Alone, the colour is a candidate only with the labels.
    pred = np.repeat([0, 1], 30)
    drop = np.zeros((60, 2))
    drop[:10] = 0.6
    band = S.ProbeTest(0, 0, 10, 30, 0, 30, 9.0, 1e-6, 9.0, collapse=1.0)
    red = S.ProbeTest(1, 0, 10, 30, 0, 30, 9.0, 1e-9, 9.0, dose_lift=3.0, collapse=1.0)
    yes = lambda t: True  # noqa: E731
    assert rules.select_candidates([red, band], drop, pred, 4, None, {1}, yes) == [band]
    assert rules.select_candidates([red], drop, pred, 4, None, {1}, yes) == [red]
    assert rules.select_candidates([red], drop, pred, 4, None, {1}, lambda t: False) == []
    assert rules.select_candidates([red, band], drop, pred, 4, None, {1}) == [band]
    assert rules.select_candidates([red], drop, pred, 4, None, {1}) == [red]  # 10 of 30 rows


def test_labels_make_a_candidate_of_a_near_miss_and_of_nothing_further():
    # region 7 knocks out 30 rows of class 1, 9 of them collapse (0.3: 90% of the floor, a
    # near miss): with labels that confirm it a candidate, taken after one that passes every
    # rule (region 5, class 2), and flagged by its labels (`needs_labels`); at 3 collapsed
    # (0.1) no labels make it one; nor does a labels' "no"
    drop, pred = _null_sweep(rate=0.0)
    d = drop.copy()
    near_rows, pass_rows = np.flatnonzero(pred == 1)[:30], np.flatnonzero(pred == 2)[:30]
    d[near_rows, 7], d[near_rows[:9], 7] = 0.3, 0.7
    d[pass_rows, 5] = 0.7
    tests = S.probe_tests(d, pred, np.unique(pred))
    n = len(tests)
    yes, no = (lambda t: True), (lambda t: False)  # noqa: E731
    got = rules.select_candidates(tests, d, pred, n, None, (), yes)
    assert [(t.probe, t.cls) for t in got] == [(5, 2), (7, 1)]
    assert [rules.needs_labels(t, n) for t in got] == [False, True]
    assert [(t.probe, t.cls) for t in rules.select_candidates(tests, d, pred, n)] == [(5, 2)]
    assert [(t.probe, t.cls) for t in rules.select_candidates(tests, d, pred, n, by_labels=no)] == [
        (5, 2)
    ]
    d[near_rows[3:9], 7] = 0.3  # 3 of 30 collapse: far from the floor
    tests = S.probe_tests(d, pred, np.unique(pred))
    assert [
        (t.probe, t.cls) for t in rules.select_candidates(tests, d, pred, n, None, (), yes)
    ] == [(5, 2)]


def test_a_region_s_label_evidence_counts_every_row_it_knocks_out():
    # a region has no dose: its hit rows are the class's rows it knocks out, whatever the
    # doses of a global probe would say
    pred = np.repeat([0, 1], 30)
    drop = np.zeros((60, 1))
    drop[:10, 0] = 0.6
    labels = pred.copy()
    labels[:6] = 1
    dose = np.zeros((60, 1))
    dose[:2, 0] = 1.0  # as a global probe's, only 2 rows would be dosed
    t = S.ProbeTest(0, 0, 10, 30, 0, 30, 9.0, 1e-9, 9.0, collapse=1.0)
    assert label_evidence(t, drop, None, pred, labels) == (0.6, 0.0)
    assert label_evidence(t, drop, dose, pred, labels) == (1.0, 4 / 28)


def _only_here_reference(hit, compare, families):
    """`S.only_here_hits` written from its formula, row by row."""
    out = hit.copy()
    for p in range(hit.shape[1]):
        others = np.flatnonzero(compare[p])
        if not families[p] or not len(others) or any(families[j] != families[p] for j in others):
            continue
        for i in range(hit.shape[0]):
            out[i, p] = hit[i, p] and not any(hit[i, j] for j in others)
    return out


def test_only_here_hits_equal_a_reference_written_from_the_formula():
    rng = np.random.default_rng(5)
    # 6 bands (each overlapping its neighbours), a border ring, the whole image
    areas = [1 / 6] * 6 + [0.1, 0.0]
    families = np.asarray(["band"] * 6 + ["border", "image"], dtype=object)
    overlaps = np.eye(8, dtype=bool)
    for k in range(5):
        overlaps[k, k + 1] = overlaps[k + 1, k] = True
    compare = S.translates(areas, families, overlaps)
    hit = rng.uniform(size=(60, 8)) < 0.3
    got = S.only_here_hits(hit, compare, families, [True] * 8)
    assert np.array_equal(got, _only_here_reference(hit, compare, families))
    assert not np.array_equal(got, hit)  # it removed something: the test can fail
    assert np.array_equal(got[:, 6:], hit[:, 6:])  # no translates: every hit kept
    counted = [True, False] * 4  # a probe not counted keeps every hit
    got = S.only_here_hits(hit, compare, families, counted)
    want = _only_here_reference(hit, compare, families)
    assert np.array_equal(got[:, 0::2], want[:, 0::2]) and np.array_equal(
        got[:, 1::2], hit[:, 1::2]
    )


def _mark_over_objects(objects_at_mirror: bool):
    """8 non-overlapping bands (band k mirrors band 7 - k), 4 classes of 80 rows. Class 0: rows
    0-19 carry a mark in band 6 (hit there only); rows 20-59 are objects the bands 3-6 all hide
    (or, ``objects_at_mirror``, the bands 1-2: the mirror image of band 6 and its neighbour).
    Other classes: scattered hits."""
    rng = np.random.default_rng(6)
    pred = np.repeat(np.arange(4), 80)
    drop = np.where(rng.uniform(size=(320, 8)) < 0.02, 0.6, 0.0)
    drop[:80] = 0.0
    drop[:20, 6] = 0.8
    drop[20:60, [1, 2] if objects_at_mirror else [3, 4, 5, 6]] = 0.8
    mirrors = [[7 - k] for k in range(8)]
    regions = S.RegionInfo([1 / 8] * 8, ["band"] * 8, np.eye(8, dtype=bool), mirrors)
    return drop, pred, regions


def test_a_mark_over_a_class_s_objects_stands_out_on_the_rows_only_its_band_knocks_out():
    drop, pred, regions = _mark_over_objects(objects_at_mirror=False)
    every = S.probe_tests(drop, pred, np.unique(pred), *regions)
    here = S.probe_tests(drop, pred, np.unique(pred), *regions, only_here=[True] * 8)
    t = next(u for u in every if (u.probe, u.cls) == (6, 0))
    u = next(u for u in here if (u.probe, u.cls) == (6, 0))
    # every hit: 60 at band 6, 40 at bands 3-5 (the translates' upper quartile) -> 60 / 41
    assert t.hits == 60 and t.place_lift == pytest.approx(60 / 41) and not t.only_here
    # only here: the 20 marked rows; the translates and the mirror none -> 20 / 1
    assert u.hits == 20 and u.place_lift == pytest.approx(20.0) and u.only_here
    assert u.collapse == 1.0
    n_tests = len(every)
    assert not rules.passes(t, n_tests) and rules.passes(u, n_tests)
    assert rules.stronger(t, u, n_tests) is u and rules.stronger(u, None, n_tests) is u
    # a second count that fails a rule never stands for the test, even nearer to passing
    near = dataclasses.replace(u, place_lift=2.4)
    assert rules.standing(near, n_tests) > rules.standing(t, n_tests)
    assert rules.stronger(t, near, n_tests) is t
    merged = [rules.stronger(a, b, n_tests) for a, b in zip(every, here, strict=True)]
    found = rules.select_candidates(merged, drop, pred, n_tests)
    assert [(f.probe, f.cls, f.only_here) for f in found] == [(6, 0, True)]


def test_the_mirror_image_is_counted_on_every_hit():
    # the class's objects, hidden by the mirror image of band 6 and its neighbour, are not
    # knocked out there only; under the object null the mirror image's every hit bounds band
    # 6's: (20 / 80) / (40 / 80 + 1 / 80)
    drop, pred, regions = _mark_over_objects(objects_at_mirror=True)
    here = S.probe_tests(drop, pred, np.unique(pred), *regions, only_here=[True] * 8)
    u = next(u for u in here if (u.probe, u.cls) == (6, 0))
    assert u.hits == 20 and u.place_lift == pytest.approx(20 / 41)


def test_a_test_that_passes_on_every_hit_is_kept_as_it_is():
    drop, pred, regions = _mark_over_objects(objects_at_mirror=False)
    drop[20:60, [3, 4, 5]] = 0.0  # the objects only under band 6 too: every hit passes
    every = S.probe_tests(drop, pred, np.unique(pred), *regions)
    here = S.probe_tests(drop, pred, np.unique(pred), *regions, only_here=[True] * 8)
    t = next(u for u in every if (u.probe, u.cls) == (6, 0))
    u = next(u for u in here if (u.probe, u.cls) == (6, 0))
    assert rules.passes(t, len(every)) and rules.stronger(t, u, len(every)) is t


def test_a_test_that_passes_without_matching_comes_before_one_that_needs_it():
    # Region 7 (a band at the edge, no fragile class's object there) knocks out the 40 rows of
    # class 2's mark and nothing else; region 8 (larger, around it) those and 15 more of class
    # 2, and half the fragile classes' rows, as every region does. Region 8 passes its lift only
    # with those classes matched to class 2's fragility; its p-value is the smaller (more
    # hits), but region 7, which passes as it is, stands for the mark.
    drop, pred = _fragile_sweep(everywhere=0.5, at_mark=0.0)
    mine = np.flatnonzero(pred == 2)
    drop[mine[:55], 8] = 0.8
    tests = S.probe_tests(drop, pred, np.unique(pred))
    band, wide = (next(t for t in tests if (t.probe, t.cls) == (p, 2)) for p in (7, 8))
    assert band.plain_lift >= rules.MIN_LIFT > wide.plain_lift and wide.lift >= rules.MIN_LIFT
    assert wide.p_value < band.p_value
    found = rules.select_candidates(tests, drop, pred)
    assert [(t.probe, t.cls) for t in found] == [(7, 2)]


def test_return_share_is_the_largest_destination_s_share_of_the_rows_that_leave():
    from fastfem.audit.reliance.returns import MIN_RETURNS, goes_back, return_share

    rng = np.random.default_rng(0)
    top = rng.integers(0, 6, 200)
    hit = rng.uniform(size=200) < 0.5
    gone = top[hit & (top != 2)]  # a row that stays in class 2 goes nowhere
    want = max(np.sum(gone == k) for k in range(6)) / len(gone)
    assert return_share(top, hit, 2) == pytest.approx(want) and goes_back(want)
    assert return_share(np.where(hit, 4, top), hit, 2) == 1.0  # all to one class
    few = hit & (np.cumsum(hit & (top != 2)) < MIN_RETURNS)  # too few leave: not measured
    assert np.isnan(return_share(top, few, 2)) and not goes_back(np.nan)
    half = np.resize([0, 1], 40)  # two classes, half each: not under half
    assert return_share(half, np.ones(40, bool), 2) == 0.5 and not goes_back(0.5)
