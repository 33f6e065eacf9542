"""Label-aware views: the explanation clusters and hot spots within one predicted class, and
among the rows whose prediction disagrees with their label.

The store-wide clusters (`clusters`) group maps by where the objects are; a shortcut the model
learned for one class lives in that class's maps, and a mislabelled or shortcut-driven row is
often one the model gets "wrong". Each *view* reruns the same detectors — k-means of the
Hellinger features, hot spots, agreement (`hotspots`), the same thresholds — on a subset of
the ok rows; what changes is only who is clustered together:

* ``class c`` for each class with at least ``MIN_VIEW_ROWS`` rows (the classes are the
  model's predictions when the audit has them, else the labels: `summary.row_classes`), as
  SpRAy does; the ``MAX_CLASS_VIEWS`` largest classes, the others listed as skipped;
* ``label disagrees``: rows with a label and a prediction where the prediction differs from
  the label's majority prediction (`summary.label_to_prediction`: labels matched to prediction
  indices by majority, so no class-name table is needed), when the audit has both and at
  least ``MIN_VIEW_ROWS`` such rows.

A view's cluster is compared with *every other ok row of the store* (its contrast's "rest";
the clusters are the view's, the rest is the dataset's): a mark that most of a view's rows
carry — the usual case among the rows a shortcut makes the model get wrong — still contrasts
with the dataset, where a contrast within the view would see nothing unusual. As store-wide,
any ok row of the store that covers a view's candidate hot spot is flagged by the view.

Each view streams over the store like the store-wide detectors (its clustering passes skip
the rows outside it; its hot-spot pass reads every row), so a store with C viewed classes
costs about C + 1 more detector runs, in bounded memory; a view keeps only its candidates and
its flagged rows. A view's flags are evidence beside the store-wide ones (``Detection.views``),
not merged into them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from fastfem.audit.detectors.clusters import ClusterStats, explanation_clusters
from fastfem.audit.detectors.hotspots import (
    MAX_VARIATION,
    MIN_CONTRAST,
    MIN_MEMBERS,
    contrast,
    hot_match,
    hot_spots,
    row_flags,
    variation,
)
from fastfem.audit.detectors.summary import Classes, label_to_prediction, peak_location
from fastfem.audit.store.parts import ResultStore

#: Fewest rows a view needs (k-means' 8 clusters of at least ``hotspots.MIN_MEMBERS`` each).
MIN_VIEW_ROWS = 64
#: At most this many class views (the largest classes).
MAX_CLASS_VIEWS = 32
#: Most typical members listed per candidate.
TOP_MEMBERS = 16


@dataclass(frozen=True)
class View:
    """The detectors on one subset of the rows.

    ``name`` (``"class 3"``, ``"label disagrees"``), ``kind`` (``"class"`` or
    ``"disagreement"``), ``cls`` (the class index of a class view, else None), ``rows`` (the
    subset's size), ``candidates`` (per shortcut candidate of the view: cluster, size, score,
    contrast, variation, hot cells, mean-map peak, most typical member ids), and the flagged
    rows: ``flagged`` (positions in `ResultStore.read_rows` order), their ``score`` and
    candidate ``cluster``.
    """

    name: str
    kind: str
    cls: int | None
    rows: int
    candidates: list[dict] = field(default_factory=list)
    flagged: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))
    score: np.ndarray = field(default_factory=lambda: np.zeros((0,)))
    cluster: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int32))


@dataclass(frozen=True)
class LabelViews:
    """Every view that ran, and the subsets that did not with the reason (``{name: why}``)."""

    views: list[View] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def disagreement_mask(rows: Mapping[str, np.ndarray]) -> np.ndarray | None:
    """(N,) bool: the rows whose prediction differs from their label's majority prediction
    (`summary.label_to_prediction`); None when the audit lacks labels or predictions."""
    mapping = label_to_prediction(rows)
    if mapping is None:
        return None
    out = np.zeros((len(rows["id"]),), bool)
    for i, (lab, p) in enumerate(zip(rows["label"], rows["prediction"], strict=True)):
        if lab is not None and p is not None and p == p:
            out[i] = mapping[str(lab)] != int(p)
    return out


def view_hot_spots(
    store: ResultStore, ok: np.ndarray, stats: ClusterStats
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The hot-spot rule (`hotspots`) for clusters ``stats`` of a view, with every other ok
    row of the store as the contrast's "rest": ``(hot, cluster_score, candidate, score,
    cluster)``, the last two per row of the store (`hotspots.row_flags`). One streaming pass:
    the rows outside the view form a pseudo-cluster ``k`` with an empty template."""
    k = stats.k
    mean = stats.mean_detail()
    hot = hot_spots(mean)
    label = np.where(ok & (stats.label < 0), k, stats.label).astype(np.int32)
    pad = np.zeros((1, *mean.shape[1:]))
    mean_p = np.concatenate([mean, pad])
    template = np.concatenate([np.where(hot, mean, 0.0), pad])
    with np.errstate(invalid="ignore", divide="ignore"):
        energy, coverage, std = hot_match(store, ok, label, mean_p, template)
    energy, coverage = energy[:, :k], coverage[:, :k]
    var = variation(mean, std[:k], hot)
    con = contrast(energy, label)
    cluster_score = np.minimum(MAX_VARIATION / np.maximum(var, 1e-12), con / MIN_CONTRAST)
    candidate = (cluster_score >= 1.0) & (stats.sizes >= MIN_MEMBERS)
    score, cluster = row_flags(energy, coverage, candidate, hot)
    return hot, cluster_score, candidate, score, cluster


def subset_view(
    store: ResultStore,
    ids: np.ndarray,
    ok: np.ndarray,
    mask: np.ndarray,
    name: str,
    kind: str,
    cls: int | None = None,
) -> View:
    """The detectors on the rows ``mask`` of ``store`` (``ok``: every ok row of the store; see
    the module for what is compared with what)."""
    stats = explanation_clusters(store, mask & ok)
    if stats is None:
        return View(name, kind, cls, int(np.sum(mask & ok)))
    hot, cluster_score, candidate, score, cluster = view_hot_spots(store, ok, stats)
    mean_maps = stats.mean_maps()
    candidates = []
    for k in np.flatnonzero(candidate):
        py, px = peak_location(mean_maps[k])
        members = stats.ranked_members(int(k))
        candidates.append(
            {
                "cluster": int(k),
                "size": int(stats.sizes[k]),
                "score": float(cluster_score[k]),
                "hot_cells": int(hot[k].sum()),
                "peak_y": float(py),
                "peak_x": float(px),
                "members": [str(ids[i]) for i in members[:TOP_MEMBERS]],
            }
        )
    flagged = np.flatnonzero(score >= 1.0)
    return View(
        name,
        kind,
        cls,
        int(np.sum(mask & ok)),
        candidates,
        flagged,
        score[flagged],
        cluster[flagged].astype(np.int32),
    )


def _class_subsets(
    ok: np.ndarray, classes: Classes, min_rows: int, max_views: int
) -> tuple[list[tuple[int, np.ndarray]], dict[str, str]]:
    """``([(class, mask)], skipped)``: the largest ``max_views`` classes of at least
    ``min_rows`` ok rows, and why the others are not viewed."""
    counts = np.bincount(classes.index[ok & (classes.index >= 0)], minlength=len(classes.names))
    order = sorted(np.flatnonzero(counts), key=lambda c: (-counts[c], c))
    subsets, skipped = [], {}
    for rank, c in enumerate(order):
        name = f"class {classes.names[c] if c < len(classes.names) else c}"
        if counts[c] < min_rows:
            skipped[name] = f"{counts[c]} rows (a view needs {min_rows})"
        elif rank >= max_views:
            skipped[name] = f"beyond the {max_views} largest classes"
        else:
            subsets.append((int(c), ok & (classes.index == c)))
    return subsets, skipped


def label_views(
    store: ResultStore,
    rows: Mapping[str, np.ndarray],
    ok: np.ndarray,
    classes: Classes,
    min_rows: int = MIN_VIEW_ROWS,
    max_views: int = MAX_CLASS_VIEWS,
) -> LabelViews:
    """Every view of the module docstring on the committed ``rows`` (``ok`` their ok mask)."""
    ids = np.asarray(rows.get("id", []))
    subsets, skipped = _class_subsets(ok, classes, min_rows, max_views)
    views = []
    for c, mask in subsets:
        name = f"class {classes.names[c] if c < len(classes.names) else c}"
        views.append(subset_view(store, ids, ok, mask, name, "class", c))
    disagree = disagreement_mask(rows) if len(ids) else None
    if disagree is None:
        skipped["label disagrees"] = "the audit has no labels or no predictions"
    elif int(np.sum(disagree & ok)) < min_rows:
        skipped["label disagrees"] = f"{int(np.sum(disagree & ok))} rows (a view needs {min_rows})"
    else:
        views.append(subset_view(store, ids, ok, disagree, "label disagrees", "disagreement"))
    return LabelViews(views, skipped)
