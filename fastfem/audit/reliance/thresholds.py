"""At what drop the member pass flags a row of a candidate (`row_threshold`; host, NumPy).

A probe hides a mark less cleanly than removing it does (the ground truth compares with the
image's clean twin), so a candidate's member rows are flagged at one of ``ROW_TAUS``, and a
global candidate's counted only above one of ``ROW_DOSE_LIFTS``, chosen on the sweep's sample:
the lowest at which the class's own objects would give few flags — the place lift
(`fastfem.audit.reliance.stats`) recomputed there at least ``ROW_PLACE_LIFT`` — and for a
region without translates, whose place null is an upper bound, the one below that whose
flags the place lifts expect to score best (`expected_f1`).
"""

from __future__ import annotations

import numpy as np

from fastfem.audit.reliance.stats import (
    MIN_DOSE_LIFT,
    ProbeTest,
    RegionInfo,
    has_translates,
    probe_tests,
    translates,
)

#: The drops a member row may be flagged at, strictest first (`row_threshold`). A region probe
#: hides a mark less cleanly than removing it does (the ground truth's clean twin): measured on
#: the shortcut benchmark, a watermark band's inpainted rows fell by >= 0.5 for 68% of the rows
#: that rely on it, by >= 0.25 for all of them.
ROW_TAUS: tuple[float, ...] = (0.5, 0.35, 0.25)

#: A member row is flagged at the lowest threshold where the class's hit rate at the region is
#: this many times its typical rate elsewhere (at most 1 flag in 10 from the class's objects).
ROW_PLACE_LIFT = 10.0

#: The dose floors (multiples of the sample's mean change) a global candidate's member rows
#: may be counted at, strictest first (`row_threshold`). The candidate test's 1.5 keeps out
#: rows a global fill changes by nature; but a mark the fill removes is only part of the
#: image, and its rows' change can lie just under it (measured: a diagonal line's relied-on
#: rows at 1.35-1.7x the mean, the unmarked rows of its class at most 0.97x).
ROW_DOSE_LIFTS: tuple[float, ...] = (1.5, 1.25, 1.0)


def row_tests(
    t: ProbeTest, drop: np.ndarray, pred: np.ndarray, regions: RegionInfo, dose: np.ndarray
) -> dict[tuple[float, float], ProbeTest]:
    """Each ``(tau, dose_lift)`` `row_threshold` chooses from -> ``t``'s test there (its hits
    and place lift counted at that drop and dose floor)."""
    lifts = ROW_DOSE_LIFTS if regions.areas[t.probe] <= 0 else (MIN_DOSE_LIFT,)
    out = {}
    for lift in sorted(lifts):
        for tau in sorted(ROW_TAUS):
            tests = probe_tests(drop, pred, np.asarray([t.cls]), *regions, dose, tau, lift)
            out[(tau, lift)] = next(u for u in tests if u.probe == t.probe)
    return out


def row_places(
    t: ProbeTest, drop: np.ndarray, pred: np.ndarray, regions: RegionInfo, dose: np.ndarray
) -> dict[tuple[float, float], float]:
    """Each ``(tau, dose_lift)`` `row_threshold` chooses from -> ``t``'s place lift there."""
    return {key: u.place_lift for key, u in row_tests(t, drop, pred, regions, dose).items()}


def expected_f1(tests: dict[tuple[float, float], ProbeTest]) -> dict[tuple[float, float], float]:
    """Each threshold's F1 as the sample's place lifts expect it (`row_threshold`): of its
    ``h`` hit rows, ``h / place_lift`` are expected from the class's objects (the place null's
    rate, `stats.typical_rate`, times the class's rows) and ``m = h (1 - 1 / place_lift)``
    from the mark; the mark's rows are taken to be the most any threshold expects, ``M``, so

        F1 = 2 m / (h + M)."""
    marked = {k: u.hits * max(0.0, 1.0 - 1.0 / max(u.place_lift, 1e-12)) for k, u in tests.items()}
    most = max(marked.values(), default=0.0)
    return {k: 2.0 * marked[k] / max(tests[k].hits + most, 1e-12) for k in tests}


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
    finds rows where the probe hides the mark partly, a lower floor those where the mark is a
    small part of what a global fill changes; the place lift bounds the flags the class's own
    objects would give.

    That bound is a typical rate where a region has translates (`stats.has_translates`): a
    class's objects may gather where the mark is beyond it (a band across the shapes' objects,
    place lift 4 at 0.5: flagged at 0.35, 0.67 of its flags marked, 0.75 at 0.5), and the
    margin of 10 holds against that. A region without translates (the centre, a border
    ring, the four corners) takes it from the other classes' rate, at the upper end of its
    interval, times the class's upper-quartile lift elsewhere (`stats.typical_rate`): an upper
    bound, which the margin counts twice. Such a region goes down to the lower threshold
    whose flags the place lifts expect to score best (`expected_f1`), where that beats the
    threshold above (measured: a stamp over the photos' centre, place lifts 12.0, 6.0 and 2.8
    at 0.5, 0.35 and 0.25 on 12, 19 and 20 of the class's 80 sampled rows, expected F1 0.79,
    0.91 and 0.72; flagged at 0.5, 34 of its 55 relied-on rows, at 0.35 52, with 1 more of
    the class's 156 unmarked rows)."""
    tests = row_tests(t, drop, pred, regions, dose)
    clean = [key for key, u in tests.items() if u.place_lift >= ROW_PLACE_LIFT]
    if clean:
        chosen = min(clean, key=lambda key: (key[1], key[0]))
    else:
        chosen = max(tests, key=lambda key: (tests[key].place_lift, key[1], -key[0]))
    if regions.areas[t.probe] <= 0 or has_translates(
        t.probe, translates(*regions[:3], regions.derived)[t.probe], np.asarray(regions.families)
    ):
        return chosen
    score = expected_f1(tests)
    lower = [key for key in tests if key[0] <= chosen[0]]
    return max(lower, key=lambda key: (score[key], key[0]))
