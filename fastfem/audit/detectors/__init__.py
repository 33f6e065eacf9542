"""Location-agnostic shortcut detectors over an audit's result store.

Nothing here is told where a shortcut sits or what it looks like. The detectors read the
committed rows and the stored feature-resolution maps shard by shard (`shards`), with the
map-heavy work jitted on the device:

1. **Explanation clusters** (`clusters`): k-means (``K_CLUSTERS``) of the maps' Hellinger
   features on a ``CLUSTER_GRID`` grid, streaming over the store with bounded memory.
2. **Hot spots and spatial consensus** (`hotspots`): each cluster's hot spot (cells where its
   mean map reaches ``HOT_FRACTION`` of its peak); its members' *agreement* there (mean
   coefficient of variation ``<= MAX_VARIATION``: a mark at a fixed place, not objects that
   move) and its *contrast* with what the rest of the dataset does there (``>=
   MIN_CONTRAST``: away from where the objects are) make it a shortcut candidate, wherever it
   is. Every row that covers a candidate's hot spot is flagged (``hot spot k``, score
   ``coverage / MIN_COVERAGE``).
3. **Object-relative** (`box`, audits with boxes): energy outside the box
   ``> MAX_OUTSIDE_BOX`` (``outside box``, score ``outside / MAX_OUTSIDE_BOX``).

Scores are statistic / threshold (>= 1 when a detector fires); a row's score is the largest
over the detectors that fired, ``reason`` lists them. `detect` runs everything and
`write_detection` writes ``flags.parquet`` and ``clusters.parquet`` (`tables`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fastfem.audit.detectors.box import MAX_OUTSIDE_BOX, box_scores
from fastfem.audit.detectors.by_class import LabelViews, label_views
from fastfem.audit.detectors.clusters import K_CLUSTERS, ClusterStats, explanation_clusters
from fastfem.audit.detectors.energy import CLUSTER_GRID, DETAIL_GRID
from fastfem.audit.detectors.hotspots import (
    HOT_FRACTION,
    MAX_VARIATION,
    MIN_CONTRAST,
    MIN_COVERAGE,
    MIN_MEMBERS,
    MIN_ROW_LIFT,
    TAU,
    HotSpotResult,
    hot_spot_flags,
)
from fastfem.audit.detectors.summary import Classes, cluster_columns, row_classes
from fastfem.audit.detectors.tables import (
    CLUSTERS_FILE,
    FLAGS_FILE,
    clusters_schema,
    write_clusters,
    write_flags,
)
from fastfem.audit.store.parts import ResultStore

__all__ = [
    "CLUSTERS_FILE",
    "FLAGS_FILE",
    "Detection",
    "detect",
    "detection_rule",
    "detector_settings",
    "with_reliance",
    "write_detection",
]


def detection_rule(has_boxes: bool) -> str:
    """The detectors' formulas and thresholds, in words (summary, manifest, report)."""
    rule = (
        f"hot spot: maps clustered by k-means (k={K_CLUSTERS}, Hellinger features on a "
        f"{CLUSTER_GRID}x{CLUSTER_GRID} grid); a cluster's hot spot = cells where its mean map "
        f">= {HOT_FRACTION} x its peak; candidate when its members agree (variation = mean "
        f"over the hot spot of the members' std / mean <= {MAX_VARIATION}), contrasted "
        f"(contrast = mean hot-spot energy share of its members / that of the other maps >= "
        f"{MIN_CONTRAST}) and size >= {MIN_MEMBERS}; a "
        f"row is flagged when it covers a candidate's hot spot: coverage (share of the hot "
        f"spot's cells, weighted by the members' mean energy, where the row has >= {TAU} x that "
        f"mean) >= {MIN_COVERAGE} and energy share on the hot spot >= {MIN_ROW_LIFT} x a "
        f"uniform map's; "
        f"score = coverage / {MIN_COVERAGE}"
    )
    if has_boxes:
        rule += (
            f"; outside box: 1 - energy_pointing_game > {MAX_OUTSIDE_BOX}, "
            f"score = outside / {MAX_OUTSIDE_BOX}"
        )
    return rule


def detector_settings() -> dict[str, float | int]:
    """Every detector threshold by name (recorded in the store's manifest)."""
    return {
        "k_clusters": K_CLUSTERS,
        "cluster_grid": CLUSTER_GRID,
        "detail_grid": DETAIL_GRID,
        "hot_fraction": HOT_FRACTION,
        "max_variation": MAX_VARIATION,
        "min_contrast": MIN_CONTRAST,
        "min_members": MIN_MEMBERS,
        "tau": TAU,
        "min_coverage": MIN_COVERAGE,
        "min_row_lift": MIN_ROW_LIFT,
        "max_outside_box": MAX_OUTSIDE_BOX,
    }


@dataclass(frozen=True)
class Detection:
    """The detectors' verdict on every committed row (aligned with `ResultStore.read_rows`).

    ``score`` (N,) the largest statistic/threshold ratio of the detectors that fired (0 when
    none), ``flagged`` (N,), ``reason`` (N,) the detectors that fired, ``cluster`` (N,) the
    candidate whose hot spot fired, else the row's cluster (-1: none), ``rule`` the formulas,
    ``strength`` (N,) the tie-breaker of equal scores (the energy share on the fired hot spot,
    or outside the box).
    """

    ids: np.ndarray
    score: np.ndarray
    flagged: np.ndarray
    reason: np.ndarray
    cluster: np.ndarray
    rule: str
    classes: Classes
    strength: np.ndarray = field(default_factory=lambda: np.zeros((0,)))
    stats: ClusterStats | None = None
    hot: HotSpotResult | None = None
    clusters: dict[str, list] = field(default_factory=dict)
    views: LabelViews = field(default_factory=LabelViews)  # per class, label disagrees (by_class)
    #: the reliance test's evidence per row (`with_reliance`): region, fill, output change
    region: np.ndarray | None = None
    fill: np.ndarray | None = None
    change: np.ndarray | None = None
    #: (N,) the outside-box scores (audits with boxes; None without)
    box: np.ndarray | None = None

    def order(self) -> np.ndarray:
        """Indices of the flagged rows, highest score first (ties: the larger strength, then
        store order)."""
        idx = np.flatnonzero(self.flagged)
        strength = self.strength[idx] if self.strength.size else np.zeros(idx.shape)
        return idx[np.lexsort((idx, -strength, -self.score[idx]))]

    def top_ids(self, n: int) -> list[str]:
        return [str(self.ids[i]) for i in self.order()[:n]]

    def flags_columns(self) -> dict[str, list]:
        """The columns of ``flags.parquet`` (`tables`), highest score first."""
        order = self.order()
        has = self.change is not None
        region = self.region if has else np.full(len(self.ids), None, dtype=object)
        fill = self.fill if has else region
        change = self.change if has else np.full(len(self.ids), np.nan)
        return {
            "id": [str(self.ids[i]) for i in order],
            "score": [float(self.score[i]) for i in order],
            "reason": [str(self.reason[i]) for i in order],
            "cluster": [None if self.cluster[i] < 0 else int(self.cluster[i]) for i in order],
            "rank": list(range(1, len(order) + 1)),
            "region": [region[i] for i in order],
            "fill": [fill[i] for i in order],
            "output_change": [None if np.isnan(change[i]) else float(change[i]) for i in order],
        }


def _reasons(hot_cluster: np.ndarray, box: np.ndarray | None) -> np.ndarray:
    """Per row, the detectors that fired ("" for the others; strings built for those only)."""
    out = np.full(hot_cluster.shape, "", dtype=object)
    in_box = np.zeros(hot_cluster.shape, bool) if box is None else box > 0
    for i in np.flatnonzero((hot_cluster >= 0) | in_box):
        parts = [f"hot spot {hot_cluster[i]}"] if hot_cluster[i] >= 0 else []
        out[i] = ", ".join(parts + (["outside box"] if in_box[i] else []))
    return out


def detect(
    store: ResultStore, rows: Mapping[str, np.ndarray] | None = None, views: bool = False
) -> Detection:
    """Run every detector on ``store`` (its committed rows: ``rows`` or `read_rows`); with
    ``views``, the label-aware views too (`by_class`: one more detector run per view)."""
    rows = store.read_rows() if rows is None else rows
    n = len(rows.get("id", []))
    ids = np.asarray(rows.get("id", []))
    ok = np.asarray(rows.get("status", []), dtype=object) == "ok"
    classes = row_classes(rows) if n else Classes(np.zeros((0,), np.int64), [], "none")
    box = box_scores(rows) if n else None
    rule = detection_rule(box is not None)
    score = np.zeros((n,)) if box is None else box.copy()
    strength = np.zeros((n,)) if box is None else np.nan_to_num(box * MAX_OUTSIDE_BOX)
    stats = explanation_clusters(store, ok) if n else None
    hot = None
    hot_cluster = np.full((n,), -1, np.int32)
    cluster = np.full((n,), -1, np.int32)
    columns: dict[str, list] = {}
    if stats is not None:
        hot = hot_spot_flags(store, ok, stats)
        hot_cluster = hot.cluster
        fired_energy = np.take_along_axis(
            np.nan_to_num(hot.energy, nan=0.0), np.maximum(hot_cluster, 0)[:, None], axis=1
        )[:, 0]
        strength = np.maximum(strength, np.where(hot_cluster >= 0, fired_energy, 0.0))
        score = np.maximum(score, hot.score)
        cluster = np.where(hot_cluster >= 0, hot_cluster, stats.label).astype(np.int32)
        columns = cluster_columns(rows, stats, hot, classes, np.where(score >= 1, cluster, -1))
    flagged = score >= 1.0
    return Detection(
        ids=ids,
        score=score,
        flagged=flagged,
        reason=_reasons(hot_cluster, box),
        cluster=cluster,
        rule=rule,
        classes=classes,
        strength=strength,
        stats=stats,
        hot=hot,
        clusters=columns,
        views=label_views(store, rows, ok, classes) if n and views else LabelViews(),
        box=box,
    )


def with_reliance(detection: Detection, result: Any) -> Detection:
    """``detection`` with the reliance test's verdict (`fastfem.audit.reliance`): its flagged rows
    get score ``drop / row_tau`` (their candidate's), reason ``relies on <region> (<fill>)`` and
    the evidence columns (region, fill, output change). When the test ran, a map hot spot no
    longer flags a row by itself — maps show where a model looks, the test whether it decides by it
    (a hot spot the model relies on is swept and flags its rows as ``relies on hot spot k``); the
    clusters and their hot spots stay in ``clusters.parquet``. When it could not run (no classifier
    output, a one-shot source, ``reliance_sample=0``) the hot spots flag as they are."""
    n = len(detection.ids)
    pos = {str(rid): i for i, rid in enumerate(detection.ids)}
    region = np.full(n, None, dtype=object)
    fill = np.full(n, None, dtype=object)
    change = np.full(n, np.nan)
    score = detection.score.copy()
    reason = detection.reason.copy()
    if not result.skipped:
        score = np.zeros(n) if detection.box is None else np.nan_to_num(detection.box)
        reason = np.asarray(["outside box" if s > 0 else "" for s in score], dtype=object)
    strength = detection.strength.copy() if detection.strength.size else np.zeros(n)
    for rid, drop, k in zip(result.ids, result.drop, result.candidate, strict=True):
        i = pos[rid]
        probe = result.candidates[k].probe
        region[i], fill[i], change[i] = probe.region.name, "+".join(probe.fills), drop
        score[i] = max(score[i], drop / result.candidates[k].row_tau)
        strength[i] = max(strength[i], drop)
        text = f"relies on {probe.name}"
        reason[i] = f"{reason[i]}, {text}" if reason[i] else text
    return dataclasses.replace(
        detection,
        score=score,
        flagged=score >= 1.0,
        reason=reason,
        strength=strength,
        region=region,
        fill=fill,
        change=change,
    )


def write_detection(root, detection: Detection) -> None:
    """Write ``root/flags.parquet`` and ``root/clusters.parquet`` atomically (`tables`)."""
    write_flags(root, detection.flags_columns())
    columns = detection.clusters or {name: [] for name in clusters_schema().names}
    write_clusters(root, columns)
