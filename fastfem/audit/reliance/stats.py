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

That alone does not separate a mark from objects of one class that a region's *shape* hides
more often (thin objects and thin columns). A mark sits at one place; objects of a class sit
anywhere, so they are hit by every translate of a region alike. Hence the *place lift*: the
class's hit rate at ``p`` over its typical hit rate at regions of the same kind *elsewhere*
(the upper quartile over the members of ``p``'s family — bands, columns, cells, quarters —
that share no pixel with it: its translates; a region that overlaps ``p`` hides part of the
same mark. A region without ``MIN_FAMILY`` such translates — a border ring, the centre, a
map's hot spot — is compared with the other regions whose area is within a factor
``AREA_RATIO`` of its own, else with every other region: regions apart from the centre all
touch the image's edge, where
objects are cut off, so they would flatter it),

    place_lift = (h_c / n_c) / (q75_{r ~ p} (h_cr / n_c) + 1 / n_c)

Either null — "the region hides other classes' objects as often" or "it hides this class's
objects as often as its translates do" — predicts a hit rate of at most ``q* = max(q,
q75_{r ~ p} (h_cr / n_c) + 1 / n_c)``, so the p-value is ``P(Binomial(n_c, q*) >= h_c)``
(``q* = q`` for global probes), and ``(p, c)`` is a *candidate* when ``h_c >= MIN_HITS``,
``min(lift, place_lift) >= MIN_LIFT`` and the p-value is below ``ALPHA`` divided by the number
of tests (probes x classes: Bonferroni). A global probe also needs its *dose lift* — the mean
change ``mean |probe(x) - x|`` of the class's hit rows over the sample's — to reach
``MIN_DOSE_LIFT``. Candidates are taken most significant first, skipping one whose hit rows
of class ``c`` mostly repeat (``>= MAX_OVERLAP`` of its hits) a candidate already taken for
``c``: a band and a cell inside it that hide the same mark are one finding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

TAU = 0.25  # a drop of the predicted class's probability that counts as a hit
MIN_HITS = 5  # hits among the class's rows
MIN_LIFT = 2.5  # the class's hit rate over the other rows' and over its translates' (smoothed)
ALPHA = 0.01  # family-wise significance (Bonferroni over probes x classes)
MAX_OVERLAP = 0.5  # share of a candidate's hits already explained by an earlier one
AREA_RATIO = 1.5  # regions "of the same size" for the place lift
MIN_FAMILY = 3  # the fewest regions a place lift compares with
#: The translates' "typical" hit rate: their upper quartile, not their median. Objects are not
#: spread evenly over a sample of a few dozen rows per class; the median of the translates
#: made one cell of the bundled sample look like a mark for triangles (place lift 3.3).
TYPICAL_PERCENTILE = 75.0
#: A global probe (low-pass, colour) has no translates; what it removes is a property of some
#: images — a texture, a tint — so the rows it knocks out must be the ones it changes most:
#: their mean change over the sample's must reach this (a class that merely needs colour is
#: knocked out on ordinary images).
MIN_DOSE_LIFT = 1.5
MAX_CANDIDATES = 8  # candidates tested on every row (each costs one forward per member row)


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


def probe_tests(
    drop: np.ndarray,
    pred: np.ndarray,
    classes: np.ndarray,
    areas: Sequence[float] | None = None,
    families: Sequence[str] | None = None,
    overlaps: np.ndarray | None = None,
    dose: np.ndarray | None = None,
) -> list[ProbeTest]:
    """Every (probe, class) test of a sweep: ``drop`` (N, P) of the rows' predicted classes
    ``pred`` (N,), for each class in ``classes``; ``areas`` (P,) each probe's region area (0
    for a global probe, which has no place lift; default: all equal), ``families`` (P,) each
    probe's region family (default: none, compared by area), ``overlaps`` (P, P) which
    probes' regions share a pixel (`translates`), ``dose`` (N, P) how much each probe changed
    each row (the dose lift of the global probes; default: not measured)."""
    hit = drop >= TAU
    areas = np.ones(drop.shape[1]) if areas is None else np.asarray(areas, np.float64)
    compare = translates(areas, families, overlaps)
    tests = []
    for c in classes:
        mine = pred == c
        n_c, n_o = int(mine.sum()), int((~mine).sum())
        if n_c == 0:
            continue
        h_c = hit[mine].sum(axis=0)
        h_o = hit[~mine].sum(axis=0)
        q = (h_o + 1.0) / (n_o + 2.0)
        for p in range(drop.shape[1]):
            q_star, place = float(q[p]), float("inf")
            if areas[p] > 0 and compare[p].any():
                typical = float(np.percentile(h_c[compare[p]], TYPICAL_PERCENTILE)) / n_c
                typical += 1.0 / n_c
                place = (h_c[p] / n_c) / typical
                q_star = max(q_star, min(typical, 1.0))
            lift = (h_c[p] / n_c) / q[p]
            pv = binomial_tail(int(h_c[p]), n_c, q_star) if h_c[p] >= MIN_HITS else 1.0
            hits = mine & hit[:, p]
            dose_lift = float("inf")
            if dose is not None and areas[p] <= 0 and hits.any():
                dose_lift = float(np.mean(dose[hits, p]) / max(np.mean(dose[:, p]), 1e-12))
            tests.append(
                ProbeTest(p, int(c), int(h_c[p]), n_c, int(h_o[p]), n_o, lift, pv, place, dose_lift)
            )
    return tests


def select_candidates(
    tests: list[ProbeTest], drop: np.ndarray, pred: np.ndarray, n_tests: int | None = None
) -> list[ProbeTest]:
    """The candidates among ``tests`` (module docstring), most significant first."""
    n_tests = n_tests or max(len(tests), 1)
    passing = [
        t
        for t in tests
        if t.hits >= MIN_HITS
        and min(t.lift, t.place_lift) >= MIN_LIFT
        and t.dose_lift >= MIN_DOSE_LIFT
        and t.p_value <= ALPHA / n_tests
    ]
    passing.sort(key=lambda t: (t.p_value, -t.lift, t.probe))
    chosen: list[ProbeTest] = []
    for t in passing:
        rows = (pred == t.cls) & (drop[:, t.probe] >= TAU)
        redundant = any(
            c.cls == t.cls
            and np.sum(rows & (drop[:, c.probe] >= TAU)) >= MAX_OVERLAP * max(rows.sum(), 1)
            for c in chosen
        )
        if not redundant:
            chosen.append(t)
        if len(chosen) == MAX_CANDIDATES:
            break
    return chosen
