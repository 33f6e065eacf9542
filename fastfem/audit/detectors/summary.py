"""Per-cluster summaries (the rows of ``clusters.parquet``) and per-class views.

Classes are the model's predictions (the ``prediction`` column) when the audit has them, else
the inputs' labels. For each cluster:

* ``size``, ``mean_map`` (mean energy distribution at the maps' resolution) and its peak
  ``peak_y``, ``peak_x`` (centre of the argmax cell as a fraction of the height / width);
* ``classes`` / ``class_counts``: the class distribution of the members; ``top_class`` and its
  share; ``class_skew``: total variation distance ``1/2 sum_c |p_k(c) - p(c)|`` between the
  members' class distribution and the whole store's (0: the cluster predicts like the dataset,
  1: disjoint classes);
* ``disagreement``: the share of members (with a label) whose prediction differs from their
  label, labels being matched to prediction indices by majority over the store (each label to
  the prediction most of its rows get) — so it needs no class-name table and is null when the
  audit has no labels or no predictions;
* ``members``: the ``TOP_MEMBERS`` members closest to the centroid (most typical first).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from fastfem.audit.detectors.clusters import ClusterStats
from fastfem.audit.detectors.hotspots import HotSpotResult
from fastfem.audit.detectors.tables import clusters_schema

TOP_MEMBERS = 16


@dataclass(frozen=True)
class Classes:
    """Class index per row (-1: none), the class names, and which column they came from."""

    index: np.ndarray
    names: list[str]
    source: str  # "prediction", "label" or "none"


def _nullable_ints(values: np.ndarray) -> np.ndarray:
    v = np.asarray(values)
    if v.dtype == object:
        return np.asarray([-1 if x is None else int(x) for x in v], np.int64)
    v = v.astype(np.float64)
    return np.where(np.isfinite(v), v, -1).astype(np.int64)


def row_classes(rows: Mapping[str, np.ndarray]) -> Classes:
    """Predictions when the audit has them, else labels (see the module docstring)."""
    n = len(rows["id"])
    if "prediction" in rows:
        pred = _nullable_ints(rows["prediction"])
        top = int(pred.max()) + 1 if (pred >= 0).any() else 0
        return Classes(pred, [str(i) for i in range(top)], "prediction")
    if "label" in rows:
        labels = [None if v is None else str(v) for v in rows["label"]]
        names = sorted({v for v in labels if v is not None})
        pos = {name: i for i, name in enumerate(names)}
        return Classes(np.asarray([pos.get(v, -1) for v in labels], np.int64), names, "label")
    return Classes(np.full((n,), -1, np.int64), [], "none")


def label_to_prediction(rows: Mapping[str, np.ndarray]) -> dict[str, int] | None:
    """Each label -> the prediction most of its rows get (None without labels/predictions)."""
    if "label" not in rows or "prediction" not in rows:
        return None
    pred = _nullable_ints(rows["prediction"])
    by_label: dict[str, list[int]] = {}
    for lab, p in zip(rows["label"], pred, strict=True):
        if lab is not None and p >= 0:
            by_label.setdefault(str(lab), []).append(int(p))
    if not by_label:
        return None
    return {lab: int(np.bincount(ps).argmax()) for lab, ps in by_label.items()}


def label_classes(rows: Mapping[str, np.ndarray]) -> np.ndarray | None:
    """(N,) the class each row's label is matched to (the prediction most rows of the label
    get, `label_to_prediction`), -1 for a row without a label; None when the store has no
    labels."""
    mapping = label_to_prediction(rows)
    if mapping is None:
        return None
    return np.asarray(
        [-1 if lab is None else mapping.get(str(lab), -1) for lab in rows["label"]], np.int64
    )


def disagreement(rows: Mapping[str, np.ndarray], members: np.ndarray, mapping) -> float | None:
    """Share of ``members`` with a label whose prediction differs from their matched label."""
    if mapping is None or members.size == 0:
        return None
    pred = _nullable_ints(rows["prediction"])[members]
    labels = rows["label"][members]
    has = np.asarray([lab is not None and p >= 0 for lab, p in zip(labels, pred, strict=True)])
    if not has.any():
        return None
    wrong = [mapping[str(lab)] != p for lab, p, h in zip(labels, pred, has, strict=True) if h]
    return float(np.mean(wrong))


def peak_location(mean_map: np.ndarray) -> tuple[float, float]:
    """Centre of the argmax cell of an (h, w) map, as fractions of the height and width."""
    h, w = mean_map.shape
    flat = int(np.argmax(mean_map))
    return (flat // w + 0.5) / h, (flat % w + 0.5) / w


def class_distribution(index: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts per class of the rows with a class (index >= 0)."""
    return np.bincount(index[index >= 0], minlength=n_classes)[:n_classes]


def cluster_columns(
    rows: Mapping[str, np.ndarray],
    stats: ClusterStats,
    hot: HotSpotResult,
    classes: Classes,
    flagged_cluster: np.ndarray,
) -> dict[str, list]:
    """The columns of ``clusters.parquet`` (see `tables.clusters_schema`)."""
    n_classes = len(classes.names)
    overall = class_distribution(classes.index[stats.label >= 0], n_classes).astype(np.float64)
    p_all = overall / max(overall.sum(), 1.0)
    mapping = label_to_prediction(rows)
    mean_maps = stats.mean_maps()
    ids = np.asarray(rows["id"])
    cols: dict[str, list] = {name: [] for name in clusters_schema().names}
    for k in range(stats.k):
        members = stats.ranked_members(k)
        counts = class_distribution(classes.index[members], n_classes)
        total = counts.sum()
        share = counts / total if total else None
        py, px = peak_location(mean_maps[k])
        member_e = hot.energy[members, k]
        cols["cluster"].append(k)
        cols["size"].append(int(members.size))
        cols["candidate"].append(bool(hot.candidate[k]))
        cols["score"].append(float(hot.cluster_score[k]))
        cols["contrast"].append(float(hot.contrast[k]))
        cols["variation"].append(float(hot.variation[k]))
        cols["hot_energy"].append(float(np.median(member_e)) if members.size else 0.0)
        cols["hot_cells"].append(int(hot.hot[k].sum()))
        cols["peak_y"].append(float(py))
        cols["peak_x"].append(float(px))
        cols["classes"].append(list(classes.names))
        cols["class_counts"].append([int(c) for c in counts])
        top = int(np.argmax(counts)) if total else None
        cols["top_class"].append(None if top is None else classes.names[top])
        cols["top_class_share"].append(None if share is None else float(share[top]))
        skew = None if share is None else float(0.5 * np.abs(share - p_all).sum())
        cols["class_skew"].append(skew)
        cols["disagreement"].append(disagreement(rows, members, mapping))
        cols["flagged"].append(int(np.sum(flagged_cluster == k)))
        cols["map_height"].append(int(mean_maps.shape[1]))
        cols["map_width"].append(int(mean_maps.shape[2]))
        cols["mean_map"].append(mean_maps[k].astype(np.float32).ravel().tolist())
        cols["members"].append([str(ids[i]) for i in members[:TOP_MEMBERS]])
    return cols
