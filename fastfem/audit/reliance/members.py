"""The reliance test's third stage, the member pass: every row predicted a candidate's class
read again and run under that class's candidates (`member_pass`), after a screen (`screen`, no
model) of the rows no candidate can flag. A row's drop is its stored confidence minus its
probed probability, so a row less confident than a candidate's ``row_tau`` cannot fall by it;
and a global candidate counts only the rows its probe changes by at least its dose floor.
What the package docstring (`fastfem.audit.reliance`) says of stage 3 is done here."""

from __future__ import annotations

import collections
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from fastfem.audit.reliance.peaks import row_peaks
from fastfem.audit.reliance.probes import Probe, probe_drops, probe_params
from fastfem.audit.reliance.stats import TAU
from fastfem.engine.step import Step

if TYPE_CHECKING:
    from fastfem.audit.reliance import Candidate, ProbeRunner, RelianceResult


def member_pass(
    runner: ProbeRunner,
    rows: dict[str, np.ndarray],
    idx: np.ndarray,
    cands: list[Candidate],
    fills: Any,
    result: RelianceResult,
    labels: np.ndarray | None = None,
) -> None:
    """Stage 3: every row predicted a candidate's class, under that class's candidates (one
    forward per candidate: the unprobed prediction and confidence are the store's). A row no
    candidate counts (`counted`: too little confidence to fall by the candidate's ``row_tau``,
    or changed less than a global candidate's dose floor) can be flagged by none: it is
    screened out (`screen`), with no forward. A candidate confirmed by the labels
    (``by_labels``, `rules.needs_labels`) counts only rows labelled another class
    (``labels`` (rows,): each row's label's class, -1 without one,
    `detectors.summary.label_classes`; None: no labels)."""
    pred_all = np.asarray(rows["prediction"])
    ids = np.asarray(rows["id"], dtype=object)
    cls = np.asarray([c.cls for c in cands])
    members = idx[np.isin(pred_all[idx], cls)]
    run, looked = neighbour_columns(cands)
    params, owner = probe_params(run, fills)
    floors = np.asarray([c.dose_floor for c in cands])
    taus = np.asarray([c.row_tau for c in cands])
    need = np.asarray([c.by_labels for c in cands])
    drops = np.zeros((len(cands),))
    hits = np.zeros((len(cands),), np.int64)
    spared = np.zeros((len(cands),), np.int64)
    counts = np.zeros((len(cands),), np.int64)
    pending: collections.deque[tuple[list[str], np.ndarray]] = collections.deque()

    stored = {str(i): k for k, i in enumerate(ids[members])}
    member_pred = pred_all[members].astype(np.int32)
    member_base = np.asarray(rows["confidence"])[members].astype(np.float32)
    member_lab = np.full(len(members), -1) if labels is None else labels[members]
    follows = any(c.probe.region.kind == "peak" for c in cands)
    member_peak = row_peaks(rows, members, *runner.plan.image_hw) if follows else None

    def read() -> Iterator[tuple[list[str], dict[str, np.ndarray]]]:
        for batch_ids, batch in runner.read(set(stored)):
            at = np.asarray([stored[i] for i in batch_ids])
            result.tested += len(batch_ids)
            more = {} if member_peak is None else {"peak": member_peak[at]}
            yield (
                batch_ids,
                {
                    **batch,
                    "pred": member_pred[at],
                    "base": member_base[at],
                    "lab": member_lab[at],
                    **more,
                },
            )

    def batches() -> Iterator[dict[str, np.ndarray]]:
        for batch_ids, batch in screen(runner, read(), cands, fills):
            pending.append((batch_ids, batch["base"], batch["lab"]))
            yield batch

    for out in runner.run(batches(), params):
        batch_ids, base, lab = pending.popleft()
        every = probe_drops(out["drop"], owner, len(run))
        drop = every[:, : len(cands)]
        dose = -probe_drops(-out["dose"], owner, len(run))[:, : len(cands)]
        mine = counted(out["prediction"], base, dose, cls, floors, taus, lab, need)  # (B, K)
        out_here = mine & (drop >= taus[None, :])  # knocked out
        shared = elsewhere(every, looked)  # knocked out by one of a region's neighbours too
        score = np.where(mine & ~shared, drop / taus[None, :], -np.inf)  # >= 1: flagged
        drops += np.where(mine, drop, 0.0).sum(axis=0)
        counts += mine.sum(axis=0)
        hits += out_here.sum(axis=0)
        spared += (out_here & shared).sum(axis=0)
        best = np.argmax(score, axis=1)
        for j in np.flatnonzero(score[np.arange(len(best)), best] >= 1.0):
            result.ids.append(batch_ids[j])
            result.drop.append(float(drop[j, best[j]]))
            result.candidate.append(int(best[j]))
        result.forwarded += len(batch_ids)
    for k, c in enumerate(cands):
        c.member_rows = int(counts[k])
        c.member_hits = int(hits[k])
        c.member_mean_drop = float(drops[k] / max(counts[k], 1))
        c.member_spared = int(spared[k])


def neighbour_columns(cands: list[Candidate]) -> tuple[list[Probe], list[list[int]]]:
    """The probes the member pass runs — the candidates' own, then each region candidate's
    ``neighbours`` (`choice.Sweep.neighbours`) — and per candidate the columns of its
    neighbours among them."""
    run = [c.probe for c in cands]
    looked = []
    for c in cands:
        looked.append(list(range(len(run), len(run) + len(c.neighbours))))
        run += c.neighbours
    return run, looked


def elsewhere(drop: np.ndarray, looked: list[list[int]]) -> np.ndarray:
    """(B, K) bool: which rows one of candidate ``k``'s neighbours (``looked[k]``, columns of
    ``drop`` (B, P), `neighbour_columns`) knocks out (a drop of at least ``stats.TAU``):
    those it does not flag. False for a candidate with none."""
    out = np.zeros((drop.shape[0], len(looked)), bool)
    for k, cols in enumerate(looked):
        if cols:
            out[:, k] = (drop[:, cols] >= TAU).any(axis=1)
    return out


def counted(
    pred: np.ndarray,
    base: np.ndarray,
    dose: np.ndarray,
    cls: np.ndarray,
    floors: np.ndarray,
    taus: np.ndarray,
    lab: np.ndarray | None = None,
    need: np.ndarray | None = None,
) -> np.ndarray:
    """(B, K) bool: which candidates count each member row — those of the row's predicted
    class ``pred`` (B,) (candidate ``k`` is of class ``cls[k]``) whose ``row_tau`` (``taus``
    (K,)) its confidence ``base`` (B,) reaches (its drop, ``base`` minus the probed
    probability, cannot exceed ``base``) and whose probe changed it by at least their dose
    floor (``dose`` (B, K); ``floors`` (K,): 0 for a region probe); a candidate that ``need``
    (K,) labels counts only rows whose label's class ``lab`` (B,; -1 none) is another."""
    out = (
        (pred[:, None] == cls[None, :])
        & (base[:, None] >= taus[None, :])
        & (dose >= floors[None, :])
    )
    if need is not None and need.any():
        other = (lab[:, None] >= 0) & (lab[:, None] != cls[None, :])
        out &= ~need[None, :] | other
    return out


def screen(
    runner: ProbeRunner,
    batches: Iterable[tuple[list[str], dict[str, np.ndarray]]],
    cands: list[Candidate],
    fills: Any,
) -> Iterator[tuple[list[str], dict[str, np.ndarray]]]:
    """The member rows (``(ids, batch)`` with ``x``, ``pred``, ``base``) that a candidate may
    count (`counted`): those confident enough to fall by one of their class's candidates'
    ``row_tau``, and for a global candidate changed by at least its dose floor (the dose step
    of the global candidates' probes, no forward; a region candidate's dose counts as
    reached); re-cut into full device batches (memory: two batches)."""
    cls = np.asarray([c.cls for c in cands])
    floors = np.asarray([c.dose_floor for c in cands])
    taus = np.asarray([c.row_tau for c in cands])
    need = np.asarray([c.by_labels for c in cands])
    is_global = floors > 0
    if is_global.any():
        params, owner = probe_params(
            [c.probe for c, g in zip(cands, is_global, strict=True) if g], fills
        )
        step = Step(runner.dose_fn, params)
    full = runner.plan.explainer.device_batch()
    kept_ids: list[str] = []
    kept: dict[str, np.ndarray] = {}
    for batch_ids, batch in batches:
        dose = np.full((len(batch_ids), len(cands)), np.inf)
        if is_global.any():
            (out,) = runner.plan.explainer.run(step, [{"x": batch["x"]}])
            dose[:, is_global] = -probe_drops(-out["dose"], owner, int(is_global.sum()))
        keep = counted(
            batch["pred"], batch["base"], dose, cls, floors, taus, batch["lab"], need
        ).any(axis=1)
        kept_ids += [i for i, k in zip(batch_ids, keep, strict=True) if k]
        kept = {
            key: np.concatenate([kept[key], v[keep]]) if kept else v[keep]
            for key, v in batch.items()
        }
        while len(kept_ids) >= full:
            yield kept_ids[:full], {key: v[:full] for key, v in kept.items()}
            kept_ids, kept = kept_ids[full:], {key: v[full:] for key, v in kept.items()}
    if kept_ids:
        yield kept_ids, kept
