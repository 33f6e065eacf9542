"""The reliance test's probe that follows each row's map peak (`probes.peak_probe`), decided by
the maps (with or without labels) or by the labels.

A mark at a random place in each image — a coloured patch a clinic sticks on some images, a
logo wherever there was room — lies in no fixed region of the sweep, and a fixed region that
holds it on one row holds an object on the next. What does follow it is the map: the peak of a
row's stored map lies on the mark where the model relies on it (measured on the unseen check's
patch at a random place, on the 65 rows a retrained model relies on: a median of 2 px from
the patch's centre, 3.6 px at the 90th percentile). So this probe hides, on each row, the
square of `probes.peak_side` px around its own peak (the peak step, `step.make_peak_step`:
two forwards per sampled row, the image and the image hidden, each through the audit's own
map step). It needs the store's map peaks (``peak_y``, ``peak_x``, every FEM store's, at
sub-cell precision: `fastfem.kernels.map_stats`).

It hides whatever the map peaks on, the class's own objects as often as a mark: on the clean
photographs' model it knocks out 74 of the ring class's 139 test rows, and no place lift can
tell the two apart, since the region is everywhere. Two things can.

**The maps** (`maps_mark`, asked with or without labels). A mark's row is an ordinary image
of *another* class with something more on it, which dominates its map; hidden, it leaves an
ordinary image's map. A class's own object under the window is what an ordinary map shows;
hidden, it leaves a map that peaks as hard or harder on what is left (objects larger than the
window, or a background the model reads), or, where the object was alone on a plain
background, no ordinary map at all. So a row *loses a salient extra* (`lost_extra`) where its
map's peak contrast (`fastfem.kernels.map_stats.peak_contrast`) falls by ``CONTRAST_FALL``
(1.25) with the window hidden, to at least ``ORDINARY`` (0.8) of the sample's median contrast.
A class's test is a candidate where at least ``MIN_HITS`` and ``MIN_EXTRA`` (half) of the rows
it would flag (those whose probability falls by ``stats.COLLAPSE_DROP``) lose one,
significantly more often than the sample's rows it would not flag (`extra_p_value`:
binomial tail, Bonferroni over the classes), its hits collapse as often as every
candidate's (``MIN_COLLAPSE``), the class has no candidate of the fixed sweep (a compact mark
in a fixed place is that region's finding; the window, flagging every row it knocks out,
would add the class's own objects it hides), and the labels, given, do not disown it (fewer
than half of its flagged rows labelled another class: `labels.labels_verdict`). It then
flags every row of the class whose probability its window lowers by ``stats.COLLAPSE_DROP``.
Measured over the 40 models of `benchmarks.shortcut_peak_window` (the benchmark's 37 and the
patch at a random place on each base, each model's test split, a window of a quarter): the
maps make a candidate of 8 classes, every one a mark's (the patch on each base, four
checkers, a text tag; 0.63-0.96 of their hits lose an extra, against 0.02-0.08 of the rows
the window does not knock out); no class's own objects, the clean controls included (the
most: 3 of a class's 5 hits, short of ``MIN_HITS`` and of the significance; no other above
0.43). At a third of the side two classes' own objects pass too (the window hides them
whole). Both conditions are needed: a fall alone is also what hiding a small object alone on
a plain background gives (the tests' blob classes: every hit falls, to 0.65 of the median),
and "an ordinary map is left" alone holds on every row whose object is larger than the
window. On the photographs with objects smaller than the window (at most 16 px across at
96 px), the clean model gives no candidate; but there a random-place patch does not dominate
the maps (its rows' contrast 1.2x the median) and is found by the labels only (README).
A class the maps confirm must also pass the *transplant* test of its windows
(`rules.sufficient`; the ``transplant`` of `peak_candidates`): each hit row's own window,
pasted where it lies into rows of other classes, must move them to the class as a region
candidate's must, against the windows of other classes' rows. A class whose evidence is one
small part of its object loses its map's peak when the part is hidden, as a mark's rows do,
but the part does not move other images (on a digits model at 32 px, grey corners tag:
class 4's 14 hit rows, no mark, 0.05 against a null of 0.03, a false candidate before this
test; the tag's class 8, 0.99 against 0.05).

**The labels** (`confirmed`): a mark moves images of *other* classes into its class, and
hiding it moves them back. A class's test is a candidate where its hits collapse as often as
every candidate's and the labels say its rows are a mark's, read on the rows it would flag (the
window lowers a class's own objects a little on many rows): at least ``MIN_HITS`` and at least
``MIN_LABEL_OTHER`` (half) of them labelled another class, and the class's rows labelled
another class hit significantly more often than those labelled the class (`labels_p_value`,
Bonferroni over the classes asked; `labels_mark`). No lift or place lift floor: the window
hides objects in every class. It then flags, like every candidate the labels confirm, only the
rows of the class labelled another class whose probability its window lowers by
``stats.COLLAPSE_DROP``. Asked for every class, after the maps (a class the maps confirm is
theirs, flagged on every row) and after the fixed family's candidates (a compact mark in a
fixed place that a region found may be found here too: the two flag the same rows, each row
once).

The significance, not the fixed regions' lift of ``LABEL_OTHER_LIFT`` over the class's other
rows (`labels.labels_confirm`), says the hits stand out: a model that mixes its classes has
many rows of other labels in a class, and a mark there is still hit far more often than the
class's own images. Measured over the same 40 models, per predicted class: the window's hits on
a class's own objects are at most 0.46 labelled another class (13 hits; the others
0.00-0.40), and 0.00-0.03 in the 9 classes where 0.4 or more of the other rows are labelled
another class (a mark elsewhere moved them there); every test with half or more of its hits
labelled another class is a mark's. The lift misses three of them: the photographs' and the
letters' patch (0.75 of the hits against 0.55 of the class's other rows; 0.82 against 0.42)
and a checker whose class holds no row labelled the class (where the labels can say nothing:
`labels_p_value` compares with a rate of one half).

A class's test on the sample that passes the labels' or the maps' test before the correction
but not every rule (`is_lead`) is counted again with up to ``MORE_ROWS`` times its sampled
rows more of the class's rows, read again from the source: the sample's rows of a class are
too few where the model mixes its classes. The window's side is a quarter of the image's
(``probes.PEAK_FRACTION``): it hides the patch on most rows; a third on every row, but so many
of the classes' own objects that the labels no longer confirm two marks they confirm at a
quarter (`benchmarks.shortcut_peak_window` measures a third, a quarter, a sixth and an eighth
of the side on every model).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from fastfem.audit.reliance.choice import Candidate
from fastfem.audit.reliance.labels import MIN_LABEL_OTHER, label_shares, labels_verdict
from fastfem.audit.reliance.probes import Probe, peak_pixels, peak_probe
from fastfem.audit.reliance.rules import ALPHA, MIN_COLLAPSE, sufficient
from fastfem.audit.reliance.stats import (
    COLLAPSE_DROP,
    MIN_HITS,
    ProbeTest,
    binomial_tail,
    probe_tests,
)

#: A class's test that is a lead on the sample (`is_lead`) is counted again with up to this
#: many times its sampled rows more of the class's rows, read again ...
MORE_ROWS = 3
#: ... a lead: the labels' or the maps' test significant at this level (before the correction).
LEAD_ALPHA = 0.05
#: Without labels (or with labels that do not disown it) the peak probe is a candidate where at
#: least this share of the rows it would flag lose a salient extra (`maps_mark`, `lost_extra`):
MIN_EXTRA = 0.5
#: ... their map's peak contrast falls by this factor with the window hidden ...
CONTRAST_FALL = 1.25
#: ... to at least this share of the sample's median contrast (an ordinary image's map).
ORDINARY = 0.8


def has_peaks(rows: dict[str, np.ndarray]) -> bool:
    """Whether the store keeps each row's map peak (``peak_y``, ``peak_x``)."""
    return "peak_y" in rows and "peak_x" in rows


def row_peaks(rows: dict[str, np.ndarray], at: np.ndarray, h: int, w: int) -> np.ndarray:
    """(len(at), 2) int32: the map peaks of the stored rows ``at`` as pixels of (H, W) images
    (`probes.peak_pixels`); a row without a finite peak gets the centre."""
    py = np.asarray(rows["peak_y"], np.float64)[at]
    px = np.asarray(rows["peak_x"], np.float64)[at]
    return peak_pixels(np.nan_to_num(py, nan=0.5), np.nan_to_num(px, nan=0.5), h, w)


class PeakTest(NamedTuple):
    """The peak probe's test of one class (`peak_tests`): ``test`` its counts on the rows run
    (the sample, with a lead's rows read again), its p-value that of the labels
    (`labels_p_value`; 1 without labels); ``share`` and ``share_rest`` the labels' shares of
    the rows it would flag and of the class's others (`labels.label_shares`; NaN without
    labels); ``other_labelled`` the rows it would flag labelled another class (the ``h_f`` of
    `labels_p_value`; rows without a label not counted); ``extra`` the share of the rows it
    would flag whose map lost a salient extra with the window hidden (`lost_extra`),
    ``extra_rest`` the same share among every row it would not flag (``(k + 1) / (n + 2)``),
    ``extra_p`` the binomial tail of the first at the second (`extra_p_value`) and
    ``extra_rows`` their count."""

    test: ProbeTest
    share: float
    share_rest: float
    other_labelled: int
    extra: float = float("nan")
    extra_rest: float = float("nan")
    extra_p: float = 1.0
    extra_rows: int = 0


def peak_tests(
    drop: np.ndarray,
    pred: np.ndarray,
    classes: np.ndarray,
    labels: np.ndarray | None,
    extra: np.ndarray | None = None,
) -> list[PeakTest]:
    """For each class of ``classes``: the peak probe's test on the sample (``drop`` (S,) its
    drops, ``pred`` (S,) the predictions; `stats.probe_tests` of one region with nothing to
    compare its place with), with what the labels say of the rows it would flag, those whose
    probability falls by ``COLLAPSE_DROP`` (``labels`` (S,) each row's label's class, -1
    without one; None: no labels): the test's p-value that of the labels (`labels_p_value`),
    their shares (`labels.label_shares`) and count; and what the maps say (``extra`` (S,) the
    rows whose map lost a salient extra with the window hidden, `lost_extra`; None: not
    measured): their share of those rows, against the rows it would not flag
    (`extra_p_value`). The window lowers a class's own objects a little on many
    rows, a mark's rows by far more: counted at the flags' drop, not at ``stats.TAU``."""
    hit = drop >= COLLAPSE_DROP
    labels = np.full(len(pred), -1) if labels is None else labels
    out = []
    for t in probe_tests(drop[:, None], pred, np.asarray(classes), areas=[1.0]):
        own = pred == t.cls
        p = labels_p_value(hit, own, labels, t.cls)
        share, rest = label_shares(hit, own, labels, t.cls)
        other = int(np.sum(hit & labelled_other_rows(own, labels, t.cls)))
        e = PeakTest(dataclasses.replace(t, p_value=p), share, rest, other)
        if extra is not None:
            e = e._replace(**extra_p_value(hit & own, hit, extra))
        out.append(e)
    return out


def extra_p_value(mine: np.ndarray, hit: np.ndarray, extra: np.ndarray) -> dict[str, Any]:
    """What the maps say of a class's rows ``mine`` the window knocks out (of the sample's
    knocked-out rows ``hit``; ``extra`` (S,): the rows whose map lost a salient extra,
    `lost_extra`): their share ``extra`` of ``mine``, the rate among the rows not knocked out
    ``extra_rest = (k + 1) / (n + 2)``, ``extra_p = P(Binomial(|mine|, extra_rest) >=
    extra_rows)`` and ``extra_rows``, as `PeakTest`'s fields."""
    k, n = int(np.sum(mine & extra)), int(np.sum(mine))
    rest = (np.sum(extra & ~hit) + 1.0) / (np.sum(~hit) + 2.0)
    return {
        "extra": k / n if n else float("nan"),
        "extra_rest": float(rest),
        "extra_p": binomial_tail(k, n, rest),
        "extra_rows": k,
    }


def lost_extra(contrast: np.ndarray, hidden: np.ndarray, typical: float) -> np.ndarray:
    """(S,) the rows whose map *lost a salient extra* with the window around its peak hidden
    (module docstring): its peak contrast (`fastfem.kernels.map_stats.peak_contrast`)
    ``contrast`` fell by at least ``CONTRAST_FALL`` to ``hidden``, which is still at least
    ``ORDINARY`` of ``typical`` (the sample's median contrast): the window held something
    that dominated the map, and what is left is an ordinary image's map."""
    c, h = np.asarray(contrast, np.float64), np.asarray(hidden, np.float64)
    return (h * CONTRAST_FALL <= c) & (h >= ORDINARY * typical)


def labelled_other_rows(own: np.ndarray, labels: np.ndarray, cls: int) -> np.ndarray:
    """(S,) the rows of ``own`` (the class ``cls``'s) whose label's class (``labels``, -1
    without one) is another class."""
    return own & (labels >= 0) & (labels != cls)


def labels_p_value(hit: np.ndarray, own: np.ndarray, labels: np.ndarray, cls: int) -> float:
    """``P(Binomial(n_f, q) >= h_f)``: how likely the class's rows labelled another class
    (``n_f``, of which ``h_f`` are ``hit``) would be hit as often if they were hit at the rate
    of the class's rows labelled the class, ``q = (h_o + 1) / (n_o + 2)`` (``own``: the class's
    rows; ``labels`` (S,) each row's label's class, -1 without one)."""
    other = labelled_other_rows(own, labels, cls)
    mine = own & (labels == cls)
    q = (np.sum(hit & mine) + 1.0) / (np.sum(mine) + 2.0)
    return binomial_tail(int(np.sum(hit & other)), int(np.sum(other)), float(q))


class PeakRows(NamedTuple):
    """Rows read again for the peak probe: their images ``x`` (N, H, W, C), map peaks
    ``peaks`` (N, 2) int32 pixels (`row_peaks`) and label classes ``labels`` (N,), -1
    without one (None: the audit has no labels)."""

    x: np.ndarray
    peaks: np.ndarray
    labels: np.ndarray | None


#: ``follow(x, peaks) -> (pred, drop, contrast, contrast_hidden)``, each (S,): the peak step
#: on rows (`fastfem.audit.reliance.ProbeRunner.follow`).
Follow = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, ...]]
#: ``transplant(cls, hit) -> (transplant, transplant_null)``: the transplant test
#: (`rules.sufficient`) of each sampled row's own window, pasted where it lies from the
#: sample's rows ``hit`` of class ``cls`` into rows of other classes
#: (`fastfem.audit.reliance.ProbeRunner.transplant`).
Transplant = Callable[[int, np.ndarray], tuple[float, float]]


def peak_candidates(
    follow: Follow,
    sample: PeakRows,
    pred: np.ndarray,
    taken: set[int] = frozenset(),
    read_more: Callable[[int, int], PeakRows | None] | None = None,
    transplant: Transplant | None = None,
) -> list[Candidate]:
    """The peak probe's candidates (module docstring) on the ``sample`` (its predictions
    ``pred``); ``follow`` runs the peak step on rows; ``taken``: the classes that have a
    candidate of the fixed sweep already (the maps' rule is not asked for them);
    ``read_more(cls, n)``: up to ``n`` unsampled rows predicted ``cls``, read again, or None
    where they cannot be (a lead is counted again with them: `is_lead`); ``transplant``: the
    windows' transplant test, asked of a class the maps confirm (default: not asked)."""
    classes = np.unique(pred)
    h, w = sample.x.shape[1:3]
    probe: Probe = peak_probe(h, w)
    _, drop, contrast, hidden = follow(sample.x, sample.peaks)
    typical = float(np.median(contrast))
    extra = lost_extra(contrast, hidden, typical)
    out = []
    for e in peak_tests(drop, pred, classes, sample.labels, extra):
        by_maps = e.test.cls not in taken
        counted = (pred, drop)  # the rows its test counts (and its non-members)
        lead = read_more is not None and is_lead(e, len(classes), by_maps)
        more = read_more(e.test.cls, MORE_ROWS * e.test.rows) if lead else None
        if more is not None:
            more_pred, more_drop, *more_contrast = follow(more.x, more.peaks)
            counted = (np.r_[pred, more_pred], np.r_[drop, more_drop])
            labels = None if sample.labels is None else np.r_[sample.labels, more.labels]
            extra_all = np.r_[extra, lost_extra(*more_contrast, typical)]
            (e,) = peak_tests(counted[1], counted[0], [e.test.cls], labels, extra_all)
        t = e.test
        marked = by_maps and maps_mark(e, len(classes))
        moved = (float("nan"), float("nan"))
        if marked and transplant is not None:
            moved = transplant(t.cls, drop >= COLLAPSE_DROP)  # the sample's hits, as flagged
        if marked and (transplant is None or sufficient(*moved)):
            c = Candidate(probe, t.cls, dataclasses.replace(t, p_value=e.extra_p))
            c.transplant, c.transplant_null = moved
        elif confirmed(e, len(classes)):
            c = Candidate(probe, t.cls, t, label_other=e.share, label_other_rest=e.share_rest)
            c.by_labels = True
        else:
            continue
        c.row_tau, c.lost_extra, c.lost_extra_rest = COLLAPSE_DROP, e.extra, e.extra_rest
        c.set_nonmembers(*counted)
        out.append(c)
    return out


def maps_mark(e: PeakTest, n_tests: int) -> bool:
    """Whether the maps say a class's window hits are a mark's, labels or not (module
    docstring): at least ``MIN_HITS`` and ``MIN_EXTRA`` of the rows it would flag lose a
    salient extra with the window hidden (`lost_extra`), significantly more often than the
    rows it does not flag (``extra_p`` at most ``ALPHA`` over the ``n_tests`` classes), its hits
    collapse like every candidate's, and the labels, given, do not disown it
    (`labels.labels_verdict`: fewer than half of its flagged rows labelled another class)."""
    return (
        e.extra_rows >= MIN_HITS
        and e.extra >= MIN_EXTRA
        and e.test.collapse >= MIN_COLLAPSE
        and e.extra_p <= ALPHA / n_tests
        and labels_verdict(e.share, e.share_rest) is not False
    )


def is_lead(e: PeakTest, n_tests: int, by_maps: bool = False) -> bool:
    """Whether the peak probe's test ``e`` on the sample, no candidate, is counted again on
    more of its class's rows: it collapses like a candidate and either half its hits are
    labelled another class and the labels' test reaches ``LEAD_ALPHA``, or (``by_maps``: the
    maps' rule is asked for its class) ``MIN_EXTRA`` of them lose a salient extra and that
    test reaches ``LEAD_ALPHA`` (each before the correction over the ``n_tests``
    classes), but not every rule of `confirmed` or `maps_mark` holds (too few rows, or the
    test not significant after the correction). The sample holds ``PER_CLASS`` rows of a
    class; where the model mixes its classes, the labels' test needs more (the photographs'
    patch model: p = 0.011 on its 80 sampled rows of the patch class, 4e-6 on the split's
    177)."""
    if confirmed(e, n_tests) or (by_maps and maps_mark(e, n_tests)):
        return False
    labels = e.share >= MIN_LABEL_OTHER and e.test.p_value <= LEAD_ALPHA
    maps = by_maps and e.extra >= MIN_EXTRA and e.extra_p <= LEAD_ALPHA
    return e.test.collapse >= MIN_COLLAPSE and (labels or maps)


def confirmed(e: PeakTest, n_tests: int) -> bool:
    """Whether the labels make the peak probe's test ``e`` a candidate: at least ``MIN_HITS``
    hit rows labelled another class, a collapse of ``MIN_COLLAPSE`` and the labels' word
    (`labels_mark`, Bonferroni over the ``n_tests`` classes asked). No lift floor over the
    other classes: the window hides objects in every class, and a class's own rows it
    knocks out are told from a mark's by their labels, not by how often it knocks out other
    classes."""
    return (
        e.other_labelled >= MIN_HITS
        and e.test.collapse >= MIN_COLLAPSE
        and labels_mark(e.share, e.test.p_value, n_tests)
    )


def labels_mark(share: float, p_value: float, n_tests: int) -> bool:
    """Whether the labels say a class's window hits are a mark's (module docstring): at least
    ``MIN_LABEL_OTHER`` of them (``share``) labelled another class, and those rows hit
    significantly more often than the rows labelled the class (``p_value`` of
    `labels_p_value` at most ``ALPHA`` over the ``n_tests`` classes asked)."""
    return share >= MIN_LABEL_OTHER and p_value <= ALPHA / n_tests
