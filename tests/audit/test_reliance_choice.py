"""The sweep's candidates (`fastfem.audit.reliance.choice`): each test the stronger of its two
counts (every hit, the rows only its region knocks out); a lead the labels confirm grows,
and sets its row threshold, on the rows it may flag — those labelled another class; a
candidate band grows into a pair of adjacent bands (`probes.adjacent_pairs`)."""

from __future__ import annotations

import zlib

import numpy as np

from fastfem.audit.reliance import rules, stats, thresholds
from fastfem.audit.reliance.choice import Sweep, choose
from fastfem.audit.reliance.labels import labelled_other, labels_verdict
from fastfem.audit.reliance.probes import (
    Probe,
    adjacent_pairs,
    narrow_regions,
    pair_drops,
    probe_drops,
    probe_params,
    sweep_probes,
)
from fastfem.kernels.occlusion import FILLS, region_family


def _background(seed: int) -> tuple[list[Probe], list[str], np.ndarray, np.ndarray]:
    """The real 64 px probe family (its probes and their names), 320 rows of 4 classes (80
    each) and their drops: 0.6 on 1% of (row, probe) pairs at random, else 0."""
    probes = sweep_probes(64, 64)
    rng = np.random.default_rng(seed)
    drop = np.where(rng.uniform(size=(320, len(probes))) < 0.01, 0.6, 0.0)
    return probes, [p.name for p in probes], np.repeat(np.arange(4), 80), drop


def _watermark_sweep(labelled: bool = True) -> tuple[Sweep, int, int]:
    """A sweep of 320 rows (4 classes) on the real 64 px probe family: class 1's first 40
    rows are images of other classes a mark moved to it, its height varying — the band y48-56
    hides it on 20 of them and half hides it on 8 more (a drop of 0.3), the band y40-56 hides
    it on 35. Every wide band also hides the class's own objects on 30 of its other rows,
    every other narrow band half hides them on 8. Returns the sweep and the two probes."""
    probes, names, pred, drop = _background(3)
    rng = np.random.default_rng(30)
    narrow, wide = names.index("band y48-56 (inpaint)"), names.index("band y40-56 (inpaint)")
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
    assert thresholds.row_threshold(lead, sw.drop, sw.pred, sw.regions, sw.dose)[0] > min(
        thresholds.ROW_TAUS
    )
    tau, _ = thresholds.row_threshold(lead, sw.drop, sw.flaggable, sw.regions, sw.dose)
    assert tau == min(thresholds.ROW_TAUS)


def test_the_rows_a_lead_may_flag_are_those_labelled_another_class():
    pred = np.asarray([0, 0, 1, 1, 2])
    labels = np.asarray([0, 1, 1, -1, 0])  # own, another, own, none, another
    assert labelled_other(pred, labels).tolist() == [-1, 0, -1, -1, 2]


class _Enough(Sweep):
    """The sweep with every transplant test passed (these tests are of the choice, which asks
    the model only for that)."""

    def enough(self, t: stats.ProbeTest) -> bool:
        return True


def _band_over_objects(labels: np.ndarray | None = None, fall: float = 0.6) -> tuple[_Enough, int]:
    """Real 64 px probe family; class 1's objects (rows 120-159) are hidden by every narrow
    band from y16 to y56 (their class's probability falling by ``fall``), a mark on rows
    80-104 by the band y48-56 only."""
    probes = sweep_probes(64, 64)
    names = [p.name for p in probes]
    narrow = names.index("band y48-56 (inpaint)")
    rng = np.random.default_rng(4)
    pred = np.repeat(np.arange(4), 80)
    drop = np.where(rng.uniform(size=(320, len(probes))) < 0.01, 0.6, 0.0)
    drop[80:160] = 0.0
    for j, p in enumerate(probes):
        y0, y1 = p.region.box[1], p.region.box[3]
        if p.region.kind == "band" and y0 >= 16 and y1 <= 56:
            drop[120:160, j] = fall
    drop[80:105, narrow] = 0.8
    sw = _Enough(None, np.zeros((320, 1)), probes, pred, drop, np.zeros_like(drop), labels=labels)
    return sw, narrow


def test_the_sweep_counts_a_band_over_objects_on_the_rows_only_it_knocks_out():
    # on every hit the band is the class's objects' (place lift under 2.5); on the rows only
    # it knocks out, the mark's
    sw, narrow = _band_over_objects()
    drop, pred = sw.drop, sw.pred
    every = stats.probe_tests(drop, pred, np.unique(pred), *sw.regions, sw.dose)
    t = next(u for u in every if (u.probe, u.cls) == (narrow, 1))
    assert t.hits == 65 and not rules.passes(t, sw.n_tests)
    u = next(u for u in sw.tests if (u.probe, u.cls) == (narrow, 1))
    assert u.only_here and u.hits == 25 and rules.passes(u, sw.n_tests)
    found = rules.select_candidates(sw.tests, drop, pred, sw.n_tests, None, sw.colour)
    assert [(f.probe, f.cls) for f in found] == [(narrow, 1)]

    cands, _ = choose(sw)  # without labels it flags every row it knocks out
    assert [(c.test.probe, c.cls, c.by_labels) for c in cands] == [(narrow, 1, False)]


def test_with_labels_such_a_candidate_flags_only_rows_labelled_another_class():
    # the marked rows are images of other classes; the objects the band also hides are the
    # class's own: the labels confirm it, and it flags (and grows) on the marked rows alone
    labels = np.repeat(np.arange(4), 80)
    labels[80:105] = np.resize([0, 2, 3], 25)
    sw, narrow = _band_over_objects(labels)
    cands, _ = choose(sw)
    assert [(c.test.probe, c.cls, c.by_labels) for c in cands] == [(narrow, 1, True)]
    assert cands[0].label_other == 1.0 and cands[0].label_other_rest == 0.0


def test_with_labels_such_a_candidate_whose_flags_are_clean_flags_every_row():
    # the band dents the class's objects (a fall of 0.3: hits, not flags at 0.5): on every
    # row its flags are the mark's alone, and the labels, which confirm it, would take away
    # the marked rows of the class's own images (80-84)
    labels = np.repeat(np.arange(4), 80)
    labels[85:105] = np.resize([0, 2, 3], 20)
    sw, narrow = _band_over_objects(labels, fall=0.3)
    u = next(u for u in sw.tests if (u.probe, u.cls) == (narrow, 1))
    assert u.only_here and sw.by_labels(u) and sw.clean(u)
    cands, _ = choose(sw)
    assert [(c.test.probe, c.cls, c.by_labels) for c in cands] == [(narrow, 1, False)]
    tau, _ = thresholds.row_threshold(cands[0].test, sw.drop, sw.pred, sw.regions, sw.dose)
    flagged = (sw.pred == 1) & (sw.drop[:, narrow] >= tau)
    assert np.flatnonzero(flagged).tolist() == list(range(80, 105))
    sw, _ = _band_over_objects(labels)  # hidden (0.6), the objects would be flagged too
    assert not sw.clean(next(u for u in sw.tests if (u.probe, u.cls) == (narrow, 1)))


def test_the_regions_counted_where_only_they_knock_out_are_the_narrow_ones():
    probes = sweep_probes(64, 64)
    narrow = narrow_regions(probes)
    kinds = {}
    for p, n in zip(probes, narrow, strict=True):
        kinds.setdefault(p.region.kind, set()).add(bool(n))
    assert kinds["band"] == kinds["band wide"] == kinds["column"] == kinds["cell"] == {True}
    assert kinds["quarter"] == kinds["border"] == kinds["corners"] == kinds["image"] == {False}


def test_the_labels_are_asked_of_every_row_the_band_knocks_out_as_well():
    # 12 of the 25 rows only the band knocks out are labelled another class (0.48, under
    # half), and 21 of the 40 object rows it knocks out with its translates: over every row
    # it knocks out, 33 of 65 — the labels confirm it there, as they would a lead
    labels = np.repeat(np.arange(4), 80)
    labels[80:92] = 0
    labels[120:141] = 2
    sw, narrow = _band_over_objects(labels)
    u = next(u for u in sw.tests if (u.probe, u.cls) == (narrow, 1))
    assert u.only_here and sw.by_labels(u)
    assert sw.label_shares[narrow, 1] == (33 / 65, 0.0)
    labels[120:141] = 1  # the objects labelled as their class: 12 of 65, no label confirms
    sw, _ = _band_over_objects(labels)
    assert not sw.by_labels(u) and sw.label_shares[narrow, 1] == (12 / 25, 0.0)


def test_adjacent_pairs_are_the_overlapping_neighbours_of_the_narrow_bands_and_columns():
    probes = sweep_probes(64, 64)
    pairs = adjacent_pairs(probes)
    kinds = [q.region.kind for q, _, _ in pairs]
    assert kinds.count("band pair") == kinds.count("column pair") == 14 and len(kinds) == 28
    for q, i, j in pairs:
        a, b = probes[i].region, probes[j].region
        assert q.parts == (a, b) and a.kind == b.kind == q.region.kind.split()[0]
        np.testing.assert_array_equal(q.region.mask, np.maximum(a.mask, b.mask))
        assert 2 * (a.mask * b.mask).sum() == a.mask.sum()  # neighbours overlapping by half
        ys, xs = np.nonzero(q.region.mask)
        assert q.region.box == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        assert q.region.name == f"{a.name} or {b.name}" and q.hidden == (a, b)
    assert narrow_regions([q for q, _, _ in pairs]).all()
    drop = np.random.default_rng(0).uniform(size=(5, len(probes)))
    got = pair_drops(drop, pairs)
    for k, (_, i, j) in enumerate(pairs):
        np.testing.assert_array_equal(got[:, k], np.maximum(drop[:, i], drop[:, j]))


def test_a_pair_s_drop_is_the_largest_over_its_parts_of_the_smallest_over_the_fills():
    band = [r for r in region_family(32, 32) if r.kind == "band"]
    fills = ("inpaint", "mean")
    pair = adjacent_pairs([Probe(r, fills) for r in band[:2]])[0][0]
    params, owner = probe_params([Probe(band[0], fills), pair], None)
    assert params.masks.shape[0] == 8 and (owner[:, 0] >= 0).sum() == 6  # 2 + 2 parts x 2 fills
    assert [FILLS[f] for f in np.asarray(params.fills)[:6]] == ["inpaint", "mean"] * 3
    masks = np.asarray(params.masks)  # each part hidden on its own, under each fill
    for k, region in enumerate([band[0]] * 4 + [band[1]] * 2):
        np.testing.assert_array_equal(masks[k], region.mask)
    assert not masks[6:].any()  # padding
    drop = np.random.default_rng(1).uniform(size=(7, 8)).astype(np.float32)
    got = probe_drops(drop, owner, 2)
    np.testing.assert_array_equal(got[:, 0], np.minimum(drop[:, 0], drop[:, 1]))
    want = np.maximum(np.minimum(drop[:, 2], drop[:, 3]), np.minimum(drop[:, 4], drop[:, 5]))
    np.testing.assert_array_equal(got[:, 1], want)


def _shifting_mark() -> tuple[_Enough, int, int]:
    """Real 64 px probe family; class 1's rows 80-115 carry a mark whose height varies: the
    bands y44-52 and y48-56 both hide it on 18 rows, each alone on 9; the wide band y40-56
    hides it on all 36 and, like every wide band, the class's own objects on 30 of rows
    120-159. Returns the sweep and the two bands."""
    probes = sweep_probes(64, 64)
    names = [p.region.name for p in probes]
    upper, lower = names.index("band y44-52"), names.index("band y48-56")
    rng = np.random.default_rng(5)
    pred = np.repeat(np.arange(4), 80)
    drop = np.where(rng.uniform(size=(320, len(probes))) < 0.01, 0.6, 0.0)
    drop[80:160] = 0.0
    for j, p in enumerate(probes):
        if p.region.kind == "band wide":
            drop[rng.choice(np.arange(120, 160), 30, replace=False), j] = 0.6
    drop[80:107, upper] = 0.8
    drop[np.r_[80:98, 107:116], lower] = 0.8
    drop[80:116, names.index("band y40-56")] = 0.8
    sw = _Enough(None, np.zeros((320, 1)), probes, pred, drop, np.zeros_like(drop))
    return sw, upper, lower


def test_a_band_grows_into_the_pair_that_hides_a_mark_whose_height_varies():
    sw, upper, lower = _shifting_mark()
    assert sw.swept == len(sw.probes) - 28 and sw.n_tests == 4 * sw.swept
    assert all(t.probe < sw.swept for t in sw.tests)  # pairs are never candidates
    wide = next(
        t for t in sw.tests if t.cls == 1 and sw.probes[t.probe].region.name == "band y40-56"
    )
    assert wide.place_lift < rules.MIN_LIFT  # the wide band hides the objects as well
    cands, _ = choose(sw)
    assert [c.cls for c in cands] == [1]  # one finding: the other band repeats its rows
    (c,) = cands
    assert c.probe.region.name == "band y44-52 or band y48-56"
    assert [r.name for r in c.probe.parts] == ["band y44-52", "band y48-56"]
    tau, _ = thresholds.row_threshold(c.test, sw.drop, sw.pred, sw.regions, sw.dose)
    flagged = (sw.pred == 1) & (sw.drop[:, c.test.probe] >= tau)
    assert np.flatnonzero(flagged).tolist() == list(range(80, 116))  # every marked row


def test_pairs_do_not_change_the_swept_probes_tests():
    # a border ring or the centre, with no translates, is compared with regions of other
    # shapes: the swept ones, never a pair (two of them counted again)
    sw, _, _ = _shifting_mark()
    n = sw.swept
    alone = stats.probe_tests(
        sw.drop[:, :n],
        sw.pred,
        np.unique(sw.pred),
        sw.regions.areas[:n],
        sw.regions.families[:n],
        sw.regions.overlaps[:n, :n],
        sw.regions.mirrors[:n],
        dose=sw.dose[:, :n],
    )
    every = stats.probe_tests(sw.drop, sw.pred, np.unique(sw.pred), *sw.regions, sw.dose)
    assert [t for t in every if t.probe < n] == alone
    centre = [p.region.name for p in sw.probes].index("centre")
    compare = stats.translates(*sw.regions[:3], sw.regions.derived)
    assert compare[centre].any() and not compare[centre][n:].any()
    pooled = stats.translates(*sw.regions[:3])
    assert pooled[centre][n:].any()  # without ``derived`` the pairs would stand in


def _geometric_drops(marks: dict[int, tuple[int, int, int, int]], seed: int = 5):
    """A geometric stand-in for the model on 320 rows of 64 px images (4 classes of 80):
    a row falls by 0.8 under a region that covers its mark's box ``marks[row]`` (x0, y0, x1,
    y1) whole; every row of every class by 0.6 under 40% of the regions of a quarter of the
    image or more (they hide objects); else on 1% of (row, region) at random, each probe's
    draws its own (seeded by ``seed`` and its name: the same whatever else is swept). The same
    rule gives the swept probes' drops and those of the probes swept later (``sweep_more``)."""

    def drops(probes: list) -> tuple[np.ndarray, ...]:
        drop = np.zeros((320, len(probes)))
        for j, p in enumerate(probes):
            rng = np.random.default_rng([seed, zlib.crc32(p.name.encode())])
            drop[rng.uniform(size=320) < 0.01, j] = 0.6
            if p.region.kind == "image":
                continue
            if p.region.mask.mean() >= 0.2:
                drop[rng.uniform(size=320) < 0.4, j] = 0.6
            for row, (x0, y0, x1, y1) in marks.items():
                if p.region.mask[y0:y1, x0:x1].all():
                    drop[row, j] = 0.8
        return drop, np.zeros_like(drop), np.zeros(drop.shape, np.int64)

    return drops


def _corner_mark(straddling: int) -> tuple[_Enough, list[list]]:
    """Class 1's rows 80-139 carry a 12 px mark near the top-right corner, at y2-14 (inside
    the cell y0-16 x48-64) on all but ``straddling`` of them, at y6-18 (across the cell's
    lower edge, whole in no region of the family) on those. Returns the sweep, with
    ``sweep_more`` recording the probes it is asked for."""
    marks = {r: (50, 2, 62, 14) for r in range(80, 140 - straddling)}
    marks.update({r: (50, 6, 62, 18) for r in range(140 - straddling, 140)})
    drops = _geometric_drops(marks)
    asked: list[list] = []

    def sweep_more(probes: list) -> tuple[np.ndarray, ...]:
        asked.append(probes)
        return drops(probes)

    probes = sweep_probes(64, 64)
    drop, dose, _ = drops(probes)
    pred = np.repeat(np.arange(4), 80)
    sw = _Enough(None, np.zeros((320, 1)), probes, pred, drop, dose, sweep_more=sweep_more)
    return sw, asked


def test_a_cell_grows_by_the_margin_over_a_mark_that_straddles_its_edge():
    sw, asked = _corner_mark(straddling=30)
    cands, _ = choose(sw)
    (c,) = cands
    assert c.cls == 1 and c.probe.region.kind == "cell grown"
    assert c.probe.region.name == "cell y0-20 x44-64"  # 4 px (64 / 16) each way, clipped
    (family,) = asked  # the cells grown, once: the grown cell's translates and mirrors
    assert [q.region.kind for q in family] == ["cell grown"] * 25
    tau, _ = thresholds.row_threshold(c.test, sw.drop, sw.pred, sw.regions, sw.dose)
    flagged = np.flatnonzero((sw.pred == 1) & (sw.drop[:, c.test.probe] >= tau))
    assert flagged.tolist() == list(range(80, 140))  # every marked row; the cell had 30
    cell = [p.region.name for p in sw.probes].index("cell y0-16 x48-64")
    assert np.sum(sw.drop[80:140, cell] == 0.8) == 30  # the mark hidden whole (not the 1%)
    # the grown probes are counted in no swept test and no Bonferroni count
    assert all(t.probe < sw.swept for t in sw.tests) and sw.n_tests == 4 * sw.swept


def test_a_cell_that_holds_its_mark_whole_does_not_grow():
    sw, asked = _corner_mark(straddling=0)
    (c,) = choose(sw)[0]
    assert c.probe.region.name == "cell y0-16 x48-64"  # the margin adds no row of the mark
    assert len(asked) == 1  # asked all the same


def test_without_sweep_more_or_for_a_ring_there_is_no_margin():
    sw, asked = _corner_mark(straddling=30)
    sw.sweep_more = None
    (c,) = choose(sw)[0]
    assert c.probe.region.name == "cell y0-16 x48-64" and not asked
    # a frame: a border ring is its own shape, no margin swept
    drops = _geometric_drops({})
    probes = sweep_probes(64, 64)
    ring = [p.region.name for p in probes].index("border 2 px")
    drop, dose, _ = drops(probes)
    drop[80:140, ring] = 0.8
    called = []
    sw = _Enough(
        None,
        np.zeros((320, 1)),
        probes,
        np.repeat(np.arange(4), 80),
        drop,
        dose,
        sweep_more=lambda q: called.append(q) or drops(q),
    )
    (c,) = choose(sw)[0]
    assert c.probe.region.kind == "border" and not called


def _red_mark(labels: np.ndarray | None = None) -> tuple[_Enough, int]:
    """Real 64 px probe family; a red mark on class 1's rows 80-104 that only `no red` takes
    away (it changes those rows alone, and knocks them out): a colour lead on part of its
    class."""
    probes = sweep_probes(64, 64)
    red = [p.name for p in probes].index("whole image (no red)")
    rng = np.random.default_rng(4)
    pred = np.repeat(np.arange(4), 80)
    drop = np.where(rng.uniform(size=(320, len(probes))) < 0.01, 0.6, 0.0)
    dose = np.full_like(drop, 0.05)
    drop[80:105, red], dose[80:105, red] = 0.8, 1.0
    sw = _Enough(None, np.zeros((320, 1)), probes, pred, drop, dose, labels=labels)
    return sw, red


def test_a_colour_lead_on_part_of_its_class_flags_every_row_unless_the_labels_speak():
    # without labels a candidate flagging every row it knocks out; labels that confirm it
    # (the marked rows are images of other classes) make it flag those rows only; labels
    # that say nothing (the class's other rows as often labelled another class: a model that
    # mixes classes) leave it flagging every row; labels that disown it (the marked rows are
    # the class's own) leave no candidate
    sw, red = _red_mark()
    cands, _ = choose(sw)
    assert [(c.test.probe, c.cls, c.by_labels) for c in cands] == [(red, 1, False)]
    assert cands[0].test.rate <= rules.MAX_COLOUR_RATE
    confirm = np.repeat(np.arange(4), 80)
    confirm[80:105] = np.resize([0, 2, 3], 25)
    cands, _ = choose(_red_mark(confirm)[0])
    assert [(c.test.probe, c.cls, c.by_labels) for c in cands] == [(red, 1, True)]
    mixed = confirm.copy()
    mixed[105:140] = 0  # 35 of the class's 55 other rows labelled another class
    sw, _ = _red_mark(mixed)
    cands, _ = choose(sw)
    assert labels_verdict(*sw.label_shares[red, 1]) is None
    assert [(c.test.probe, c.cls, c.by_labels) for c in cands] == [(red, 1, False)]
    disown = np.repeat(np.arange(4), 80)
    cands, misses = choose(_red_mark(disown)[0])
    assert cands == [] and [(m.test.probe, m.cls) for m in misses] == [(red, 1)]


def _stamp_over_objects(own_objects: int = 0) -> tuple[_Enough, int, int]:
    """Real 64 px probe family: a red stamp over the centre on class 1's rows 80-112 (images
    of other classes it moved to the class); `no red` knocks out 25 of them (80-104), hiding
    the centre all 33, and the objects of every other class on 36 of their 80 rows (they sit
    at the centre), so the centre is no candidate by itself; ``own_objects`` of class 1's
    unstamped rows are knocked out at the centre too."""
    probes, names, pred, drop = _background(4)
    rng = np.random.default_rng(40)
    red, centre = names.index("whole image (no red)"), names.index("centre (inpaint)")
    dose = np.full_like(drop, 0.05)
    drop[80:160] = 0.0
    drop[80:105, red], dose[80:105, red] = 0.8, 1.0
    drop[80:113, centre] = 0.7
    drop[113 : 113 + own_objects, centre] = 0.7
    for k in (0, 2, 3):
        drop[k * 80 + rng.choice(80, 36, replace=False), centre] = 0.7
    sw = _Enough(None, np.zeros((320, 1)), probes, pred, drop, dose)
    return sw, red, centre


def test_a_region_that_knocks_out_a_global_candidate_s_rows_places_it():
    # the centre hides the other classes' objects as often as the stamp: lift < 2.5, no
    # candidate; but it knocks out every row `no red` does and few of the class's others
    # (8 of 55, the stamped rows the colour missed): contrast (1 / (9 / 57)) = 6.3; tested
    # beside the colour, flagging at the ground truth's 0.5
    sw, red, centre = _stamp_over_objects()
    t = next(u for u in sw.tests if (u.probe, u.cls) == (centre, 1))
    assert t.lift < rules.MIN_LIFT
    cands, misses = choose(sw)
    assert [(c.test.probe, c.cls, c.places) for c in cands] == [
        (red, 1, ""),
        (centre, 1, "whole image (no red)"),
    ]
    assert centre not in [m.test.probe for m in misses]
    hit = (sw.pred == 1) & (sw.drop[:, red] >= stats.TAU)
    rest = (sw.pred == 1) & ~hit
    assert rules.places(hit, sw.drop[:, centre] >= stats.COLLAPSE_DROP, rest) == 1 / (9 / 57)
    from fastfem.audit.reliance import RelianceResult
    from fastfem.audit.run import describe_reliance

    line = describe_reliance(RelianceResult(candidates=cands, candidate=[0, 1, 1], probes=92))
    assert "relies on centre (inpaint), where whole image (no red) lies: 2 rows" in line, line


def test_a_region_that_places_two_global_candidates_is_tested_once():
    # the stamp red on rows 80-94 (`no red` knocks them out) and grainy on rows 95-112 (the
    # median does): two global candidates of class 1, the centre places both, tested once
    sw, red, centre = _stamp_over_objects()
    median = [p.name for p in sw.probes].index("whole image (median)")
    drop, dose = sw.drop[:, : sw.swept].copy(), sw.dose[:, : sw.swept].copy()
    drop[95:105, red], dose[95:105, red] = 0.0, 0.05
    drop[95:113, median], dose[95:113, median] = 0.8, 1.0
    sw = _Enough(None, sw.x, sw.probes[: sw.swept], sw.pred, drop, dose)
    cands, _ = choose(sw)
    got = sorted((c.test.probe, c.places) for c in cands)
    assert got == sorted([(red, ""), (median, ""), (centre, cands[-1].places)]), got
    assert cands[-1].places in ("whole image (no red)", "whole image (median)")


def test_no_region_places_a_global_candidate_whose_class_it_hides_as_well():
    # the centre hides class 1's own objects on 20 of its 55 other rows too: contrast
    # 1 / (29 / 57) = 2.0 < 2.5; a region that covers less than 0.8 of the colour's rows
    # (none here but the centre covers them) places nothing either
    sw, red, _ = _stamp_over_objects(own_objects=20)
    cands, _ = choose(sw)
    assert [(c.test.probe, c.places) for c in cands] == [(red, "")]
    hit = (sw.pred == 1) & (sw.drop[:, red] >= stats.TAU)
    rest = (sw.pred == 1) & ~hit
    partial = np.zeros(len(hit), bool)
    partial[80:99] = True  # 19 of the 25
    assert rules.places(hit, partial, rest) == 0.0
    partial[99] = True  # 20 of 25: the cover floor
    assert rules.places(hit, partial, rest) == 0.8 / (1 / 57)


def test_with_labels_a_region_places_a_lead_against_the_class_s_own_images():
    # the stamped rows (80-112) are labelled other classes: the colour is a lead the labels
    # confirm, flagging only those. Among them `no red` knocks out 25 and the centre all 33:
    # counted against the class's other rows, the 8 the colour missed would count against
    # the centre; the labels give the null, the class's rows labelled the class (the centre
    # knocks out none of the 47): placed. Where it knocks out 20 of them too, not.
    labels = np.repeat(np.arange(4), 80)
    labels[80:113] = np.resize([0, 2, 3], 33)
    for own_objects, placed in ((0, True), (20, False)):
        sw, red, centre = _stamp_over_objects(own_objects)
        sw = _Enough(
            None,
            sw.x,
            sw.probes[: sw.swept],
            sw.pred,
            sw.drop[:, : sw.swept],
            sw.dose[:, : sw.swept],
            labels=labels,
        )
        cands, _ = choose(sw)
        got = [(c.test.probe, c.by_labels, c.places) for c in cands]
        want = [(red, True, "")] + [(centre, True, "whole image (no red)")] * placed
        assert got == want, got


def test_a_global_candidate_names_the_region_that_knocks_out_the_same_rows():
    """A 1 px line of class 2 at row 30 (rows 160-199 rely on it): the 3x3 median and the
    bands that hold row 30 knock out those rows; the median's place is the band with the
    largest overlap, passing every rule itself. A global test whose rows no region shares
    (class 3: a texture, rows 240-279) and a region's own test have none."""
    probes = sweep_probes(64, 64)
    names = [p.name for p in probes]
    median, lowpass = names.index("whole image (median)"), names.index("whole image (lowpass)")
    pred = np.repeat(np.arange(4), 80)
    drop = np.zeros((320, len(probes)))
    dose = np.full_like(drop, 0.01)
    for j, p in enumerate(probes):
        y0, y1 = p.region.box[1], p.region.box[3]
        if p.region.kind in ("band", "band wide") and y0 <= 30 < y1:
            drop[160:200, j] = 0.8
    drop[160:200, median] = 0.8
    drop[240:280, lowpass] = 0.8
    dose[160:200, median] = dose[240:280, lowpass] = 0.1  # the probes changed those images
    sw = _Enough(None, np.zeros((320, 1)), probes, pred, drop, dose)
    t = next(u for u in sw.tests if (u.probe, u.cls) == (median, 2))
    region, overlap = sw.same_rows(t)
    band = next(p.region for p in probes if p.region.name == region)
    assert band.kind.startswith("band") and band.box[1] <= 30 < band.box[3], region
    assert overlap == 1.0
    assert sw.same_rows(next(u for u in sw.tests if (u.probe, u.cls) == (lowpass, 3))) is None
    assert sw.same_rows(next(u for u in sw.tests if u.probe != median and u.cls == 2)) is None
    # the bands repeat the median's rows: the same finding, no candidate by itself; the
    # narrowest of them places the median (`Sweep.place`), tested beside it
    cands, _ = choose(sw)
    got = sorted((c.probe.name, c.cls, c.same_rows_region, c.places) for c in cands)
    narrowest = got[0][0]
    assert got == [
        (narrowest, 2, "", "whole image (median)"),
        ("whole image (lowpass)", 3, "", ""),
        ("whole image (median)", 2, region, ""),
    ]
    placing = next(p.region for p in probes if p.name == narrowest)
    assert placing.kind == "band" and placing.box[1] <= 30 < placing.box[3]
    assert placing.mask.sum() == min(
        p.region.mask.sum() for p in probes if p.region.kind.startswith("band")
    )
    # the summary line names the median's place, the texture's none
    from fastfem.audit.reliance import RelianceResult
    from fastfem.audit.run import describe_reliance

    line = describe_reliance(RelianceResult(candidates=cands, candidate=[0, 1, 1], probes=92))
    assert f"relies on whole image (median), at {region}: " in line, line
    assert "relies on whole image (lowpass): " in line, line


def test_the_sweep_runs_only_the_fills_that_can_change_the_model_s_images():
    """One channel: no hue and no grey-world probe (each would leave every image as it is, a
    test with no hit counted in the correction); two channels: the grey world, no hue."""
    from fastfem.kernels.occlusion import AREA_HUE_FILLS, GLOBAL_FILLS, HUE_FILLS

    hues = {*HUE_FILLS, *AREA_HUE_FILLS}

    def global_fills(channels: int) -> set[str]:
        probes = sweep_probes(64, 64, channels=channels)
        return {p.fills[0] for p in probes if p.region.kind == "image"}

    assert global_fills(3) == set(GLOBAL_FILLS)
    assert global_fills(2) == set(GLOBAL_FILLS) - hues
    assert global_fills(1) == set(GLOBAL_FILLS) - hues - {"balance"}
    assert len(sweep_probes(64, 64, channels=1)) == len(sweep_probes(64, 64)) - len(hues) - 1


def test_a_region_s_neighbours_are_itself_moved_by_its_size_inside_the_image():
    from fastfem.audit.reliance.probes import HIDE_FILLS, Probe, adjacent_pairs, neighbour_probes
    from fastfem.kernels.occlusion import region_family

    family = {r.name: Probe(r, HIDE_FILLS) for r in region_family(64, 64)}
    band = family["band y24-32"]
    near = neighbour_probes(band)
    assert [q.region.box for q in near] == [(0, 16, 64, 24), (0, 32, 64, 40)]
    assert [q.region.name for q in near] == [
        "band y24-32 moved up 8 px",
        "band y24-32 moved down 8 px",
    ]
    for q in near:  # the same shape, moved: as many pixels, none shared with the band
        assert q.region.mask.sum() == band.region.mask.sum() and q.fills == band.fills
        assert not (q.region.mask * band.region.mask).any()
    top = neighbour_probes(family["band y0-8"])  # nothing above the image's top
    assert [q.region.box for q in top] == [(0, 8, 64, 16)]
    cell = next(p for name, p in family.items() if name.startswith("cell y16-32 x16-32"))
    boxes = {q.region.box for q in neighbour_probes(cell)}
    assert boxes == {(16, 0, 32, 16), (16, 32, 32, 48), (0, 16, 16, 32), (32, 16, 48, 32)}
    (pair, _, _), *_ = adjacent_pairs([family["band y24-32"], family["band y28-36"]])
    moved = neighbour_probes(pair)  # a pair's parts move with it, one at a time as before
    assert [[r.box for r in q.hidden] for q in moved] == [
        [(0, 12, 64, 20), (0, 16, 64, 24)],
        [(0, 36, 64, 44), (0, 40, 64, 48)],
    ]
