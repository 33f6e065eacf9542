"""The reliance test's second stage: which of the sweep's tests are candidates, which near
misses (`choose`), on the sample's drops, doses and labels (`Sweep`), and what the audit keeps
of each (`Candidate`). The rules are `rules`'; this module asks the model only for the
transplant test of a region about to be taken (`rules.sufficient`, one step per region).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from fastfem.audit.reliance.labels import label_evidence, labelled_other, labels_verdict
from fastfem.audit.reliance.probes import (
    Probe,
    adjacent_pairs,
    grown_family,
    narrow_regions,
    neighbour_probes,
    pair_drops,
    region_mirrors,
    region_overlaps,
)
from fastfem.audit.reliance.returns import return_share
from fastfem.audit.reliance.rules import (
    MAX_CANDIDATES,
    MAX_COLOUR_RATE,
    MAX_OVERLAP,
    MIN_LIFT,
    NEAR_MISS,
    colour_lead,
    margin_taken,
    near_misses,
    needs_labels,
    passes,
    places,
    select_candidates,
    standing,
    stronger,
    sufficient,
    why_not,
    widest_extent,
)
from fastfem.audit.reliance.stats import (
    COLLAPSE_DROP,
    TAU,
    ProbeTest,
    RegionInfo,
    hit_rows,
    only_here_hits,
    probe_tests,
    translates,
)
from fastfem.audit.reliance.thresholds import ROW_PLACE_LIFT, row_places
from fastfem.kernels.occlusion import (
    AREA_HUE_FILLS,
    GROWN_AXES,
    PROPERTY_FILLS,
    PROPERTY_KINDS,
    region_margin,
)

if TYPE_CHECKING:
    from fastfem.audit.reliance import ProbeRunner


#: The regions that place a global candidate asked the transplant test, largest contrast first
#: (`Sweep.place`: each costs two forwards per transplanted row).
MAX_PLACES_TRIED = 3


@dataclass
class Candidate:
    """A (probe, class) the sweep found, with its evidence: the hit rate of the class's sampled
    rows under each single fill, and the drops on the members (every row of the class) and
    on the non-members (the sample's rows of other classes)."""

    probe: Probe
    cls: int
    test: ProbeTest
    fill_effects: dict[str, float] = field(default_factory=dict)
    member_rows: int = 0
    member_mean_drop: float = 0.0
    member_hits: int = 0
    nonmember_rows: int = 0
    nonmember_mean_drop: float = 0.0
    nonmember_hits: int = 0
    #: a global probe's rows count only where it changed the image this much
    #: (`stats.dose_floor` of the sample at `thresholds.row_threshold`'s lift); 0 for regions
    dose_floor: float = 0.0
    #: a member row is flagged when its class's probability falls by this much
    #: (`thresholds.row_threshold`)
    row_tau: float = 0.5
    #: the transplant test (`rules.sufficient`): the share of the sample's rows of other
    #: classes the region moves to the class, copied from the class's hit rows and from
    #: other classes' rows; NaN for a global probe (not asked)
    transplant: float = float("nan")
    transplant_null: float = float("nan")
    #: with labels, a lead's evidence (`labels.label_evidence`): the share of the class's
    #: sampled hit rows labelled another class, and of its other rows (a grown lead's: at the
    #: region the labels confirmed); a candidate the labels confirm (`rules.needs_labels`)
    #: flags only rows labelled another class
    label_other: float = float("nan")
    label_other_rest: float = float("nan")
    by_labels: bool = False
    #: the peak probe's (`peaks`): the share of the sampled rows it would flag whose map lost
    #: a salient extra with the window hidden (`peaks.lost_extra`), and the same share among
    #: the rows it would not flag; NaN for every other probe
    lost_extra: float = float("nan")
    lost_extra_rest: float = float("nan")
    #: "confirmed" (tested on every row of the class), or for a near miss
    #: (`rules.near_misses`; not flagged) "not confirmed: " and what it lacks
    status: str = "confirmed"
    #: a global candidate's place, where the sample shows one (`Sweep.same_rows`): the region
    #: that knocks out most nearly the same sampled rows of the class, passing every rule,
    #: and the overlap of the two sets of rows (Jaccard); "" and NaN where none
    same_rows_region: str = ""
    same_rows_overlap: float = float("nan")
    #: a region that places a global candidate (`Sweep.place`): that candidate's probe name,
    #: tested beside it and flagging rows it lowers by ``stats.COLLAPSE_DROP``; "" otherwise
    places: str = ""
    #: a region whose flags over every row would not be clean, flagging only the rows these,
    #: its region moved by its own size each way, leave standing (`Sweep.neighbours`)
    neighbours: list[Probe] = field(default_factory=list)
    #: member rows it knocked out that one of its ``neighbours`` knocked out too: not flagged
    #: (the class's own objects the region hides)
    member_spared: int = 0

    @property
    def beside(self) -> str:
        """The summary line's words for its ``neighbours`` ("" where it has none)."""
        n = len(self.neighbours)
        if n == 0:
            return ""
        return ", not on the region beside it" if n == 1 else f", not on the {n} regions beside it"

    def set_nonmembers(self, pred: np.ndarray, drop: np.ndarray) -> None:
        """The evidence on the non-members: the sample's rows of other classes (``pred`` (S,)
        the sample's predictions, ``drop`` (S,) its probe's drops), their count, hits (its
        test's) and mean drop."""
        other = pred != self.cls
        self.nonmember_rows = int(other.sum())
        self.nonmember_hits = self.test.other_hits
        self.nonmember_mean_drop = float(np.mean(drop[other])) if other.any() else 0.0


@dataclass
class Sweep:
    """The sweep of the sample ``x``: its ``probes``, the rows' predictions ``pred`` (S,), drops
    ``drop`` and doses ``dose`` (S, P); then the probes as regions, every (probe, class) test
    and the transplant tests asked (``moved``, by (probe, class)); ``colour`` the colour probes
    (`rules.needs_labels`); ``flaggable`` the rows a lead the labels confirm may flag.
    The adjacent pairs of bands and columns (`probes.adjacent_pairs`, their drops from their
    parts', no forward) are appended to ``probes``, ``drop`` and ``dose``: ``tests`` holds
    the tests of the swept probes (candidates, near misses, Bonferroni's count), ``extents``
    those of every probe, pairs included (what a candidate may grow to).
    ``sweep_more`` runs more probes on the same sample (their (S, Q) drops, doses and top
    classes, `measure_returns`): the
    families a candidate's region grows in by the margin (`margin`; None: no margin), appended
    to ``probes``, ``drop``, ``dose`` and ``extents`` like the pairs (``margin_of``: each grown
    probe by the probe it grew from)."""

    runner: ProbeRunner
    x: np.ndarray
    probes: list[Probe]
    pred: np.ndarray
    drop: np.ndarray
    dose: np.ndarray
    moved: dict[tuple[int, int], tuple[float, float]] = field(default_factory=dict)
    labels: np.ndarray | None = None
    label_shares: dict[tuple[int, int], tuple[float, float]] = field(default_factory=dict)
    sweep_more: Callable[[list[Probe]], tuple[np.ndarray, ...]] | None = None

    def __post_init__(self) -> None:
        self.swept = len(self.probes)
        classes = np.unique(self.pred)
        self.n_tests = self.swept * max(len(classes), 1)
        self.margin_of: dict[int, int] = {}
        pairs = adjacent_pairs(self.probes)
        self.append(
            [q for q, _, _ in pairs], pair_drops(self.drop, pairs), pair_drops(self.dose, pairs)
        )
        self.tests = [t for t in self.extents if t.probe < self.swept]
        unlabelled = np.full(len(self.pred), -1)
        #: `labels.labelled_other` of the sample (all -1 without labels)
        self.flaggable = labelled_other(
            self.pred, unlabelled if self.labels is None else self.labels
        )

    def append(self, probes: Sequence[Probe], drop: np.ndarray, dose: np.ndarray) -> None:
        """Append ``probes`` (not swept by themselves: pairs, grown regions; never counted in
        ``tests`` or the Bonferroni count) with their (S, Q) ``drop`` and ``dose``, and count
        every test again (``extents``); the swept probes' tests come out as they were, since
        the appended ones are derived (`stats.translates`: compared with nothing outside their
        family, and nothing outside it with them)."""
        self.probes = [*self.probes, *probes]
        self.drop = np.concatenate([self.drop, drop], axis=1)
        self.dose = np.concatenate([self.dose, dose], axis=1)
        p = self.probes
        self.regions = RegionInfo(
            [0.0 if q.region.kind == "image" else float(q.region.mask.mean()) for q in p],
            [q.region.kind for q in p],
            region_overlaps(p),
            region_mirrors(p),
            [k >= self.swept for k in range(len(p))],
        )
        self.colour = {k for k, q in enumerate(p) if q.fills[0] in PROPERTY_FILLS}
        self.area = {k for k, q in enumerate(p) if q.fills[0] in AREA_HUE_FILLS}
        self.narrow = narrow_regions(p)  # the probes also counted where only they knock out
        compare = translates(*self.regions[:3], self.regions.derived)
        families = np.asarray(self.regions.families, object)
        here = only_here_hits(self.drop >= TAU, compare, families, self.narrow)
        #: the drops counted where only the probe's region knocks a row out (0 elsewhere)
        self.here_drop = np.where(here, self.drop, 0.0)
        self.extents = self.counted(self.pred, np.unique(self.pred))

    def both_counts(
        self, drop: np.ndarray, pred: np.ndarray, classes: np.ndarray
    ) -> tuple[list[ProbeTest], list[ProbeTest]]:
        """Every (probe, class) test of the rows predicted ``pred`` on the drops ``drop``
        (S, P), counted on every hit and on the rows only its region knocks out
        (`stats.probe_tests`' ``only_here``, for the regions of `probes.narrow_regions`)."""
        every, here = (
            [
                replace(t, area=True) if t.probe in self.area else t
                for t in probe_tests(drop, pred, classes, *self.regions, self.dose, only_here=only)
            ]
            for only in (None, self.narrow)
        )
        return every, here

    def counted(self, pred: np.ndarray, classes: np.ndarray) -> list[ProbeTest]:
        """Every (probe, class) test of the rows predicted ``pred``, each the stronger
        (`rules.stronger`) of its two counts (`both_counts`)."""
        tests, here = self.both_counts(self.drop, pred, classes)
        by_key = {(u.probe, u.cls): u for u in here}
        return [stronger(t, by_key.get((t.probe, t.cls)), self.n_tests) for t in tests]

    def enough(self, t: ProbeTest) -> bool:
        """The transplant test of ``t``'s region (`rules.sufficient`; recorded in ``moved``);
        a global probe has no region to copy and passes."""
        if self.probes[t.probe].region.kind == "image":
            return True
        hit = self.drop[:, t.probe] >= TAU
        got = self.runner.transplant(self.x, self.pred, hit, self.probes[t.probe], t.cls)
        self.moved[t.probe, t.cls] = got
        return sufficient(*got)

    def lead_extent(self, t: ProbeTest) -> ProbeTest:
        """The lead ``t`` grown (`rules.widest_extent`) on the rows it may flag, those
        labelled another class (`labels.labelled_other`): the test over every row of the
        region it grows to, ``t`` itself where it does not grow."""
        tests = self.counted(self.flaggable, np.asarray([t.cls]))
        mine = next((u for u in tests if u.probe == t.probe), None)
        if mine is None:  # no row of the class is labelled another class
            return t
        wide = widest_extent([mine], tests, self.drop, self.flaggable, self.regions, self.n_tests)
        if wide[0].probe == t.probe:
            return t
        return next(u for u in self.extents if (u.probe, u.cls) == (wide[0].probe, t.cls))

    def margin(self, t: ProbeTest) -> ProbeTest:
        """The candidate ``t`` grown by the margin (`occlusion.grown_region`, by
        `occlusion.region_margin` px, of a band, a column or a cell) where `rules.margin_taken`
        takes it and the transplant test passes (`enough`), else ``t``. The first candidate of
        a family sweeps the family grown (`probes.grown_family`: one forward per member per
        sampled row, ``sweep_more``), so that the grown region has translates and mirror
        images to be compared with."""
        region = self.probes[t.probe].region
        if self.sweep_more is None or region.kind not in GROWN_AXES:  # pairs, grown: others
            return t
        if t.probe not in self.margin_of:
            family = grown_family(
                self.probes[: self.swept], region.kind, region_margin(*region.mask.shape)
            )
            drop, dose, _ = self.sweep_more([q for q, _ in family])
            start = len(self.probes)
            self.margin_of.update({k: start + i for i, (_, k) in enumerate(family)})
            self.append([q for q, _ in family], drop, dose)
        g = next(u for u in self.extents if (u.probe, u.cls) == (self.margin_of[t.probe], t.cls))
        taken = margin_taken(t, g, self.drop, self.pred, self.n_tests)
        return g if taken and self.enough(g) else t

    def grown(self, wide: ProbeTest, t: ProbeTest) -> ProbeTest:
        """``wide``, the region ``t`` grew to, where it passes the transplant test (`enough`),
        else ``t``."""
        return wide if wide is t or self.enough(wide) else t

    def measure_returns(self) -> None:
        """Where the rows go of each colour lead on most of its class (more than
        ``rules.MAX_COLOUR_RATE`` of it): its probe run on the sample again (one forward per
        row, once per probe), each test's ``return_share`` (`returns.return_share`) of its hit
        rows set in ``tests`` and ``extents``."""
        if self.sweep_more is None:
            return
        tops: dict[int, np.ndarray] = {}  # a probe's top classes, by probe
        for k, t in enumerate(self.extents):
            if t.probe in self.colour and t.rate > MAX_COLOUR_RATE and colour_lead(t, self.n_tests):
                if t.probe not in tops:
                    tops[t.probe] = self.sweep_more([self.probes[t.probe]])[2][:, 0]
                hit = hit_rows(t, self.drop, self.pred, self.dose)
                share = return_share(tops[t.probe], hit, t.cls)
                self.extents[k] = replace(t, return_share=share)
        self.tests = [t for t in self.extents if t.probe < self.swept]

    def clean(self, t: ProbeTest) -> bool:
        """Whether ``t``'s flags over every row of its class are clean: its row threshold
        (`thresholds.row_threshold`) reaches a place lift of ``thresholds.ROW_PLACE_LIFT``
        (at most 1 flag in 10 expected from the class's objects the region hides)."""
        place = row_places(t, self.drop, self.pred, self.regions, self.dose)
        return max(place.values()) >= ROW_PLACE_LIFT

    def neighbours(self, t: ProbeTest) -> list[Probe]:
        """For a region candidate ``t`` whose flags over every row of its class would not be
        clean (`clean`): its region moved by its own size each way (`probes.neighbour_probes`),
        where the rows none of them knocks out (swept on the sample: one forward per
        neighbour per row) still stand at ``rules.NEAR_MISS`` of every rule's floor
        (`rules.standing`, either count of `both_counts`). The member pass flags only
        the rows none of them knocks out: a row that relies on what lies in the region alone
        is knocked out by it and by none of its neighbours, and the class's own objects, larger
        than the gap, lie under a neighbour too (measured: the digits check's grey line, whose
        8 px band over the digits' middle knocked out 67 of class 7's 80 sampled rows, 46 of
        them marked; the bands above and below it left 49 standing, the 46 marked and 3
        others). [] for any other candidate: a global probe, the peak probe, a clean one."""
        probe = self.probes[t.probe]
        if probe.region.kind == "image" or self.sweep_more is None or self.clean(t):
            return []
        near = neighbour_probes(probe)
        if not near:
            return []
        drop, *_ = self.sweep_more(near)
        alone = ~(drop >= TAU).any(axis=1)
        kept = self.drop.copy()
        kept[:, t.probe] = np.where(alone, kept[:, t.probe], 0.0)
        counts = self.both_counts(kept, self.pred, np.asarray([t.cls]))
        best = max(standing(u, self.n_tests) for c in counts for u in c if u.probe == t.probe)
        return near if best >= NEAR_MISS else []

    def same_rows(self, t: ProbeTest) -> tuple[str, float] | None:
        """For a global candidate ``t`` (a blur, a median, a colour taken away from the whole
        image), the swept region of its class that knocks out most nearly the same sampled
        rows — Jaccard overlap ``|A & B| / |A | B|`` of the two sets of hit rows at least
        ``rules.MAX_OVERLAP`` — among those that pass every rule themselves (`rules.passes`):
        where in the image what the probe takes away lies (a 1 px line a median removes,
        the band that holds it). None for a region, or where no region does. Evidence for the
        report; it changes no flag."""
        if self.probes[t.probe].region.kind != "image":
            return None
        own = self.pred == t.cls
        mine = own & (self.drop[:, t.probe] >= TAU)
        best: tuple[str, float] | None = None
        for u in self.tests:
            if u.cls != t.cls or self.probes[u.probe].region.kind == "image":
                continue
            theirs = own & (self.drop[:, u.probe] >= TAU)
            overlap = np.sum(mine & theirs) / max(np.sum(mine | theirs), 1)
            better = overlap >= MAX_OVERLAP and (best is None or overlap > best[1])
            if better and passes(u, self.n_tests):
                best = (self.probes[u.probe].region.name, float(overlap))
        return best

    def place(self, t: ProbeTest, lead: bool = False) -> ProbeTest | None:
        """For a global candidate ``t``, the swept region of its class that places it
        (`rules.places`: the rows it lowers by ``COLLAPSE_DROP`` against ``t``'s hit rows and
        the class's other rows; for a ``lead`` the labels confirmed, its hit rows among those
        it may flag, `flaggable`, against the class's rows labelled the class) with the
        largest contrast, at least ``rules.MIN_LIFT`` (ties: the smallest region), that
        passes the transplant test (`enough`); None for a region, or where none does."""
        if self.probes[t.probe].region.kind != "image":
            return None
        mine = self.pred == t.cls
        may = mine & (self.flaggable == t.cls) if lead else mine
        hit = may & hit_rows(t, self.drop, self.pred, self.dose)
        rest = mine & (self.labels == t.cls) if lead else mine & ~hit
        scored = []
        for u in self.tests:
            if u.cls == t.cls and self.probes[u.probe].region.kind != "image":
                contrast = places(hit, self.drop[:, u.probe] >= COLLAPSE_DROP, rest)
                if contrast >= MIN_LIFT:  # ties: the smallest region, the most specific
                    scored.append((-contrast, self.regions.areas[u.probe], u.probe, u))
        for *_, u in sorted(scored, key=lambda s: s[:3])[:MAX_PLACES_TRIED]:
            if self.enough(u):
                return u
        return None

    def by_labels(self, t: ProbeTest) -> bool | None:
        """The labels' word on the lead ``t`` (`labels.labels_verdict`: True where they
        confirm it, False where they disown it, None where they say nothing; the shares
        recorded in ``label_shares``); False without labels. A test counted on the rows only
        its region knocks out is asked on those rows, then, as a lead is, on every row its
        region knocks out (the shares recorded: those that confirm it, else its own rows').
        Asked once per test: again, the recorded shares answer."""
        if self.labels is None:
            return False
        if (t.probe, t.cls) in self.label_shares:
            return labels_verdict(*self.label_shares[t.probe, t.cls])
        dose = self.dose if self.probes[t.probe].region.kind == "image" else None
        shares = [
            label_evidence(t, drop, dose, self.pred, self.labels)
            for drop in ([self.here_drop, self.drop] if t.only_here else [self.drop])
        ]
        got = next((s for s in shares if labels_verdict(*s)), shares[0])
        self.label_shares[t.probe, t.cls] = got
        return labels_verdict(*got)


def choose(sw: Sweep) -> tuple[list[Candidate], list[Candidate]]:
    """Stage 2 (module docstring): the candidates, each grown to its widest passing
    neighbour, and the near misses (their transplant test asked: evidence), both with the
    evidence the sample gives (the non-members: the sample's rows of other classes)."""
    sw.measure_returns()
    tests, pred, n_tests = sw.tests, sw.pred, sw.n_tests  # sw.drop grows with the margins
    found: list[ProbeTest] = []
    labelled = sw.labels is not None
    asked = sw.by_labels if labelled else None
    taken = select_candidates(tests, sw.drop, pred, n_tests, sw.enough, sw.colour, asked)
    # flag only rows labelled another class: (probe, class) -> the lead the labels confirmed
    on_labels: dict[tuple[int, int], tuple[int, int]] = {}
    for t in taken:
        # a colour lead on part of its class the labels say nothing of flags every row
        lead = needs_labels(t, n_tests, sw.colour, labelled) and sw.by_labels(t) is True
        if not lead:
            wide = sw.grown(
                widest_extent([t], sw.extents, sw.drop, pred, sw.regions, n_tests)[0], t
            )
            # counted on the rows only its region knocks out, a candidate still flags every
            # row the region knocks out, the class's own objects it hides included: with
            # labels that confirm it, only those labelled another class, unless its flags
            # on every row are clean (`Sweep.clean`: the objects' share bounded as a row
            # threshold bounds it, the labels would take away rows of the mark alone)
            lead = t.only_here and sw.by_labels(t) is True and not sw.clean(wide)
        # a lead grows on the rows it may flag; a candidate also by a margin (a mark that
        # straddles the edge of its family's grid)
        wide = sw.grown(sw.lead_extent(t), t) if lead else sw.margin(wide)
        if wide not in found:  # two candidates may grow into the same region
            found.append(wide)
            if lead:
                on_labels[wide.probe, wide.cls] = (t.probe, t.cls)
    # a region that places a global candidate (`Sweep.place`) is tested beside it
    placed: list[tuple[ProbeTest, ProbeTest]] = []  # (region, the global candidate)
    for t in found:
        tested = [*found, *(v for v, _ in placed)]  # one region may place two
        if len(tested) >= MAX_CANDIDATES:  # no room: no transplant test run for nothing
            break
        lead = on_labels.get((t.probe, t.cls))
        u = sw.place(t, lead is not None)
        if u is not None and u not in tested:
            placed.append((u, t))
            if lead:
                on_labels[u.probe, u.cls] = lead
    regions = [u for u, _ in placed]
    near = near_misses(tests, [*taken, *found, *regions], sw.drop, pred, n_tests, sw.colour)
    for t in near:  # near misses are few: is the region enough by itself? the labels?
        if (t.probe, t.cls) not in sw.moved:
            sw.enough(t)
        sw.by_labels(t)
    cands = [Candidate(sw.probes[t.probe], t.cls, t) for t in found] + [
        Candidate(sw.probes[u.probe], u.cls, u, places=sw.probes[t.probe].name) for u, t in placed
    ]
    misses = [
        Candidate(
            sw.probes[t.probe],
            t.cls,
            t,
            status=why_not(
                t,
                n_tests,
                sw.moved,
                PROPERTY_KINDS.get(sw.probes[t.probe].fills[0]),  # None: no property probe
                sw.label_shares,
            ),
        )
        for t in near
    ]
    for c in cands:
        c.same_rows_region, c.same_rows_overlap = sw.same_rows(c.test) or ("", np.nan)
        if (c.test.probe, c.cls) not in on_labels:  # the labels keep the class's own rows out
            c.neighbours = sw.neighbours(c.test)
    for c in [*cands, *misses]:
        c.transplant, c.transplant_null = sw.moved.get((c.test.probe, c.cls), (np.nan, np.nan))
        c.by_labels = c.status == "confirmed" and (c.test.probe, c.cls) in on_labels
        if c.by_labels or c.status != "confirmed":  # a candidate's only where they confirm it
            key = on_labels.get((c.test.probe, c.cls), (c.test.probe, c.cls))
            got = sw.label_shares.get(key, (np.nan, np.nan))  # a grown lead's: before it grew
            c.label_other, c.label_other_rest = got
        c.set_nonmembers(pred, sw.drop[:, c.test.probe])
    return cands, misses
