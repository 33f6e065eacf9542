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

where, with at least ``MEDIAN_OTHERS`` (`fastfem.audit.reliance.others`, where the lift's
comparison is made) other classes, ``q`` is instead the median over them of
each one's rate ``(h_k + 1) / (n_k + 2)``: some class of a model often falls under almost any
occlusion (one predicted from weak, spread-out evidence), and pooled in, it lifts the other
classes' rate at a region that holds a mark of class ``c`` to the level of ``c``'s own
(measured: a stamp over the centre of the benchmark's photographs, relied on by class 3, knocks
out 36 of its 80 sampled rows, 92% of them stamped, and 50 of the 199 rows of the other
classes, 45 of them of the ring class that every region knocks out: lift 1.8 pooled, 9.2 over
the median class). A region that hides objects hides the objects of most classes; a mark
pushes one. (The pool without the most-hit other class, lower than the median, was tried: on
a shapes model whose classes' objects the centre cell hides on 14, 9, 4 and 2 of 80 rows, it
made the first class a candidate there; the median keeps it out.) Where most other classes
fall under any region, those at least 4 times as fragile as ``c`` are compared at its
fragility first (`fastfem.audit.reliance.others`).

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

An object is larger than the gap between a region and its translates more often than a mark
is: a class whose objects a band hides is knocked out by the bands above and below it too, and
those rows raise the translates' rate as much as the region's (a watermark band over the shapes,
relied on by 22 of the class's 29 hit rows: place lift 2.42). A row that relies on what lies in
``p`` alone is knocked out by ``p`` and by none of its translates; so every test of a region
with translates that is less than half the image across in some direction (a band, a column,
a cell: `fastfem.audit.reliance.probes.narrow_regions`) is also counted on those rows only
(``only_here``, `only_here_hits`):

    e_ip = [d_ip >= TAU and d_ir < TAU for every translate r of p]

its hit count, lift, collapse, family lift and p-value on ``e``, its translates' rate on
``e`` too, and its mirror images' rate on *every* hit: under the object null the class is
knocked out at ``p`` as often as at its mirror image, and ``e_cp <= h_cp``, so that bound holds
for the rows counted here as well (counted on ``e`` at the mirror as well, a class whose model
reads the top of its objects more than the bottom — a ring's upper arc — would pass). The
sweep keeps, per (probe, class), the stronger of the two counts (`rules.stronger`). Measured
on the shortcut benchmark's stored sweeps (74 audits, both splits): the watermark bands over
the objects reach place lifts of 3.5-5.0 this way (2.3-2.4 on every hit), no control and no
object test becomes a candidate (the highest, a letters class's middle band, reaches 0.98 of
every floor, held out by its lift). A quarter of the image (half of it across both ways) is
not counted so: its translates are the far half of the image, and a row knocked out by one half
and not the other says only which half an object is in (on the digits check's models a digit
class's upper quarter became a candidate this way, precision 0.69 where 0.96 without).

Either null — "the region hides other classes' objects as often" or "it hides this class's
objects as often as comparable regions do" — predicts a hit rate of at most ``q* = max(q,
t_cp)``, so the p-value is ``P(Binomial(n_c, q*) >= h_c)`` (``q* = q`` for global probes).

A global probe (low-pass, colour moments, median, grey-world balance, a hue turned grey, the
fall-off, the grain) has no place; it removes a property of some images — a texture, noise, a colour
cast, a softness — and changes every image somewhat, often enough to knock out many predictions of
every class (small models read fine detail). What singles out a shortcut is *which* rows: the ones
the probe changes most (its *dose*, ``mean |probe(x) - x|``, at least ``MIN_DOSE_LIFT`` times the
sample's mean: the *dosed* rows) gather in the class the property pushes to, and removing it knocks
exactly those out. So for a global probe (with doses measured; `global_test`) only the class's dosed
hits count (``h``), ``lift`` is the class's share of dosed rows over the other classes' share,
``place_lift`` the hit rate of its dosed rows over that of its other rows, and the p-value is taken
against the latter; the share lift must reach ``MIN_GLOBAL_LIFT``.

Which tests are candidates, near misses and the row thresholds: `fastfem.audit.reliance.rules`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from fastfem.audit.reliance.others import class_fragility, class_hits, others_rate

TAU = 0.25  # a drop of the predicted class's probability that counts as a hit

MIN_HITS = 5  # hits among the class's rows

#: A candidate's hit rows must include this share that fall by at least ``COLLAPSE_DROP``
#: (its *collapse*, module docstring).
COLLAPSE_DROP = 0.5

AREA_RATIO = 1.5  # regions "of the same size" for the place lift

MIN_FAMILY = 3  # the fewest regions a place lift compares with


#: A family of at least this many regions (bands, columns, cells, quarters; not the map's hot
#: spots) also asks the *family lift*: the class's hits at the region over the median of its
#: hits at every region of the family, overlapping ones included (module docstring).
FAMILY_PEAK_MEMBERS = 5

#: The translates' "typical" hit rate: their upper quartile, not their median. Objects are not
#: spread evenly over a sample of a few dozen rows per class; the median of the translates
#: made one cell of the bundled sample look like a mark for triangles (place lift 3.3).
TYPICAL_PERCENTILE = 75.0

#: A global probe (low-pass, colour) has no translates; what it removes is a property of some
#: images — a texture, a cast — so the rows it knocks out must be the ones it changes most:
#: their mean change over the sample's must reach this (a class that merely needs colour is
#: knocked out on ordinary images).
MIN_DOSE_LIFT = 1.5


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
    ``mirrors`` (P,) each probe's mirror images (`typical_rate`; default: none), ``derived``
    (P,) which probes' drops are derived from others' (`translates`; default: none)."""

    areas: Sequence[float]
    families: Sequence[str]
    overlaps: np.ndarray
    mirrors: Sequence[Sequence[int]] | None = None
    derived: Sequence[bool] | None = None


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
    #: counted on the rows only this region knocks out, none of its translates
    #: (`only_here_hits`, module docstring)
    only_here: bool = False
    #: the lift over the other classes' rates as they are, none matched to this class's
    #: fragility (`fastfem.audit.reliance.others`); inf: as ``lift``
    plain_lift: float = float("inf")
    #: a colour probe's hit rows: the largest share that goes to one other class with the
    #: colour taken away (`fastfem.audit.reliance.returns`); NaN: not measured
    return_share: float = float("nan")
    #: a hue's area view (`fastfem.kernels.occlusion.AREA_HUE_FILLS`): held to the global lift
    area: bool = False

    @property
    def rate(self) -> float:
        return self.hits / max(self.rows, 1)

    @property
    def other_rate(self) -> float:
        return self.other_hits / max(self.other_rows, 1)


def swept_regions(areas: Sequence[float], derived: Sequence[bool] | None = None) -> np.ndarray:
    """(P,) bool: the region probes (area > 0) whose drops the sweep measured itself, not
    ``derived`` from others' (`translates`; default: none derived)."""
    a = np.asarray(areas, np.float64)
    return (a > 0) & ~np.asarray(np.zeros(len(a), bool) if derived is None else derived, bool)


def translates(
    areas: Sequence[float],
    families: Sequence[str] | None = None,
    overlaps: np.ndarray | None = None,
    derived: Sequence[bool] | None = None,
) -> list[np.ndarray]:
    """Per probe, the probes its place lift compares with (module docstring): the members of
    its family that do not overlap it (its translates elsewhere) when there are at least
    ``MIN_FAMILY``, else the other region probes (area > 0) whose area is within ``AREA_RATIO``
    of its own, else every other region probe; a ``derived`` probe (P,; default: none: a pair
    of adjacent bands, two other probes counted again) is compared with no probe outside its
    family.
    ``overlaps`` (P, P) bool: which probes' regions share a pixel (default: none do)."""
    a = np.asarray(areas, np.float64)
    n = len(a)
    fam = np.asarray(["" for _ in a] if families is None else list(families), dtype=object)
    apart = ~np.asarray(overlaps, bool) if overlaps is not None else ~np.eye(n, dtype=bool)
    regional = (a > 0)[None, :] & apart
    ratio = np.abs(np.log(np.maximum(a, 1e-12)[:, None] / np.maximum(a, 1e-12)[None, :]))
    out = []
    anywhere = swept_regions(a, derived)[None, :] & ~np.eye(n, dtype=bool)
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


def has_translates(p: int, compare: np.ndarray, families: np.ndarray) -> bool:
    """Whether probe ``p``'s place lift compares it with its translates (``compare``, from
    `translates`: members of its own family) rather than with regions of other shapes."""
    return (
        bool(families[p]) and bool(compare.any()) and bool(np.all(families[compare] == families[p]))
    )


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
    if has_translates(p, compare, np.asarray(families, dtype=object)):
        return float(np.percentile(h_c[compare], TYPICAL_PERCENTILE)) / n_c + 1.0 / n_c
    lifts = (h_c[compare] / n_c) / q[compare]
    return max(q_upper * float(np.percentile(lifts, TYPICAL_PERCENTILE)), 1.0 / n_c)


def only_here_hits(
    hit: np.ndarray, compare: Sequence[np.ndarray], families: np.ndarray, counted: Sequence[bool]
) -> np.ndarray:
    """(N, P) bool: ``hit`` (N, P) kept, at each ``counted`` probe with translates
    (`has_translates`; ``compare`` from `translates`), only on the rows none of its translates
    hits (module docstring: ``e_ip``); other probes' columns unchanged."""
    out = hit.copy()
    for p, others in enumerate(compare):
        if counted[p] and has_translates(p, others, families):
            out[:, p] &= ~hit[:, others].any(axis=1)
    return out


def probe_tests(
    drop: np.ndarray,
    pred: np.ndarray,
    classes: np.ndarray,
    areas: Sequence[float] | None = None,
    families: Sequence[str] | None = None,
    overlaps: np.ndarray | None = None,
    mirrors: Sequence[Sequence[int]] | None = None,
    derived: Sequence[bool] | None = None,
    dose: np.ndarray | None = None,
    tau: float = TAU,
    dose_lift: float = MIN_DOSE_LIFT,
    only_here: Sequence[bool] | None = None,
) -> list[ProbeTest]:
    """Every (probe, class) test of a sweep: ``drop`` (N, P) of the rows' predicted classes
    ``pred`` (N,), for each class in ``classes``; ``areas`` (P,) each probe's region area (0
    for a global probe, which has no place lift; default: all equal), ``families`` (P,) each
    probe's region family (default: none, compared by area), ``overlaps`` (P, P) which
    probes' regions share a pixel (`translates`), ``mirrors`` (P,) each probe's mirror images
    (module docstring; default: none), ``derived`` (P,) which probes' drops are derived from
    others' (`translates`; default: none), ``dose`` (N, P) how much each probe changed
    each row (the dose lift of the global probes; default: not measured); ``tau`` the drop that
    counts as a hit; ``dose_lift`` a global probe's dosed rows' floor (`dose_floor`);
    ``only_here`` (P,) given: the tests of the probes it marks that have translates only,
    counted on the rows no translate knocks out (`only_here_hits`, module docstring)."""
    every_hit = drop >= tau
    areas = np.ones(drop.shape[1]) if areas is None else np.asarray(areas, np.float64)
    compare = translates(areas, families, overlaps, derived)
    fams = np.asarray(["" for _ in areas] if families is None else list(families), dtype=object)
    if only_here is None:  # every hit, every probe
        hit, asked = every_hit, [True] * len(areas)
    else:
        hit = only_here_hits(every_hit, compare, fams, only_here)
        asked = [
            bool(only_here[p]) and has_translates(p, compare[p], fams) for p in range(len(areas))
        ]
    deep = hit & (drop >= COLLAPSE_DROP)
    regional = swept_regions(areas, derived)
    counts = class_hits(hit, pred)
    fragility = class_fragility(counts, regional, compare, TYPICAL_PERCENTILE)
    tests = []
    for c in classes:
        mine = pred == c
        n_c, n_o = int(mine.sum()), int((~mine).sum())
        if n_c == 0:
            continue
        h_c = hit[mine].sum(axis=0)
        h_every = every_hit[mine].sum(axis=0)  # the mirror images' rate: every hit
        collapse = deep[mine].sum(axis=0) / np.maximum(h_c, 1)
        h_o = hit[~mine].sum(axis=0)
        q = (h_o + 1.0) / (n_o + 2.0)  # every other class: the place lift's excesses
        q_lift = others_rate(counts, int(c), fragility)  # the lift's: the median other class
        q_plain = others_rate(counts, int(c))  # ... none matched to c's fragility
        for p in range(drop.shape[1]):
            if not asked[p]:
                continue
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
                    typical = max(typical, np.max(h_every[list(mirrors[p])]) / n_c + 1.0 / n_c)
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
                    only_here=only_here is not None,
                    plain_lift=float((h_c[p] / n_c) / q_plain[p]),
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


def hit_rows(
    t: ProbeTest, drop: np.ndarray, pred: np.ndarray, dose: np.ndarray | None = None
) -> np.ndarray:
    """(S,) the sampled rows the test ``t`` counts as hits: the rows of its class (``pred``)
    its probe knocks out (``drop`` (S, P) ``>= TAU``), a global probe's (``dose`` (S, P)
    given) only its dosed rows (`global_test`)."""
    hits = (pred == t.cls) & (drop[:, t.probe] >= TAU)
    if dose is not None:
        hits &= dose[:, t.probe] >= dose_floor(dose[:, t.probe])
    return hits


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
