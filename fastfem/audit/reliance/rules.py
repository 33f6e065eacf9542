"""Which of the sweep's tests (`fastfem.audit.reliance.stats`) are candidates, which near misses,
and what each candidate grows to (host, NumPy); at what drop the member pass flags a row is
`fastfem.audit.reliance.thresholds`'.

A test ``(p, c)`` is a *candidate* when ``h_c >= MIN_HITS``, ``min(lift, place_lift,
family_lift) >= MIN_LIFT`` (the family lift, `stats.family_lift`, where it applies), its
*collapse* — the share of its hit rows whose drop reaches ``COLLAPSE_DROP`` — is at least
``MIN_COLLAPSE``, and the p-value is below ``ALPHA`` divided by the number of tests (probes x
classes: Bonferroni). The collapse separates what a class relies on from what it merely reads:
hiding the mark a class is predicted by takes its evidence away, and the prediction collapses;
hiding part of an object the model reads whole dents it. Objects of one class whose shape is not
mirror-symmetric (a letter K's stem on its left, an A's crossbar below its middle) pass the
lifts narrowly at the central regions, where objects are densest and mirror images do not help —
measured on a base of rotated letters these tests had not seen: 6 such false candidates, lift
2.5-3.7, place lift 2.5-3.0, collapse 0.00-0.23 (median drop 0.31-0.41); every planted mark the
test finds on the three bases has a collapse of 0.42 or more (median drop 0.49-1.00). The ground
truth of a shortcut asks the same: the mark raises its class's probability by 0.5.

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
extent varies from image to image is hidden whole by a wider region of the same shape. A
band, column or cell then grows by a margin (`margin_taken`; its family swept again, each
region grown by H/16 px: `choice.Sweep.margin`): a mark that straddles the edge of the
family's grid is hidden whole by no region of it (measured: a digits tag whose rim ends one
row below its cell's edge, 49 of its 72 relied-on rows knocked out by the cell, 71 by the
cell grown by 2 px).

A *colour* probe (`fastfem.kernels.occlusion`'s ``PROPERTY_FILLS``: one hue moved towards grey over
the whole image, the image white-balanced by the grey world, its radial fall-off of brightness
taken away, ``falloff``, or fine detail given to a soft image, ``grain``: a colour, a cast, a
lighting, a softness, which a class's own images may have by nature as well as a mark may bring it;
the rules below say colour for all four) is judged with a lift floor of its own,
``MIN_COLOUR_LIFT``: the class holds 2 times the other classes' share of the rows the colour
dominates. With no floor, dozens of colours of the benchmark's own objects were listed, at lifts of
0.4-1.7. A region's floor (2.5) is too high for a mark: the marked images of other classes that the
model does not follow keep their class and carry the colour there, so a mark the model follows on
part of its images dilutes its own lift (the photos' green sticker: 17 of the other classes' 43
dosed rows are stickered rows the model left in their class, lift 2.43). Measured on the shortcut
benchmark's 77 stored sweeps (its 74 audits, two held-out kinds, a retrained model): the colours
that pass every other rule are the planted marks' at lifts of 2.05-12.1 and the objects' own at
1.68 or less. A hue's area view (``no <hue> area``) keeps the global floor: a class's own objects
and scenes have large areas of a colour (the photos' class 1, magenta by area: 2.05 on the holdout
split), a green background planted on a class's images gathers 5.7 (digits) and 271 (unit tests).
One that passes every rule so is a *lead* (`colour_lead`).

Taking a hue or a cast away knocks out a class that relies on a coloured mark (a red line, a stamp,
a sticker, an orange cast), but just as well a class whose own objects have that colour (a model
that tells red objects from green ones passes every rule, at a lift of 87). What tells them apart
without labels is how much of the class the colour holds: a mark moves *some* images of other
classes into the class, and the class's own images keep it without the mark; a class's own colour
is on its images. So without labels a colour lead that knocks out at most ``MAX_COLOUR_RATE`` of
the class's sampled rows is a candidate, taken after every other (`needs_labels`) (the benchmark's
colour leads, all marks, 0.07-0.57, a class that *is* a colour 1.00); one that knocks out more,
only where its rows go back to many classes once it is taken away
(`fastfem.audit.reliance.returns`). A class whose own colour is on at most three quarters of its
images would be flagged: labels decide. With labels, the labels decide
(`fastfem.audit.reliance.labels`): a *lead* — a colour lead, or a test of any other probe that
reaches ``NEAR_MISS`` of every rule's floor (`standing`) and, for a region, passes the transplant
test — is a candidate where they confirm it, and then flags only the rows of the class labelled
another class that it knocks out (`needs_labels`); a colour lead on part of its class
(`colour_part`) also where they neither confirm nor disown it (`labels.labels_verdict`: a model
that mixes classes), flagging every row. Leads are taken after every other candidate, so that a
mark a probe finds by itself (a red line in a band) is that candidate's finding, flagged on every
row it knocks out.

Such a candidate may flag only the class's rows labelled another class, so it is grown
(`widest_extent`) and given its row threshold (`thresholds.row_threshold`) on those rows alone
(`labels.labelled_other`), the place test unchanged: the class's own images, whose objects a wider
band hides too, are out of the way there (the shapes' lower band's 16 px band: place lift
2.31 over every row of the class, 8.3 over those). The labels are not asked again of the
grown region: they confirmed the lead, and it keeps most of its hit rows. A candidate counted on
the rows only its region knocks out (`stronger`) is treated the same way where the labels
confirm it: its region hides the class's own objects on rows that its translates hide as well,
and the member pass, which runs the region alone, would flag those too (measured: the shapes'
lower watermark band, 0.75 of its flags marked on every row, 1.00 on the rows labelled another
class) — unless its flags over every row are clean (`choice.Sweep.clean`: the letters' top band).

A global candidate names *what* a class relies on (a colour, a texture), not where. Where it lies
in one place (a stamp, a logo, a coloured tag), a region hides it whole, the shape as well as the
hue (a translucent red ring moved to grey is still a ring), and knocks out rows the global probe
leaves standing; but that region may be no candidate by itself, where it hides the objects of other
classes as often (the shapes' centre, where their objects sit: lift 1.29). The global candidate's
hit rows ``G`` (of the class's rows ``C``) single it out: a swept region *places* the candidate
(`places`) when the rows ``R`` it lowers by ``COLLAPSE_DROP`` — the change the region will flag a
row at — hold most of ``G`` and few of the class's other rows ``O = C - G``,

    cover = |R & G| / |G| >= MIN_COVER,   contrast = cover / ((|R & O| + 1) / (|O| + 2)) >= MIN_LIFT

and it passes the transplant test; of several, the one of the largest contrast (ties: the
smallest). It is tested on every row of the class beside the global candidate and flags a row it
lowers by ``COLLAPSE_DROP``, the ground truth's own change: ``O`` holds the rows the global probe
missed, so it gives no null for a lower threshold, and counted at ``TAU`` the contrast falls as the
region finds more of them (the shapes' stamp on the holdout split: 2.75 at ``TAU``). A lead the
labels confirmed (flagging only the class's rows labelled another class) counts ``G`` among those
rows, and ``O`` is the class's rows labelled the class: its own images, which hold no mark, and the
null the labels give. Measured on the shortcut benchmark's 19 global candidates (both splits): only
the shapes' stamp, found by ``no red`` (15 and 16 hit rows of the class's 80, all stamped), has
one, the centre: cover 0.93 and 0.94, contrast 6.3 and 5.2; it lowers 23 and 26 of the class's
sampled rows by 0.5, all stamped, 9 and 11 of them beyond the colour's; since the colour floor also
the photos' frame (holdout: ``falloff``), by the 3 px border (cover 0.83, contrast 3.0; 25 rows,
all framed).

A test that is no candidate but reaches ``NEAR_MISS`` (0.8) of every rule's floor, or passes every
rule and fails the transplant test, is a *near miss* (`near_misses`): reported with what it lacks
(`shortfall`), never flagged: a shortcut the sample shows only weakly (a band whose neighbours hide
the class's objects too: place lift 2.42) is still named for a person.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence

import numpy as np

from fastfem.audit.reliance.returns import goes_back, return_words
from fastfem.audit.reliance.stats import (
    MIN_DOSE_LIFT,
    MIN_HITS,
    TAU,
    ProbeTest,
    RegionInfo,
    binomial_tail,
)
from fastfem.kernels.occlusion import GROWN

MIN_LIFT = 2.5  # the class's hit rate over the other rows' and over its translates' (smoothed)

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

MAX_EXTENT = 2.0  # a candidate may grow to a neighbour of at most this many times its area

MAX_CANDIDATES = 8  # candidates tested on every row (each costs one forward per member row)

#: A test that is no candidate but reaches this share of every rule's floor (`standing`) is
#: a *near miss* (`near_misses`), at most ``MAX_NEAR_MISSES`` of them. Never flagged.
NEAR_MISS = 0.8
MAX_NEAR_MISSES = 8

MAX_COLOUR_RATE = 0.75  # without labels, a colour lead's largest hit rate as a candidate

MIN_COLOUR_LIFT = 2.0  # a colour probe's lift floor but a hue's area view's (module docstring)

MIN_COVER = 0.8  # the share of a global candidate's hit rows a region placing it knocks out


def sufficient(transplant: float, transplant_null: float) -> bool:
    """The transplant test (module docstring): the share of other classes' rows a region
    copied from the class's hit rows moves to the class is at least ``MIN_TRANSPLANT`` above,
    and ``MIN_TRANSPLANT_LIFT`` times, the share the same region copied from other classes'
    rows moves."""
    return (
        transplant - transplant_null >= MIN_TRANSPLANT
        and transplant >= MIN_TRANSPLANT_LIFT * transplant_null
    )


def rule_margins(
    t: ProbeTest, n_tests: int, colour: bool = False
) -> dict[str, tuple[float, float]]:
    """The rules a candidate must pass (module docstring) as ``name -> (value, floor)``, each
    passed when ``value >= floor``: the hits, the lift (a global probe's share lift against
    ``MIN_GLOBAL_LIFT``; a ``colour`` probe's (a lead, `colour_lead`) against
    ``MIN_COLOUR_LIFT``; a region's against ``MIN_LIFT``), the place and family lifts, the
    collapse, a global probe's dose lift, and the significance ``-log10 p`` against
    ``-log10(ALPHA / n_tests)`` (Bonferroni over the ``n_tests`` tests). A rule that does
    not apply has value inf."""
    is_global = t.dose_lift != float("inf")  # a dose measured: a global probe
    lift_floor = max(MIN_GLOBAL_LIFT, MIN_LIFT) if is_global else MIN_LIFT
    return {
        "hits": (float(t.hits), float(MIN_HITS)),
        "lift": (t.lift, MIN_COLOUR_LIFT if colour and not t.area else lift_floor),
        "place lift": (t.place_lift, MIN_LIFT),
        "family lift": (t.family_lift, MIN_LIFT),
        "collapse": (t.collapse, MIN_COLLAPSE),
        "dose lift": (t.dose_lift, MIN_DOSE_LIFT),
        "significance": (-math.log10(max(t.p_value, 1e-300)), -math.log10(ALPHA / n_tests)),
    }


def standing(t: ProbeTest, n_tests: int, colour: bool = False) -> float:
    """How far ``t`` gets towards being a candidate (a ``colour`` probe's: a lead): the
    smallest ``value / floor`` over its rules (`rule_margins`); it passes them all at 1 or
    more."""
    return min(v / f for v, f in rule_margins(t, n_tests, colour).values())


def passes(t: ProbeTest, n_tests: int) -> bool:
    """Whether ``t`` passes every rule of `rule_margins`."""
    return all(v >= f for v, f in rule_margins(t, n_tests).values())


def shortfall(t: ProbeTest, n_tests: int, colour: bool = False) -> str:
    """The rules ``t`` fails, e.g. ``"place lift 2.42 < 2.5"`` (empty when it passes all)."""
    out = []
    for name, (v, f) in rule_margins(t, n_tests, colour).items():
        if v < f:
            out.append(
                f"p-value {t.p_value:.2g} > {ALPHA / n_tests:.2g}"
                if name == "significance"
                else f"{name} {v:.3g} < {f:.3g}"
            )
    return "; ".join(out)


def stronger(t: ProbeTest, u: ProbeTest | None, n_tests: int) -> ProbeTest:
    """Of a test counted on every hit ``t`` and the same (probe, class) counted on the rows
    only its region knocks out ``u`` (`stats.only_here_hits`; None where the region has no
    translates): ``u`` where it passes every rule and ``t`` does not, else ``t``. The second
    count makes candidates, never near misses (on the bundled sample's clean model it made
    one of a class's own objects, at 0.83 of every floor)."""
    if u is not None and passes(u, n_tests) and not passes(t, n_tests):
        return u
    return t


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
    colour: Collection[int] = (),
    by_labels: Callable[[ProbeTest], bool | None] | None = None,
) -> list[ProbeTest]:
    """The candidates among ``tests`` (module docstring), most significant first; ``enough``
    the transplant test of a region candidate (asked only of a test that would be taken;
    default: every test passes); a test that fails a rule, and a test of the ``colour``
    probes (`needs_labels`), is at most a lead (module docstring, `near_misses`), a candidate
    only where ``by_labels`` (None: the audit has no labels; `labels_verdict`) confirms it,
    or for a colour lead on part of its class (`colour_part`) does not disown it; leads and
    colour candidates after every other."""
    n_tests = n_tests or max(len(tests), 1)
    labelled = by_labels is not None

    def eligible(t: ProbeTest) -> bool:
        if not needs_labels(t, n_tests, colour, labelled):
            return True
        lead = colour_lead(t, n_tests) if t.probe in colour else standing(t, n_tests) >= NEAR_MISS
        if by_labels is None or not lead:
            return False
        said = by_labels(t)
        return said is True or (said is None and t.probe in colour and colour_part(t, n_tests))

    passing = [t for t in tests if eligible(t)]
    # a lead the labels confirm comes after every other candidate: the same finding shown by
    # a probe that passes every rule stands by itself and flags every row it knocks out; a
    # test counted on the rows only its region knocks out (`stronger`) after those counted
    # on every hit, whose p-values it would undercut (its place null is lower); one whose
    # lift passes only with fragile classes matched (`others`) after those that pass without
    passing.sort(
        key=lambda t: (
            needs_labels(t, n_tests, colour, labelled),
            t.probe in colour,
            t.plain_lift < MIN_LIFT,
            t.only_here,
            t.p_value,
            -min(t.lift, t.place_lift),
            t.probe,
        )
    )
    chosen: list[ProbeTest] = []
    for t in passing:
        if not _repeats(t, chosen, drop, pred) and (enough is None or enough(t)):
            chosen.append(t)
        if len(chosen) == MAX_CANDIDATES:
            break
    return chosen


def places(global_hits: np.ndarray, region_hits: np.ndarray, rest: np.ndarray) -> float:
    """The contrast with which a region places a global candidate (module docstring): the
    share of the candidate's hit rows ``global_hits`` (S,) that the rows the region lowers by
    ``COLLAPSE_DROP``, ``region_hits`` (S,), cover, over the share of the class's other rows
    ``rest`` (S,) they cover (smoothed); 0 where they cover less than ``MIN_COVER`` of it.

        cover = |R & G| / |G|,   contrast = cover / ((|R & O| + 1) / (|O| + 2))"""
    cover = np.sum(region_hits & global_hits) / max(int(global_hits.sum()), 1)
    if cover < MIN_COVER:
        return 0.0
    return float(cover / ((np.sum(region_hits & rest) + 1.0) / (rest.sum() + 2.0)))


def needs_labels(
    t: ProbeTest, n_tests: int, colour: Collection[int] = (), labelled: bool = True
) -> bool:
    """Whether ``t`` is a candidate only by its labels' word (`labels.labels_verdict`), and flags
    only the rows labelled another class: a test that fails a rule of `rule_margins`, or one
    of a ``colour`` probe — without labels (not ``labelled``) only where it is no colour lead
    on part of its class (`colour_part`)."""
    if t.probe in colour:
        return labelled or not colour_part(t, n_tests)
    return not passes(t, n_tests)


def colour_part(t: ProbeTest, n_tests: int) -> bool:
    """Whether ``t`` is a colour lead (`colour_lead`) on part of its class (at most
    ``MAX_COLOUR_RATE`` of it) or whose rows go back to many classes (`returns.goes_back`)."""
    return colour_lead(t, n_tests) and (t.rate <= MAX_COLOUR_RATE or goes_back(t.return_share))


def colour_lead(t: ProbeTest, n_tests: int) -> bool:
    """Whether the test ``t`` of a colour probe is a lead (module docstring): it passes every
    rule of `rule_margins`, its lift against ``MIN_COLOUR_LIFT`` (an area view's: a global
    probe's ``MIN_GLOBAL_LIFT``)."""
    return standing(t, n_tests, colour=True) >= 1.0


def near_misses(
    tests: list[ProbeTest],
    taken: Sequence[ProbeTest],
    drop: np.ndarray,
    pred: np.ndarray,
    n_tests: int | None = None,
    colour: Collection[int] = (),
) -> list[ProbeTest]:
    """The tests that are not ``taken`` (the candidates, before and after growing) but reach
    ``NEAR_MISS`` of every rule's floor (`standing`): a dependence the sample shows but does
    not establish, or a region the class needs that is not enough by itself (it passed every
    rule and failed the transplant test); those of the ``colour`` probes with the colour lift
    floor (`colour_lead`). Those that pass every rule first (most significant first), then the
    others by standing; one whose hit rows mostly repeat those of a candidate or of a near
    miss before it (`_repeats`) is the same finding; at most ``MAX_NEAR_MISSES``. Reported,
    never flagged."""
    n_tests = n_tests or max(len(tests), 1)

    def how_close(t: ProbeTest) -> float:
        return standing(t, n_tests, t.probe in colour)

    close = [t for t in tests if t not in taken and how_close(t) >= NEAR_MISS]
    close.sort(key=lambda t: (-min(how_close(t), 1.0), t.p_value, t.probe))
    out: list[ProbeTest] = []
    for t in close:
        if not _repeats(t, [*taken, *out], drop, pred):
            out.append(t)
        if len(out) == MAX_NEAR_MISSES:
            break
    return out


def widest_extent(
    found: list[ProbeTest],
    tests: list[ProbeTest],
    drop: np.ndarray,
    pred: np.ndarray,
    regions: RegionInfo,
    n_tests: int,
) -> list[ProbeTest]:
    """Each candidate replaced by its widest passing neighbour: the test of the same class
    whose region is of the same shape family (bands with bands, a pair of adjacent bands
    among them, `probes.adjacent_pairs`; columns with columns, ...),
    overlaps the candidate's, is at most ``MAX_EXTENT`` times its area, knocks out at least
    ``MAX_OVERLAP`` of the candidate's hit rows and more rows of the class in all, and still
    passes the place test (``place_lift`` and ``family_lift >= MIN_LIFT``, binomial p-value
    against the place null below ``ALPHA / n_tests``). A mark's extent varies from image to
    image (a watermark band at several heights): the candidate says *that* the class relies
    on something there, its widest passing neighbour how far it reaches. The
    class-vs-other-classes lift is not asked again — a wider region hides more of every
    class's objects, and the member pass only tests rows of the candidate's class."""
    a = np.asarray(regions.areas, np.float64)
    # a band grows among bands, wide ones and pairs; a region grown by the margin is no
    # neighbour (`margin_taken` judges it)
    shape = [None if str(f).endswith(GROWN) else str(f).split(" ")[0] for f in regions.families]
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
                or shape[j] is None
                or shape[j] != shape[t.probe]
                or not 0 < a[j] <= MAX_EXTENT * a[t.probe]
                or u.hits <= best.hits
                or np.sum(mine & hit[:, j]) < MAX_OVERLAP * mine.sum()
            ):
                continue
            if holds_place(u, n_tests):
                best = u
        if best not in out:  # two candidates may grow into the same region
            out.append(best)
    return out


def holds_place(u: ProbeTest, n_tests: int) -> bool:
    """Whether a region ``t`` may grow to, ``u``, still passes the place test: ``place_lift``
    and ``family_lift >= MIN_LIFT`` and the binomial p-value of its hits against the place
    null (the class's typical rate elsewhere) below ``ALPHA / n_tests``."""
    if min(u.place_lift, u.family_lift) < MIN_LIFT:
        return False
    typical = min(u.rate / u.place_lift, 1.0)
    return binomial_tail(u.hits, u.rows, typical) <= ALPHA / n_tests


def margin_taken(
    t: ProbeTest, g: ProbeTest, drop: np.ndarray, pred: np.ndarray, n_tests: int
) -> bool:
    """Whether a candidate ``t`` is replaced by ``g``, its region grown by the margin
    (`fastfem.kernels.occlusion.grown_region`): ``g`` knocks out at least ``MIN_HITS`` more
    rows of the class, among them ``MAX_OVERLAP`` of ``t``'s, and passes every rule itself
    (`passes`: its lift over the other classes, its place and family lifts over the grown
    translates, collapse, significance). A mark that straddles the edge of the family's
    grid is hidden whole by no region of it: the region it mostly lies in knocks out the rows
    whose mark it happens to cover, the grown one every row of the mark."""
    mine = (pred == t.cls) & (drop[:, t.probe] >= TAU)
    both = np.sum(mine & (drop[:, g.probe] >= TAU))
    return g.hits >= t.hits + MIN_HITS and both >= MAX_OVERLAP * mine.sum() and passes(g, n_tests)


def why_not(
    t: ProbeTest,
    n_tests: int,
    moved: dict[tuple[int, int], tuple[float, float]],
    kind: str | None = None,
    label_shares: dict[tuple[int, int], tuple[float, float]] | None = None,
) -> str:
    """A near miss's status: the rules it fails (`shortfall`), else its failed transplant
    test (``moved``: the shares asked, by (probe, class)), else that it was not tested; a
    property probe's (`fastfem.kernels.occlusion.PROPERTY_FILLS`; ``kind`` what it takes
    away, ``"a colour"`` or ``"a lighting"``, None for a region or another global probe) says
    that first, and its share of the class (`needs_labels`); each ends with its labels'
    evidence where ``label_shares`` holds it (`labels.label_evidence`)."""
    colour = kind is not None
    lacks = shortfall(t, n_tests, colour)
    if not lacks and (t.probe, t.cls) in moved and not sufficient(*moved[t.probe, t.cls]):
        a, b = moved[t.probe, t.cls]
        lacks = f"not enough: transplant {a:.2f} vs null {b:.2f}"
    if colour and not lacks and not colour_part(t, n_tests):
        lacks = f"knocks out {t.rate:.2f} of its class > {MAX_COLOUR_RATE}" + return_words(t)
    if colour:
        what = [f"{kind} (a mark's or the class's own)", *([lacks] if lacks else [])]
    else:
        what = [lacks or f"not tested ({MAX_CANDIDATES} candidates taken)"]
    share, rest = (label_shares or {}).get((t.probe, t.cls), (np.nan, np.nan))
    if share == share:  # the audit has labels
        what.append(
            f"labelled another class: {share:.2f} of its rows, {rest:.2f} of the class's others"
        )
    return "not confirmed: " + "; ".join(what)
