"""Which probes knock out one class's predictions: the sweep's statistics (host, NumPy).

For a probe ``p`` (a region and a fill, `fastfem.kernels.occlusion`) and a row ``i`` of the
sample, the *drop* is the fall of the probability of the row's own predicted class ``y_i``:

    d_ip = P(y_i | x_i) - P(y_i | probe_p(x_i))

and the row is *hit* when ``d_ip >= TAU``. An object hidden by the region lowers its class's
probability too, but objects sit anywhere and belong to every class; a shortcut sits where it
sits and pushes ONE class. So for each probe and class ``c`` the hits among the rows predicted
``c`` (``h_c`` of ``n_c``) are compared with the hit rate among the other rows,

    q = (h_o + 1) / (n_o + 2)                       (Laplace-smoothed)
    lift = (h_c / n_c) / q
    p-value = P(Binomial(n_c, q) >= h_c)            (one-sided, exact)

where, with at least ``MEDIAN_OTHERS`` other classes, ``q`` is instead the median over them of
each one's rate ``(h_k + 1) / (n_k + 2)``: some class of a model often falls under almost any
occlusion (one predicted from weak, spread-out evidence), and pooled in, it lifts the other
classes' rate at a region that holds a mark of class ``c`` to the level of ``c``'s own
(measured: a stamp over the centre of the benchmark's photographs, relied on by class 3, knocks
out 36 of its 80 sampled rows, 92% of them stamped, and 50 of the 199 rows of the other
classes, 45 of them of the ring class that every region knocks out: lift 1.8 pooled, 9.2 over
the median class). A region that hides objects hides the objects of most classes; a mark
pushes one. (The pool without the most-hit other class, lower than the median, was tried: on
a shapes model whose classes' objects the centre cell hides on 14, 9, 4 and 2 of 80 rows, it
made the first class a candidate there; the median keeps it out.)

That alone does not separate a mark from objects of one class that a region's *shape* hides
more often (thin objects and thin columns). A mark sits at one place; objects of a class sit
anywhere, so they are hit by every translate of a region alike. Hence the *place lift*: the
class's hit rate at ``p`` over its typical hit rate ``t_cp`` at regions of the same kind
*elsewhere* — the upper quartile over the members of ``p``'s family (bands, columns, cells,
quarters) that share no pixel with it, its translates (a region that overlaps ``p`` hides part
of the same mark):

    t_cp = q75_{r ~ p} (h_cr / n_c) + 1 / n_c

Objects do not sit everywhere alike: a drawn or photographed object must fit in the frame, so
the central regions hide objects more often than the corners, and a class whose predictions
fall whenever part of its object is hidden is hit most at the centre. Object placement is
symmetric (nothing puts one class's objects on the left rather than the right), a mark is not:
so ``t_cp`` is at least the class's rate at ``p``'s *mirror images* (the same region reflected
left-right, top-bottom or both, where that is another region of the family) ``+ 1 / n_c`` —
their largest.

The translates that share no pixel with a large region are few and lie on the far side of
the image (a quarter's: the other half), so a class that falls whenever a large part of the
image is hidden, more on one side than the other, can pass the place lift there. A mark at
one place is hit by the few regions that cover it and missed by most of the family; so a
region of a family with ``FAMILY_PEAK_MEMBERS`` members or more must also have a *family lift*
``h_c / max(median_{r in family} h_cr, 1) >= MIN_LIFT``, the median taken over every region
of its family, itself and its overlapping neighbours included.

A region without ``MIN_FAMILY`` translates — a border ring, the centre, a map's hot spot — is
compared with the other regions whose area is within a factor ``AREA_RATIO`` of its own, else
with every other region. Those have another shape: they hide objects more or less often *for
every class* (a ring hides almost no object, a column many), so a raw rate would flatter or
bury it. What carries over between shapes is the class's excess over the other classes, its
lift, so there

    t_cp = max(u_p * q75_{r ~ p} (lift_cr), 1 / n_c)

(``u_p`` the upper end of the Wilson interval of the other classes' rate ``h_o / n_o``, one-sided
95%: when few rows of the other classes are hit, their rate and the lift are noisy; here the
rates and lifts pool *every* other class: the interval of one class's 80 rows is wide, and
with the median class there the photos' frame, a mark of the fragile class itself, fell below
the place test)

    place_lift = (h_c / n_c) / t_cp

Either null — "the region hides other classes' objects as often" or "it hides this class's
objects as often as comparable regions do" — predicts a hit rate of at most ``q* = max(q,
t_cp)``, so the p-value is ``P(Binomial(n_c, q*) >= h_c)`` (``q* = q`` for global probes), and
``(p, c)`` is a *candidate* when ``h_c >= MIN_HITS``, ``min(lift, place_lift, family_lift) >=
MIN_LIFT`` (the family lift above, where it applies), its *collapse* — the share of its hit
rows whose drop reaches ``COLLAPSE_DROP`` — is at least ``MIN_COLLAPSE``, and the p-value is
below ``ALPHA`` divided by the number of tests (probes x classes: Bonferroni). The collapse
separates what a class relies on from what it merely reads: hiding the mark a class is
predicted by takes its evidence away, and the prediction collapses; hiding part of an object
the model reads whole dents it. Objects of one class whose shape is not mirror-symmetric (a
letter K's stem on its left, an A's crossbar below its middle) pass the lifts narrowly at the
central regions, where objects are densest and mirror images do not help — measured on a base
of rotated letters these tests had not seen: 6 such false candidates, lift 2.5-3.7, place lift
2.5-3.0, collapse 0.00-0.23 (median drop 0.31-0.41); every planted mark the test finds on the
three bases has a collapse of 0.42 or more (median drop 0.49-1.00). The ground truth of a
shortcut asks the same: the mark raises its class's probability by 0.5.

A global probe (low-pass, colour moments, median, tint) has no place; it removes a property of
some images — a texture, noise, a tint — and changes every image somewhat, often enough to
knock out many predictions of every class (small models read fine detail). What singles out a
shortcut is *which* rows: the ones the probe changes most (its *dose*, ``mean |probe(x) -
x|``, at least ``MIN_DOSE_LIFT`` times the sample's mean: the *dosed* rows) gather in the class
the property pushes to, and removing it knocks exactly those out. So for a global probe (with
doses measured; `global_test`) only the class's dosed hits count (``h``), ``lift`` is the
class's share of dosed rows over the other classes' share, ``place_lift`` the hit rate of its
dosed rows over that of its other rows, and the p-value is taken against the latter; the
share lift must reach ``MIN_GLOBAL_LIFT``.

Hiding a region shows that a class *needs* what is there; a shortcut is also *enough*: the
mark moves an image of any class towards its class (the ground truth of a shortcut asks
exactly that of the mark and the image's clean twin). Objects are not: a 5's top bar or a 2's
base, which a model of digits needs and which sit at a typical place when the objects are
centred, pass every test above (measured on 32 px digits, 10 classes, a model these tests had
not seen: three such false candidates, lift 2.7-3.2, place lift 2.6-3.8, collapse 0.48-0.74),
but pasted into images of other classes they move them to their class no more than the same
region pasted from any image does. So a region candidate
must pass the *transplant* test (`sufficient`): its region, copied from the class's hit rows
of the sample into the sample's rows of other classes (each recipient one donor, in turn),
must raise the class's probability by ``COLLAPSE_DROP`` or turn the prediction to it on a
share ``transplant`` of them, and that share must exceed by ``MIN_TRANSPLANT``, and be
``MIN_TRANSPLANT_LIFT`` times, the share ``transplant_null`` given by the same region copied
from rows of the other classes (a pasted region's own seams can draw an edge a model reads:
the 5's top-bar band copied from *any* image made a 5 of 51-55% of them, from the 5s 62-68%:
where the null is that high, a difference of 0.2 is within noise of 256 rows, a ratio of 2 is
not). Measured on the shortcut benchmark (both splits, 39 region candidates of planted
marks): 0.75-1.00 against a null of 0.00-0.37, at least 0.57 above it and 2.56 times it; the
three digits parts 0.00-0.17 above it and at most 1.33 times it. A global probe has no region
to copy and is not asked. The test is no guard against a region large enough to carry a whole
object (a band a quarter of the image high over a photos class's ring moved 77% of the other
rows to it): the lifts keep those out.

Candidates are taken most significant first (smallest p-value, then largest ``min(lift,
place_lift)``), skipping one that fails the transplant test or whose hit rows of class ``c``
mostly repeat (``>= MAX_OVERLAP`` of its hits) a candidate already taken for ``c``: a band and
a cell inside it that hide the same mark are one finding, and of the two the one the sample
gives the stronger evidence for stands for it (the most specific, largest lift first, kept a
weaker instrument: a 3x3 median that knocked out 17 of a tag's rows where the cell around it
knocked out 27, all of them tagged). Each candidate then grows to its widest passing
neighbour (`widest_extent`; one that is still enough by the transplant test): a mark whose
extent varies from image to image is hidden whole by a wider region of the same shape.

A test that is no candidate but reaches ``NEAR_MISS`` (0.8) of every rule's floor, or passes
every rule and fails the transplant test, is a *near miss* (`near_misses`): reported with what
it lacks (`shortfall`), never flagged. The thresholds are set so that a clean model flags
nothing; a shortcut the sample shows only weakly — a watermark band over objects that the
bands beside it also hide, at place lift 2.42 — is then still named for a person to look at.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

TAU = 0.25  # a drop of the predicted class's probability that counts as a hit
MIN_HITS = 5  # hits among the class's rows
MIN_LIFT = 2.5  # the class's hit rate over the other rows' and over its translates' (smoothed)
#: A candidate's hit rows must include this share that fall by at least ``COLLAPSE_DROP``
#: (its *collapse*, module docstring).
COLLAPSE_DROP = 0.5
MIN_COLLAPSE = 1.0 / 3.0
ALPHA = 0.01  # family-wise significance (Bonferroni over probes x classes)
#: A global probe's class must hold this many times the other classes' share of dosed rows:
#: properties every class has by nature (the colour of photographs) gather a few times over
#: in the class a model ties them to (2-3x measured on the benchmark's photos); a planted
#: property the model relies on moves its images into its class (30-100x).
MIN_GLOBAL_LIFT = 5.0
MAX_OVERLAP = 0.5  # share of a candidate's hits already explained by an earlier one
#: A region candidate's transplant share must exceed its null by this much and be this many
#: times it (`sufficient`).
MIN_TRANSPLANT = 0.2
MIN_TRANSPLANT_LIFT = 2.0
#: Rows of other classes a region is transplanted into (evenly spaced over the sample's).
TRANSPLANT_ROWS = 256
AREA_RATIO = 1.5  # regions "of the same size" for the place lift
MIN_FAMILY = 3  # the fewest regions a place lift compares with
#: With at least this many other classes, a class's lift compares with the median of their
#: rates, not with their pooled rate (module docstring).
MEDIAN_OTHERS = 3
#: A family of at least this many regions (bands, columns, cells, quarters; not the map's hot
#: spots) also asks the *family lift*: the class's hits at the region over the median of its
#: hits at every region of the family, overlapping ones included (module docstring).
FAMILY_PEAK_MEMBERS = 5
#: The translates' "typical" hit rate: their upper quartile, not their median. Objects are not
#: spread evenly over a sample of a few dozen rows per class; the median of the translates
#: made one cell of the bundled sample look like a mark for triangles (place lift 3.3).
TYPICAL_PERCENTILE = 75.0
#: A global probe (low-pass, colour) has no translates; what it removes is a property of some
#: images — a texture, a tint — so the rows it knocks out must be the ones it changes most:
#: their mean change over the sample's must reach this (a class that merely needs colour is
#: knocked out on ordinary images).
MIN_DOSE_LIFT = 1.5
MAX_EXTENT = 2.0  # a candidate may grow to a neighbour of at most this many times its area
MAX_CANDIDATES = 8  # candidates tested on every row (each costs one forward per member row)
#: A test that is no candidate but reaches this share of every rule's floor (`standing`) is
#: reported as a *near miss* (`near_misses`), at most ``MAX_NEAR_MISSES`` of them: what the
#: sample suggests without establishing it (a watermark band whose class's own objects the
#: bands beside it hide almost as often: place lift 2.42 against 2.5). Never flagged.
NEAR_MISS = 0.8
MAX_NEAR_MISSES = 8
#: The drops a member row may be flagged at, strictest first (`row_threshold`). A region probe
#: hides a mark less cleanly than removing it does (the ground truth's clean twin): measured on
#: the shortcut benchmark, a watermark band's inpainted rows fell by >= 0.5 for 68% of the rows
#: that rely on it, by >= 0.25 for all of them.
ROW_TAUS: tuple[float, ...] = (0.5, 0.35, 0.25)
#: A member row is flagged at the lowest threshold where the class's hit rate at the region is
#: this many times its typical rate elsewhere: at most 1 in 10 of the flags is expected from
#: the class's objects hidden by the region (its place null).
ROW_PLACE_LIFT = 10.0
#: The dose floors (multiples of the sample's mean change) a global candidate's member rows
#: may be counted at, strictest first (`row_threshold`). The candidate test's 1.5 keeps out
#: rows a global fill changes by nature; but a mark the fill removes is only part of the
#: image, and its rows' change can lie just under it (measured: a diagonal line's relied-on
#: rows at 1.35-1.7x the mean, the unmarked rows of its class at most 0.97x).
ROW_DOSE_LIFTS: tuple[float, ...] = (1.5, 1.25, 1.0)


def binomial_tail(k: int, n: int, q: float) -> float:
    """``P(Binomial(n, q) >= k)``, exact (summed in log space); 1 for ``k <= 0``."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    q = min(max(q, 1e-300), 1.0 - 1e-16)
    i = np.arange(k, n + 1, dtype=np.float64)
    logc = np.array([math.lgamma(n + 1) - math.lgamma(j + 1) - math.lgamma(n - j + 1) for j in i])
    logp = logc + i * math.log(q) + (n - i) * math.log1p(-q)
    m = float(np.max(logp))
    return float(min(1.0, math.exp(m) * np.sum(np.exp(logp - m))))


class RegionInfo(NamedTuple):
    """The sweep's probes as regions: ``areas`` (P,) each region's share of the image (0: a
    global probe), ``families`` (P,) its shape family, ``overlaps`` (P, P) which share a pixel,
    ``mirrors`` (P,) each probe's mirror images (`typical_rate`; default: none)."""

    areas: Sequence[float]
    families: Sequence[str]
    overlaps: np.ndarray
    mirrors: Sequence[Sequence[int]] | None = None


@dataclass(frozen=True)
class ProbeTest:
    """The sweep's verdict for one (probe, class): counts, rates, lift and p-value."""

    probe: int
    cls: int
    hits: int  # h_c
    rows: int  # n_c
    other_hits: int  # h_o
    other_rows: int  # n_o
    lift: float
    p_value: float
    place_lift: float = float("inf")  # inf: a global probe (no place to compare)
    dose_lift: float = float("inf")  # inf: not measured
    family_lift: float = float("inf")  # inf: no family of FAMILY_PEAK_MEMBERS regions
    collapse: float = 1.0  # share of the hits whose drop reaches COLLAPSE_DROP

    @property
    def rate(self) -> float:
        return self.hits / max(self.rows, 1)

    @property
    def other_rate(self) -> float:
        return self.other_hits / max(self.other_rows, 1)


def translates(
    areas: Sequence[float],
    families: Sequence[str] | None = None,
    overlaps: np.ndarray | None = None,
) -> list[np.ndarray]:
    """Per probe, the probes its place lift compares with (module docstring): the members of
    its family that do not overlap it (its translates elsewhere) when there are at least
    ``MIN_FAMILY``, else the other region probes (area > 0) whose area is within ``AREA_RATIO``
    of its own, else every other region probe.
    ``overlaps`` (P, P) bool: which probes' regions share a pixel (default: none do)."""
    a = np.asarray(areas, np.float64)
    n = len(a)
    fam = np.asarray(["" for _ in a] if families is None else list(families), dtype=object)
    apart = ~np.asarray(overlaps, bool) if overlaps is not None else ~np.eye(n, dtype=bool)
    regional = (a > 0)[None, :] & apart
    ratio = np.abs(np.log(np.maximum(a, 1e-12)[:, None] / np.maximum(a, 1e-12)[None, :]))
    out = []
    anywhere = (a > 0)[None, :] & ~np.eye(n, dtype=bool)
    for p in range(n):
        for choice in (
            regional[p] & (fam == fam[p]) if fam[p] else np.zeros(n, bool),
            anywhere[p] & (ratio[p] <= np.log(AREA_RATIO)),
            anywhere[p],
        ):
            if choice.sum() >= MIN_FAMILY:
                break
        out.append(choice)
    return out


def wilson_upper(hits: int, rows: int, z: float = 1.645) -> float:
    """The upper end of the Wilson score interval of a rate ``hits / rows`` (one-sided 95% for
    the default ``z``): a rate of 0 in 300 rows is not known to be below ~1%."""
    if rows <= 0:
        return 1.0
    r = hits / rows
    centre = r + z * z / (2 * rows)
    spread = z * math.sqrt(r * (1 - r) / rows + z * z / (4 * rows * rows))
    return min(1.0, (centre + spread) / (1 + z * z / rows))


def typical_rate(
    p: int,
    compare: np.ndarray,
    h_c: np.ndarray,
    n_c: int,
    q: np.ndarray,
    families: Sequence[str],
    q_upper: float,
) -> float:
    """The class's expected hit rate at probe ``p`` under the place null (module docstring):
    from its translates (``compare`` all of ``p``'s family), their upper-quartile hit rate
    ``+ 1 / n_c``; from regions of other shapes, the other classes' rate at ``p`` (its upper
    bound ``q_upper``: few hits among them make the ratio noisy) times the class's
    upper-quartile lift at those regions (at least ``1 / n_c``)."""
    if families[p] and all(f == families[p] for f in np.asarray(families)[compare]):
        return float(np.percentile(h_c[compare], TYPICAL_PERCENTILE)) / n_c + 1.0 / n_c
    lifts = (h_c[compare] / n_c) / q[compare]
    return max(q_upper * float(np.percentile(lifts, TYPICAL_PERCENTILE)), 1.0 / n_c)


def others_rate(hit: np.ndarray, pred: np.ndarray, c: int) -> np.ndarray:
    """(P,) the other classes' hit rate a class ``c``'s lift compares with: per probe, with at
    least ``MEDIAN_OTHERS`` other classes the median over them of each one's smoothed rate
    ``(h_k + 1) / (n_k + 2)`` under ``hit`` (N, P) (``pred`` the rows' predicted classes),
    else the pooled ``(h_o + 1) / (n_o + 2)`` (module docstring)."""
    others = [k for k in np.unique(pred) if k != c]
    if len(others) < MEDIAN_OTHERS:
        rest = pred != c
        return (hit[rest].sum(axis=0) + 1.0) / (rest.sum() + 2.0)
    rates = [(hit[pred == k].sum(axis=0) + 1.0) / (np.sum(pred == k) + 2.0) for k in others]
    return np.median(np.stack(rates), axis=0)


def probe_tests(
    drop: np.ndarray,
    pred: np.ndarray,
    classes: np.ndarray,
    areas: Sequence[float] | None = None,
    families: Sequence[str] | None = None,
    overlaps: np.ndarray | None = None,
    mirrors: Sequence[Sequence[int]] | None = None,
    dose: np.ndarray | None = None,
    tau: float = TAU,
    dose_lift: float = MIN_DOSE_LIFT,
) -> list[ProbeTest]:
    """Every (probe, class) test of a sweep: ``drop`` (N, P) of the rows' predicted classes
    ``pred`` (N,), for each class in ``classes``; ``areas`` (P,) each probe's region area (0
    for a global probe, which has no place lift; default: all equal), ``families`` (P,) each
    probe's region family (default: none, compared by area), ``overlaps`` (P, P) which
    probes' regions share a pixel (`translates`), ``mirrors`` (P,) each probe's mirror images
    (module docstring; default: none), ``dose`` (N, P) how much each probe changed
    each row (the dose lift of the global probes; default: not measured); ``tau`` the drop that
    counts as a hit; ``dose_lift`` a global probe's dosed rows' floor (`dose_floor`)."""
    hit = drop >= tau
    deep = drop >= max(tau, COLLAPSE_DROP)
    areas = np.ones(drop.shape[1]) if areas is None else np.asarray(areas, np.float64)
    compare = translates(areas, families, overlaps)
    fams = np.asarray(["" for _ in areas] if families is None else list(families), dtype=object)
    tests = []
    for c in classes:
        mine = pred == c
        n_c, n_o = int(mine.sum()), int((~mine).sum())
        if n_c == 0:
            continue
        h_c = hit[mine].sum(axis=0)
        collapse = deep[mine].sum(axis=0) / np.maximum(h_c, 1)
        h_o = hit[~mine].sum(axis=0)
        q = (h_o + 1.0) / (n_o + 2.0)  # every other class: the place lift's excesses
        q_lift = others_rate(hit, pred, int(c))  # the lift's: the median other class
        for p in range(drop.shape[1]):
            if dose is not None and areas[p] <= 0:
                tests.append(
                    global_test(p, int(c), mine, hit[:, p], dose[:, p], dose_lift, deep[:, p])
                )
                continue
            q_star, place = float(q_lift[p]), float("inf")
            if areas[p] > 0 and compare[p].any():
                upper = wilson_upper(int(h_o[p]), n_o)
                typical = typical_rate(p, compare[p], h_c, n_c, q, fams, upper)
                if mirrors is not None and len(mirrors[p]):
                    typical = max(typical, float(np.max(h_c[list(mirrors[p])])) / n_c + 1.0 / n_c)
                place = (h_c[p] / n_c) / typical
                q_star = max(q_star, min(typical, 1.0))
            lift = (h_c[p] / n_c) / q_lift[p]
            pv = binomial_tail(int(h_c[p]), n_c, q_star) if h_c[p] >= MIN_HITS else 1.0
            family = family_lift(p, h_c, fams, areas)
            tests.append(
                ProbeTest(
                    p,
                    int(c),
                    int(h_c[p]),
                    n_c,
                    int(h_o[p]),
                    n_o,
                    lift,
                    pv,
                    place,
                    family_lift=family,
                    collapse=float(collapse[p]),
                )
            )
    return tests


def family_lift(p: int, h_c: np.ndarray, families: np.ndarray, areas: np.ndarray) -> float:
    """The class's hits ``h_c[p]`` at region ``p`` over the median of its hits at every region
    of ``p``'s family (at least 1), for a family of ``FAMILY_PEAK_MEMBERS`` regions or more
    other than the map's hot spots (module docstring); inf otherwise."""
    if areas[p] <= 0 or families[p] in ("", "hot spot"):
        return float("inf")
    same = np.flatnonzero(families == families[p])
    if len(same) < FAMILY_PEAK_MEMBERS:
        return float("inf")
    return float(h_c[p]) / max(float(np.median(h_c[same])), 1.0)


def dose_floor(dose: np.ndarray, lift: float = MIN_DOSE_LIFT) -> float:
    """The change a global probe must make to a row for it to count (a *dosed* row):
    ``lift`` times the sample's mean change ``dose``."""
    return lift * float(np.mean(dose))


def global_test(
    p: int,
    cls: int,
    mine: np.ndarray,
    hit: np.ndarray,
    dose: np.ndarray,
    dose_lift: float = MIN_DOSE_LIFT,
    deep: np.ndarray | None = None,
) -> ProbeTest:
    """The test of a global probe ``p`` for class ``cls`` (module docstring): only the rows it
    changed most count (``dose >= dose_lift`` x the sample's mean dose, the *dosed* rows);
    ``lift`` is the class's share of dosed rows over the other classes' (smoothed), the
    ``place_lift`` the hit rate of the class's dosed rows over that of its other rows
    (smoothed), and the p-value ``P(Binomial(n_dosed, q_rest) >= h)`` for the ``h`` hits among
    the class's ``n_dosed`` dosed rows; the collapse is the share of those hits that are also
    ``deep`` (their drop reaches ``COLLAPSE_DROP``; default: every hit)."""
    dosed = dose >= dose_floor(dose, dose_lift)
    n_c, n_o = int(mine.sum()), int((~mine).sum())
    mine_dosed, mine_rest = mine & dosed, mine & ~dosed
    hits = hit & mine_dosed
    h = int(hits.sum())
    n_dosed = int(mine_dosed.sum())
    share_o = (np.sum(~mine & dosed) + 1.0) / (n_o + 2.0)
    lift = (n_dosed / max(n_c, 1)) / share_o
    q_rest = (np.sum(hit & mine_rest) + 1.0) / (mine_rest.sum() + 2.0)
    place = (h / max(n_dosed, 1)) / q_rest
    pv = binomial_tail(h, n_dosed, float(q_rest)) if h >= MIN_HITS else 1.0
    dose_lift = float(np.mean(dose[hits]) / max(np.mean(dose), 1e-12)) if h else 0.0
    other = int(np.sum(hit & ~mine & dosed))
    collapse = float(np.sum(hits & deep) / max(h, 1)) if deep is not None else 1.0
    return ProbeTest(p, cls, h, n_c, other, n_o, lift, pv, place, dose_lift, collapse=collapse)


def sufficient(transplant: float, transplant_null: float) -> bool:
    """The transplant test (module docstring): the share of other classes' rows a region
    copied from the class's hit rows moves to the class is at least ``MIN_TRANSPLANT`` above,
    and ``MIN_TRANSPLANT_LIFT`` times, the share the same region copied from other classes'
    rows moves."""
    return (
        transplant - transplant_null >= MIN_TRANSPLANT
        and transplant >= MIN_TRANSPLANT_LIFT * transplant_null
    )


def rule_margins(t: ProbeTest, n_tests: int) -> dict[str, tuple[float, float]]:
    """The rules a candidate must pass (module docstring) as ``name -> (value, floor)``, each
    passed when ``value >= floor``: the hits, the lift (a global probe's share lift against
    ``MIN_GLOBAL_LIFT``), the place and family lifts, the collapse, a global probe's dose
    lift, and the significance ``-log10 p`` against ``-log10(ALPHA / n_tests)``
    (Bonferroni over the ``n_tests`` tests). A rule that does not apply has value inf."""
    is_global = t.dose_lift != float("inf")
    return {
        "hits": (float(t.hits), float(MIN_HITS)),
        "lift": (t.lift, max(MIN_GLOBAL_LIFT, MIN_LIFT) if is_global else MIN_LIFT),
        "place lift": (t.place_lift, MIN_LIFT),
        "family lift": (t.family_lift, MIN_LIFT),
        "collapse": (t.collapse, MIN_COLLAPSE),
        "dose lift": (t.dose_lift, MIN_DOSE_LIFT),
        "significance": (-math.log10(max(t.p_value, 1e-300)), -math.log10(ALPHA / n_tests)),
    }


def standing(t: ProbeTest, n_tests: int) -> float:
    """How far ``t`` gets towards being a candidate: the smallest ``value / floor`` over its
    rules (`rule_margins`); it passes them all at 1 or more."""
    return min(v / f for v, f in rule_margins(t, n_tests).values())


def passes(t: ProbeTest, n_tests: int) -> bool:
    """Whether ``t`` passes every rule of `rule_margins`."""
    return all(v >= f for v, f in rule_margins(t, n_tests).values())


def shortfall(t: ProbeTest, n_tests: int) -> str:
    """The rules ``t`` fails, e.g. ``"place lift 2.42 < 2.5"`` (empty when it passes all)."""
    out = []
    for name, (v, f) in rule_margins(t, n_tests).items():
        if v < f:
            out.append(
                f"p-value {t.p_value:.2g} > {ALPHA / n_tests:.2g}"
                if name == "significance"
                else f"{name} {v:.3g} < {f:.3g}"
            )
    return "; ".join(out)


def _repeats(t: ProbeTest, taken: Sequence[ProbeTest], drop: np.ndarray, pred: np.ndarray) -> bool:
    """Whether ``MAX_OVERLAP`` or more of ``t``'s hit rows of its class are hit by a test of
    the same class in ``taken`` too: the same finding."""
    rows = (pred == t.cls) & (drop[:, t.probe] >= TAU)
    return any(
        c.cls == t.cls
        and np.sum(rows & (drop[:, c.probe] >= TAU)) >= MAX_OVERLAP * max(rows.sum(), 1)
        for c in taken
    )


def select_candidates(
    tests: list[ProbeTest],
    drop: np.ndarray,
    pred: np.ndarray,
    n_tests: int | None = None,
    enough: Callable[[ProbeTest], bool] | None = None,
) -> list[ProbeTest]:
    """The candidates among ``tests`` (module docstring), most significant first; ``enough``
    the transplant test of a region candidate (asked only of a test that would be taken;
    default: every test passes)."""
    n_tests = n_tests or max(len(tests), 1)
    passing = [t for t in tests if passes(t, n_tests)]
    passing.sort(key=lambda t: (t.p_value, -min(t.lift, t.place_lift), t.probe))
    chosen: list[ProbeTest] = []
    for t in passing:
        if not _repeats(t, chosen, drop, pred) and (enough is None or enough(t)):
            chosen.append(t)
        if len(chosen) == MAX_CANDIDATES:
            break
    return chosen


def near_misses(
    tests: list[ProbeTest],
    taken: Sequence[ProbeTest],
    drop: np.ndarray,
    pred: np.ndarray,
    n_tests: int | None = None,
) -> list[ProbeTest]:
    """The tests that are not ``taken`` (the candidates, before and after growing) but reach
    ``NEAR_MISS`` of every rule's floor (`standing`): a dependence the sample shows but does
    not establish, or a region the class needs that is not enough by itself (it passed every
    rule and failed the transplant test). Those first (most significant first), then the
    others by standing; one whose hit rows mostly repeat those of a candidate or of a near
    miss before it (`_repeats`) is the same finding; at most ``MAX_NEAR_MISSES``. Reported,
    never flagged."""
    n_tests = n_tests or max(len(tests), 1)
    close = [t for t in tests if t not in taken and standing(t, n_tests) >= NEAR_MISS]
    close.sort(key=lambda t: (-min(standing(t, n_tests), 1.0), t.p_value, t.probe))
    out: list[ProbeTest] = []
    for t in close:
        if not _repeats(t, [*taken, *out], drop, pred):
            out.append(t)
        if len(out) == MAX_NEAR_MISSES:
            break
    return out


def row_threshold(
    t: ProbeTest, drop: np.ndarray, pred: np.ndarray, regions: RegionInfo, dose: np.ndarray
) -> tuple[float, float]:
    """``(tau, dose_lift)``: the drop at which the member pass flags a row of candidate ``t``
    and, for a global probe, the dose floor (`dose_floor`) a row must reach to count. The
    lowest floor of ``ROW_DOSE_LIFTS`` (regions: ``MIN_DOSE_LIFT``, unused), then the lowest
    threshold of ``ROW_TAUS``, at which the class's hit rate at the probe is at least
    ``ROW_PLACE_LIFT`` times its typical rate (its place lift there, module docstring; for a
    global probe the hit rate of its dosed rows over the rest's); else the pair with the
    largest place lift (ties: the stricter floor, the lower threshold). A lower threshold
    finds the rows where the probe hides the mark only partly, a lower floor those where the
    mark is a small part of what a global fill changes; the place lift bounds the share of
    flags the class's own objects would give there (a band across the objects: 1 in 5 at 0.25
    where it is 1 in 10 at 0.5)."""
    lifts = ROW_DOSE_LIFTS if regions.areas[t.probe] <= 0 else (MIN_DOSE_LIFT,)
    place = {}
    for lift in sorted(lifts):
        for tau in sorted(ROW_TAUS):
            tests = probe_tests(drop, pred, np.asarray([t.cls]), *regions, dose, tau, lift)
            place[(tau, lift)] = next(u.place_lift for u in tests if u.probe == t.probe)
    clean = [key for key in place if place[key] >= ROW_PLACE_LIFT]
    if clean:
        return min(clean, key=lambda key: (key[1], key[0]))
    return max(place, key=lambda key: (place[key], key[1], -key[0]))


def widest_extent(
    found: list[ProbeTest],
    tests: list[ProbeTest],
    drop: np.ndarray,
    pred: np.ndarray,
    regions: RegionInfo,
    n_tests: int,
) -> list[ProbeTest]:
    """Each candidate replaced by its widest passing neighbour: the test of the same class
    whose region is of the same shape family (bands with bands, columns with columns, ...),
    overlaps the candidate's, is at most ``MAX_EXTENT`` times its area, knocks out at least
    ``MAX_OVERLAP`` of the candidate's hit rows and more rows of the class in all, and still
    passes the place test (``place_lift >= MIN_LIFT``, binomial p-value against the place
    null below ``ALPHA / n_tests``). A mark's extent varies from image to image (a watermark
    band at several heights): the candidate says *that* the class relies on something there,
    its widest passing neighbour how far it reaches. The class-vs-other-classes lift is not
    asked again — a wider region hides more of every class's objects, and the member pass
    only tests rows of the candidate's class."""
    a = np.asarray(regions.areas, np.float64)
    shape = [str(f).split(" ")[0] for f in regions.families]
    by_key = {(t.probe, t.cls): t for t in tests}
    hit = drop >= TAU
    out = []
    for t in found:
        mine = (pred == t.cls) & hit[:, t.probe]
        best = t
        for j in np.flatnonzero(regions.overlaps[t.probe]) if a[t.probe] > 0 else ():
            u = by_key.get((int(j), t.cls))
            if (
                u is None
                or shape[j] != shape[t.probe]
                or not 0 < a[j] <= MAX_EXTENT * a[t.probe]
                or min(u.place_lift, u.family_lift) < MIN_LIFT
                or u.hits <= best.hits
                or np.sum(mine & hit[:, j]) < MAX_OVERLAP * mine.sum()
            ):
                continue
            typical = min(u.rate / u.place_lift, 1.0)
            if binomial_tail(u.hits, u.rows, typical) <= ALPHA / n_tests:
                best = u
        if best not in out:  # two candidates may grow into the same region
            out.append(best)
    return out
