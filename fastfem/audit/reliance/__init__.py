"""The reliance test: which regions of the images does the model *rely on* for one class?

Maps show where a model looks; a shortcut is what it decides by. This test asks the model
itself, by occlusion (`fastfem.kernels.occlusion`), after the audit's pass:

1. **Sweep** (a sample): committed rows stratified by predicted class (by default `sample_size`:
   ``PER_CLASS`` rows per class, 320 to 2048 in all) are read again from the source and run
   under every probe of a fixed, map-free family — bands, columns, cells, border rings, the
   centre (each inpainted from its surroundings; `probes`) and the whole image under the global
   fills (low-pass, colour moments, 3x3 median, grey-world balance, six hues turned grey, each
   by its vivid marks and by its area; a colour fill a candidate where it knocks out part of its
   class only and the labels, given, do not disown it, or where they confirm it: `rules`,
   `labels`) — plus the hot spots of the map detectors' candidate clusters (maps propose,
   occlusion tests). One forward pass per probe per sampled row, in one jitted step (`step`).
   One more probe hides each row's own map peak (`peaks`: a mark at a random place; a candidate
   where hiding it takes away what dominated the maps, or where the labels confirm it).
2. **Candidates** (`stats`, `rules`): a (probe, class) whose occlusion knocks out the predictions of
   that class far more often than of the others (exact binomial test, Bonferroni-corrected,
   lift and hit-count floors; a global probe by the rows it changes most), grown to its widest
   passing neighbour of the same shape (among them a pair of adjacent bands hidden one at a
   time, `probes.adjacent_pairs`: a mark whose place varies; with labels, a test close to
   every rule too, where the rows it knocks out are mostly labelled another class: it grows,
   and flags, on the class's rows labelled another class; `choice`), and a band, column or
   cell by a margin where its mark straddles the grid (`choice.Sweep.margin`: its family
   swept again, grown by H/16; `rules.margin_taken`). A region must also be
   *enough* for the class: copied from the class's sampled rows it knocks out into the
   sample's rows of other classes, it must move them to the class far more often than the
   same region copied from other classes' rows does (the transplant test,
   `rules.sufficient`; one step, `transplant`). Each candidate region is then tried with
   every region fill (mean, blur, noise) on the sample, each fill's hit rate kept as evidence
   (`fill_effects`; the candidate keeps its own fill). The *near misses*
   (`rules.near_misses`: close to every rule, or needed but not enough) are reported beside
   them with their transplant test (regions), never flagged. A global candidate is *placed*
   by a region of its class that lowers by 0.5 most of the rows it knocks out and few of the
   class's others, and is enough (`choice.Sweep.place`, `rules.places`): a stamp whose
   colour a hue probe takes away, which the region hides whole; that region is tested
   beside it, flagging at 0.5.
3. **Every row** (streaming; `members`): each row predicted a candidate's class is read again
   and run under that candidate's probe (one forward per candidate, two for a pair; the
   unprobed prediction and confidence are the audit's, from the store); a row whose
   predicted class's probability falls by at least the candidate's ``row_tau``
   (`thresholds.row_threshold`: 0.5, 0.35 or 0.25, the lowest at which the class's own objects
   would give at most 1 flag in 10; a region without translates may go lower, where the
   flags' expected F1 is higher) is flagged ``relies on <region> (<fill>)``, score
   ``drop / row_tau``; a region whose flags over every row would not be that clean, but
   which stands on the sampled rows its neighbours (the region moved by its own size each
   way) leave standing, is also run under them and flags only those rows
   (`choice.Sweep.neighbours`: up to four more forwards per row). A row less confident
   than a candidate's ``row_tau`` cannot fall by it, and a global candidate counts a row only
   where its probe changed it by at least its dose floor: the rows no candidate of their
   class counts are screened out first, with no forward (`members.screen`; the doses by a
   step that runs no model). The evidence —
   region, fill, the output change on members (rows of the class) and on non-members (the
   sample's other rows), rates, lift, p-value — goes to ``DIR/reliance.parquet`` (`table`)
   and the report.

Memory is bounded by the sample (kept as one host array) and one batch; the member pass streams.
Models without a classifier output (FAM similarity models) and sources that cannot be read
again (a one-shot iterable) skip the test, with the reason in the result.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fastfem.audit.batches import RecordBatcher
from fastfem.audit.detectors.summary import label_classes
from fastfem.audit.reliance.choice import Candidate, Sweep, choose
from fastfem.audit.reliance.members import member_pass
from fastfem.audit.reliance.peaks import PeakRows, has_peaks, peak_candidates, row_peaks
from fastfem.audit.reliance.probes import (
    HIDE_FILLS,
    PEAK_FRACTION,
    Probe,
    peak_probe,
    peak_side,
    probe_drops,
    probe_params,
    sweep_probes,
)
from fastfem.audit.reliance.rules import MAX_CANDIDATES, TRANSPLANT_ROWS
from fastfem.audit.reliance.stats import COLLAPSE_DROP, TAU, dose_floor
from fastfem.audit.reliance.step import (
    ProbeParams,
    make_dose_step,
    make_peak_step,
    make_probe_step,
    make_transplant_step,
    peak_windows,
)
from fastfem.audit.reliance.thresholds import row_threshold
from fastfem.engine.cache import cached_step
from fastfem.engine.step import Step
from fastfem.kernels.occlusion import (
    PROPERTY_FILLS,
    REGION_FILLS,
    FillParams,
    Region,
    fill_params,
    fine_detail,
    lowpass_matrices,
)

#: Rows of the sweep (stratified by predicted class); None: `sample_size` of the classes.
SAMPLE: int | None = None
#: The default sweep's rows per predicted class. Replayed on the shortcut benchmark's stored
#: sweeps (80 rows per class), 32 or 48 rows per class instead make the candidates of 5 of
#: its 13 detected kinds come and go with the draw; 80 keep all of them.
PER_CLASS = 80
MIN_SAMPLE, MAX_SAMPLE = 320, 2048  # the default sweep's bounds (a cost of one forward per probe)


@dataclass
class RelianceResult:
    """The reliance test's outcome: ``candidates`` and the flagged rows (``ids``, ``drop``,
    ``candidate`` index), the ``near_misses`` (`rules.near_misses`: reported, not flagged),
    or ``skipped`` (why the test did not run)."""

    candidates: list[Candidate] = field(default_factory=list)
    near_misses: list[Candidate] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    drop: list[float] = field(default_factory=list)
    candidate: list[int] = field(default_factory=list)
    sampled: int = 0
    read_for_leads: int = 0  # more rows read again to count the peak probe's leads
    tested: int = 0  # rows of the candidates' classes read by the member pass
    forwarded: int = 0  # of those, the rows run under their probes (the rest: `screen`)
    probes: int = 0
    skipped: str = ""
    classes: int = 0  # predicted classes in the sweep's sample
    thin: int = 0  # of those, sampled with fewer than PER_CLASS rows (`thin_classes`)


def sample_size(n_classes: int) -> int:
    """The default sweep's rows for ``n_classes`` predicted classes: ``PER_CLASS`` each, at
    least ``MIN_SAMPLE`` and at most ``MAX_SAMPLE`` in all."""
    return int(min(max(MIN_SAMPLE, PER_CLASS * n_classes), MAX_SAMPLE))


def reliance_settings(sample: int | None) -> dict[str, float | int | str]:
    """The reliance test's settings by name (recorded in the manifest)."""
    from fastfem.audit.reliance import labels, peaks, rules, stats, thresholds

    auto = f"auto ({PER_CLASS} per class, {MIN_SAMPLE} to {MAX_SAMPLE})"
    return {
        "reliance_sample": auto if sample is None else sample,
        "reliance_fill": "+".join(HIDE_FILLS),
        "reliance_tau": stats.TAU,
        "reliance_row_taus": "/".join(f"{t:g}" for t in thresholds.ROW_TAUS),
        "reliance_row_place_lift": thresholds.ROW_PLACE_LIFT,
        "reliance_row_dose_lifts": "/".join(f"{v:g}" for v in thresholds.ROW_DOSE_LIFTS),
        "reliance_min_hits": stats.MIN_HITS,
        "reliance_min_lift": rules.MIN_LIFT,
        "reliance_min_colour_lift": rules.MIN_COLOUR_LIFT,
        "reliance_min_global_lift": rules.MIN_GLOBAL_LIFT,
        "reliance_min_collapse": f"{rules.MIN_COLLAPSE:.3g} at {stats.COLLAPSE_DROP:g}",
        "reliance_min_transplant": f"+{rules.MIN_TRANSPLANT:g} and {rules.MIN_TRANSPLANT_LIFT:g}x",
        "reliance_alpha": rules.ALPHA,
        "reliance_max_candidates": rules.MAX_CANDIDATES,
        "reliance_near_miss": (
            f"{rules.NEAR_MISS:g} of every floor, at most {rules.MAX_NEAR_MISSES}"
        ),
        "reliance_colour_leads": "+".join(PROPERTY_FILLS)
        + f" (candidates where they knock out at most {rules.MAX_COLOUR_RATE:g} of their class"
        " and the labels, given, do not disown them, or where the labels confirm them; else"
        " leads)",
        "reliance_peak": (
            f"each row's map peak, a window of {PEAK_FRACTION:g} of the side; a candidate where"
            f" {peaks.MIN_EXTRA:g} of its knocked-out rows lose a salient extra (peak contrast"
            f" down {peaks.CONTRAST_FALL:g}x to >= {peaks.ORDINARY:g}x the sample's median;"
            " significantly more often than the other rows; for a class with no other"
            " candidate) or where the labels confirm it; a lead"
            f" (p <= {peaks.LEAD_ALPHA:g}) counted again on up to {peaks.MORE_ROWS}x its"
            " sampled rows"
        ),
        "reliance_label_other": (
            f"{labels.MIN_LABEL_OTHER:g} of the hit rows and {labels.LABEL_OTHER_LIFT:g}x the "
            "class's others labelled another class"
        ),
    }


def thin_classes(sampled: np.ndarray, every: np.ndarray) -> int:
    """How many predicted classes the sweep sampled with fewer than ``PER_CLASS`` rows while
    the store holds more of them: ``sampled`` the sample's predicted classes, ``every`` those
    of every readable row. A capped sample spread over many classes (``MAX_SAMPLE`` over 26
    or more) or a small ``sample`` leaves a class too few rows for its hits to pass the
    binomial test, so its shortcut may go unseen; a class the model rarely predicts is
    sampled whole, and a larger sample would not add to it."""
    classes, counts = np.unique(sampled, return_counts=True)
    every_classes, every_counts = np.unique(every, return_counts=True)
    held = every_counts[np.searchsorted(every_classes, classes)]
    return int(np.sum((counts < PER_CLASS) & (counts < held)))


def stratified_sample(pred: np.ndarray, size: int) -> np.ndarray:
    """Indices of at most ``size`` rows, the same number per predicted class where the class
    has enough rows (`evenly_spaced` within each class, so deterministic), sorted."""
    classes = np.unique(pred)
    if len(classes) == 0:
        return np.zeros((0,), np.int64)
    per = max(1, size // len(classes))
    out = []
    for c in classes:
        rows = np.flatnonzero(pred == c)
        out.append(rows[evenly_spaced(len(rows), per)])
    return np.unique(np.concatenate(out))


def evenly_spaced(n: int, take: int) -> np.ndarray:
    """Indices of ``min(take, n)`` of ``n`` rows, evenly spaced from the first to the last."""
    if n == 0 or take <= 0:
        return np.zeros((0,), np.int64)
    return np.unique(np.linspace(0, n - 1, min(take, n)).round().astype(np.int64))


def read_again(
    runner: ProbeRunner, ids: np.ndarray, stored: np.ndarray
) -> tuple[np.ndarray | None, np.ndarray]:
    """The images of the stored rows ``stored`` (indices into the store's ``ids``) read again
    from the source, as one host array, and the stored rows in their read order; ``None``
    for the images where some could not be read (the rows read are still returned)."""
    row_of = {str(ids[i]): i for i in stored}
    kept = list(runner.read(set(row_of)))
    at = np.asarray([row_of[i] for batch_ids, _ in kept for i in batch_ids], np.int64)
    if len(at) < len(row_of) or not kept:
        return None, at
    return np.concatenate([b["x"] for _, b in kept]), at


class ProbeRunner:
    """The probe step of one audit plan: its batches read back from the source by id."""

    def __init__(self, plan: Any):
        self.plan = plan
        ex = plan.extractor
        self.fn = cached_step(ex.apply, ("reliance",), lambda: make_probe_step(ex))
        self.transplant_fn = cached_step(
            ex.apply, ("reliance", "transplant"), lambda: make_transplant_step(ex)
        )
        self.dose_fn = cached_step(ex.apply, ("reliance", "dose"), make_dose_step)

    def read(self, ids: set[str]) -> Iterator[tuple[list[str], dict[str, np.ndarray]]]:
        """Host batches of the rows ``ids`` (in source order) with their ids."""
        batcher = RecordBatcher(self.plan.explainer.device_batch())
        records = self.plan.source.read(lambda i, rid: rid in ids)
        for batch in batcher.batches(records):
            yield [r.id for r in batcher.pending.popleft()], batch

    def run(
        self, batches: Iterable[dict[str, np.ndarray]], probes: ProbeParams, size: int | None = None
    ) -> Iterator[dict[str, np.ndarray]]:
        """The probe step's outputs, batch by batch (``size``: host batches of at most that
        many rows run at that device batch; default the full one)."""
        step = Step(self.fn, (self.plan.extractor.params, probes))
        return self.plan.explainer.run(step, batches, size)

    def transplant(
        self,
        x: np.ndarray,
        pred: np.ndarray,
        hit: np.ndarray,
        probe: Probe,
        cls: int,
        windows: np.ndarray | None = None,
    ) -> tuple[float, float]:
        """``(transplant, transplant_null)`` of `rules.sufficient` for ``probe``'s region and class
        ``cls`` on the sample ``x`` (its predictions ``pred``; ``hit`` its rows the probe knocks
        out): the share of at most ``TRANSPLANT_ROWS`` rows of other classes (evenly spaced) whose
        class-``cls`` probability rises by ``COLLAPSE_DROP`` or whose prediction turns to ``cls``
        with the region pasted from the class's hit rows (each recipient the next donor in turn),
        and with it pasted from the next of those recipients. ``windows`` (S, H, W): each row's
        own region (its peak window), the donor's pasted where it lies in the donor."""
        donors = np.flatnonzero((pred == cls) & hit)
        others = np.flatnonzero(pred != cls)
        if len(donors) == 0 or len(others) < 2:
            return 0.0, 0.0
        take = min(len(others), TRANSPLANT_ROWS)
        rec = others[np.linspace(0, len(others) - 1, take).round().astype(np.int64)]
        real = donors[np.arange(take) % len(donors)]
        null = np.roll(rec, -1)
        batch = {"x": np.concatenate([x[rec], x[rec]]), "donor": np.concatenate([x[real], x[null]])}
        if windows is not None:
            batch["mask"] = np.concatenate([windows[real], windows[null]]).astype(np.float32)
        params = (self.plan.extractor.params, (jnp.asarray(probe.region.mask), jnp.int32(cls)))
        half = max(1, self.plan.explainer.device_batch() // 2)  # the step runs 2 x its batch
        step = Step(self.transplant_fn, params)
        outs = list(self.plan.explainer.run(step, [batch], half))
        moved = (_concat(outs, "rise") >= COLLAPSE_DROP) | _concat(outs, "turned").astype(bool)
        return float(np.mean(moved[:take])), float(np.mean(moved[take:]))

    def follow(self, x: np.ndarray, peaks: np.ndarray, fills: Any) -> tuple[np.ndarray, ...]:
        """``(pred, drop, contrast, contrast_hidden)``, each (S,), of the probe that follows
        each row's map peak on the images ``x`` with their ``peaks`` (S, 2): the peak step
        (`step.make_peak_step`) through the audit's own map step, at half the device batch
        (two forwards a row). A method that explains pairs (FAM: each image against its class
        prototype) has no map of an image alone: its rows get the drops only (one forward a
        row), their contrasts NaN (no row loses a salient extra: `peaks.lost_extra`)."""
        plan = self.plan
        if plan.explainer.explains_pairs:
            pred, drop = sweep(self, x, [peak_probe(*plan.image_hw)], fills, peaks=peaks)
            nan = np.full(len(x), np.nan, np.float32)
            return pred, drop[:, 0], nan, nan
        shape = (*plan.image_hw, plan.extractor.input_shape[2])
        explain = plan.method.audit.step(plan.explainer, shape, None)
        fn = cached_step(explain.fn, ("reliance", "peak"), lambda: make_peak_step(explain.fn))
        params, _ = probe_params([peak_probe(*plan.image_hw)], fills)
        half = max(1, plan.explainer.device_batch() // 2)  # the step runs 2 x its batch
        batches, size = self.even_batches(x, peaks, half)
        outs = list(plan.explainer.run(Step(fn, (explain.params, params)), batches, size))
        keys = ("prediction", "drop", "contrast", "contrast_hidden")
        return tuple(_concat(outs, k).reshape(len(x)) for k in keys)

    def even_batches(
        self, x: np.ndarray, peaks: np.ndarray | None = None, full: int | None = None
    ) -> tuple[list, int]:
        """The in-memory images ``x`` (and their map ``peaks``, given) cut into as few host
        batches as the full device batch (or ``full`` rows) needs, of equal size (320 rows at
        a batch of 256: two of 160, not 256 and 64 padded to 256: every probe is a forward
        pass of the padded batch), and that size."""
        full = self.plan.explainer.device_batch() if full is None else full
        size = -(-len(x) // -(-len(x) // full)) if len(x) else full
        cut = range(0, len(x), size)
        if peaks is None:
            return [{"x": x[i : i + size]} for i in cut], size
        return [{"x": x[i : i + size], "peak": peaks[i : i + size]} for i in cut], size


def _concat(outs: list[dict[str, np.ndarray]], key: str) -> np.ndarray:
    return np.concatenate([o[key] for o in outs]) if outs else np.zeros((0,))


def sweep(
    runner: ProbeRunner,
    x: np.ndarray,
    probes: list[Probe],
    fills: Any,
    doses=None,
    peaks: np.ndarray | None = None,
    tops=None,
):
    """``(pred (S,), drop (S, P))`` of the sample's images ``x`` under ``probes``; with a list
    ``doses``, the (S, P) doses (how much each probe changed each image) are appended to it,
    with a list ``tops`` each image's top class under each fill (S, fills); ``peaks`` (S, 2):
    the rows' map peaks, for a probe that follows them (`peaks`)."""
    params, owner = probe_params(probes, fills)
    even, size = runner.even_batches(x, peaks)
    outs = list(runner.run(even, params, size))
    pred = _concat(outs, "prediction")
    if doses is not None:
        dose = _concat(outs, "dose").reshape(len(pred), -1)
        doses.append(-probe_drops(-dose, owner, len(probes)))  # the largest over the fills
    if tops is not None:
        tops.append(_concat(outs, "top").reshape(len(pred), -1))
    return pred, probe_drops(_concat(outs, "drop").reshape(len(pred), -1), owner, len(probes))


def pixel_moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of the sample's pixels ``x`` in [0, 1]."""
    flat = x.reshape(-1, x.shape[-1]).astype(np.float32)
    flat /= 255.0 if x.dtype == np.uint8 else 1.0
    return flat.mean(axis=0), flat.std(axis=0)


def sample_fills(x: np.ndarray, chunk: int = 256) -> FillParams:
    """The fills' parameters (`fastfem.kernels.occlusion.fill_params`) from the sample ``x``
    (N, H, W, C; uint8, or float in [0, 1]): its `pixel_moments` and its images' median
    `fine_detail` (read ``chunk`` images at a time)."""
    h, w = x.shape[1:3]
    low = tuple(jnp.asarray(m) for m in lowpass_matrices(h, w))
    detail = jax.jit(jax.vmap(lambda v: fine_detail(v, *low)))
    scale = 255.0 if x.dtype == np.uint8 else 1.0
    d = [
        np.asarray(detail(jnp.asarray(x[i : i + chunk], jnp.float32) / scale))
        for i in range(0, len(x), chunk)
    ]
    return fill_params(*pixel_moments(x), h, w, detail=float(np.median(np.concatenate(d))))


def fill_effects(
    runner: ProbeRunner,
    x: np.ndarray,
    cand: Candidate,
    pred: np.ndarray,
    fills: Any,
    peaks: np.ndarray | None = None,
) -> dict[str, float]:
    """The hit rate of ``cand``'s class's sampled rows with its region hidden by each single
    region fill (evidence: which ways of hiding it matter); only those rows are run
    (``peaks``: the sample's map peaks, for the probe that follows them)."""
    if cand.probe.region.kind == "image":
        return {cand.probe.fills[0]: cand.test.rate}
    probes = [dataclasses.replace(cand.probe, fills=(f,)) for f in REGION_FILLS]
    mine = pred == cand.cls
    _, drop = sweep(runner, x[mine], probes, fills, peaks=None if peaks is None else peaks[mine])
    return {f: float(np.mean(drop[:, j] >= TAU)) for j, f in enumerate(REGION_FILLS)}


def reliance_test(
    plan: Any,
    rows: dict[str, np.ndarray],
    proposed: Sequence[Region] = (),
    sample: int | None = None,
) -> RelianceResult:
    """Run the three stages of the module docstring on a finished audit's committed ``rows``
    (its plan reads the images again); ``proposed``: extra regions to sweep (map hot spots);
    ``sample``: the sweep's rows (None: `sample_size` of the predicted classes)."""
    if not plan.extractor.has_output or "prediction" not in rows:
        return RelianceResult(skipped="the model has no classifier output")
    ok = np.asarray(rows["status"], dtype=object) == "ok"
    pred_all = np.asarray(rows["prediction"])
    ids_all = np.asarray(rows["id"], dtype=object)
    idx = np.flatnonzero(ok & (pred_all >= 0))
    if len(idx) == 0:
        return RelianceResult(skipped="no readable row")
    runner = ProbeRunner(plan)
    if sample is None:
        sample = sample_size(len(np.unique(pred_all[idx])))
    chosen = stratified_sample(pred_all[idx], sample)
    x, sample_rows = read_again(runner, ids_all, idx[chosen])  # the sample, one host array
    if x is None:
        return RelianceResult(
            skipped=f"the source could not be read again ({len(sample_rows)} of {len(chosen)} "
            "sampled rows)"
        )
    h, w = plan.image_hw
    fills = sample_fills(x)
    probes = sweep_probes(h, w, proposed, x.shape[-1])
    doses: list[np.ndarray] = []
    pred, drop = sweep(runner, x, probes, fills, doses)
    labels = label_classes(rows)  # (rows,) or None: each label's class
    sample_labels = None if labels is None else labels[sample_rows]

    def sweep_more(more: list[Probe]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        more_doses: list[np.ndarray] = []
        tops: list[np.ndarray] = []
        return sweep(runner, x, more, fills, more_doses, tops=tops)[1], more_doses[0], tops[0]

    sw = Sweep(runner, x, probes, pred, drop, doses[0], labels=sample_labels, sweep_more=sweep_more)
    cands, misses = choose(sw)
    for c in cands:
        judged = sw.flaggable if c.by_labels else pred  # the rows it may flag
        if c.places:  # a region placing a global candidate: the ground truth's change
            c.row_tau = COLLAPSE_DROP
        else:
            c.row_tau, lift = row_threshold(c.test, sw.drop, judged, sw.regions, sw.dose)
        if c.probe.region.kind == "image":
            c.dose_floor = dose_floor(sw.dose[:, c.test.probe], lift)
        c.fill_effects = fill_effects(runner, x, c, pred, fills)
    # the probe that follows each row's map peak: by the maps where the method has a map of
    # an image alone, by the labels where the audit has them (`peaks`)
    asked = sample_labels is not None or not plan.explainer.explains_pairs
    followed = asked and has_peaks(rows) and len(cands) < MAX_CANDIDATES
    read_for_leads: list[int] = []
    if followed:  # the probe that follows each row's map peak (`peaks`)
        peaks = row_peaks(rows, sample_rows, h, w)

        def read_more(cls: int, n: int) -> PeakRows | None:  # unsampled rows of a lead's class
            mine = idx[pred_all[idx] == cls]
            rest = np.setdiff1d(mine, sample_rows)
            xm, at = read_again(runner, ids_all, rest[evenly_spaced(len(rest), n)])
            read_for_leads.append(len(at))
            got = None if labels is None else labels[at]
            return None if xm is None else PeakRows(xm, row_peaks(rows, at, h, w), got)

        windows = np.asarray(peak_windows(jnp.asarray(peaks), h, w, jnp.int32(peak_side(h, w))))
        more = peak_candidates(
            lambda xs, ps: runner.follow(xs, ps, fills),
            PeakRows(x, peaks, sample_labels),
            pred,
            {c.cls for c in cands},
            read_more,
            lambda cls, hit: runner.transplant(x, pred, hit, peak_probe(h, w), cls, windows),
        )
        for c in more[: MAX_CANDIDATES - len(cands)]:
            c.fill_effects = fill_effects(runner, x, c, pred, fills, peaks)
            cands.append(c)
    sampled_pred = pred_all[idx[chosen]]  # as stratified (the store's predictions)
    result = RelianceResult(
        candidates=cands,
        near_misses=misses,
        sampled=len(sample_rows),
        read_for_leads=sum(read_for_leads),
        probes=len(probes) + len(sw.margin_of) + int(followed),
        classes=len(np.unique(sampled_pred)),
        thin=thin_classes(sampled_pred, pred_all[idx]),
    )
    if cands:
        member_pass(runner, rows, idx, cands, fills, result, labels)
    return result
