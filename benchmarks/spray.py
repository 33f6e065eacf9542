"""The peer, side by side: spectral relevance analysis (SpRAy) on an audit's stored maps.

SpRAy (Lapuschkin et al., "Unmasking Clever Hans predictors and assessing what machines really
learn", Nat. Commun. 2019) as its authors package it in CoRelAy 1.0.0 (`corelay` on PyPI),
run the way its users run it:

1. **Per predicted class**, each map is flattened and normalised to sum 1
   (``x_i = m_i / sum(m_i)``; the store's maps are already one channel, FEM's per-cell energy).
2. CoRelAy's ``SpectralEmbedding`` pipeline with its defaults: Euclidean distances
   (``SciPyPDist``), a symmetric ``N_NEIGHBORS``-nearest-neighbour graph (``SparseKNN``), the
   symmetric normalised adjacency ``D^-1/2 A D^-1/2`` (``SymmetricNormalLaplacian``) and its
   ``N_EIGVAL`` leading eigenpairs (``EigenDecomposition``; eigenvalues returned as
   ``lambda = 1 - mu``, the normalised Laplacian's), eigenvectors normalised per row.
3. CoRelAy's ``KMeans`` on those eigenvectors for every k in ``ks`` (default 2..8). This is
   exactly ``corelay.pipeline.spectral.SpectralClustering(clustering=KMeans(n_clusters=k,
   is_output=True))``, with the embedding computed once per class and shared by the k's
   (as ViRelAy's analysis files do); ARPACK's start vector and k-means' seed are fixed, so a
   run is reproducible.

SpRAy ranks nothing itself: an analyst reads the eigenvalue spectrum and looks for small
outlying clusters. Two readings are scored against the rows to be found (``truth``):

* **eigengap** (what a user acts on, no oracle): per class, k is the eigengap's choice,
  ``argmax_{k in ks} lambda_(k+1) - lambda_k`` with the eigenvalues in ascending order
  (``lambda_1 ~ 0``; ties: the smallest k), and the analyst flags the *smallest* cluster of
  that clustering (ties: the lower cluster index) — in every class, since nothing tells them
  which class holds the shortcut. The flagged set is the union over the classes.
* **oracle** (SpRAy's ceiling): the single cluster, over every class and every k in ``ks``,
  with the best F1 against ``truth`` — an analyst who knows the answer and picks it.

Rows without a prediction (error rows) or with a map that cannot be normalised (non-finite,
or summing to <= 0), and classes with fewer than ``min_class_rows(ks)`` rows, are not
clustered; `spray` counts them under ``skipped`` and never flags them. SpRAy's distances are a
dense ``n_c x n_c`` matrix per class: it suits a benchmark's test split, not a million rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: k-means' k's (the issue's and SpRAy's usual range).
KS = tuple(range(2, 9))
#: CoRelAy's defaults: neighbours of the kNN graph, eigenpairs of the embedding.
N_NEIGHBORS = 10
N_EIGVAL = 32


def flag_scores(flagged: np.ndarray, truth: np.ndarray) -> dict:
    """Precision, recall and F1 of the flagged rows against the rows to be found.

    ``precision = tp / flagged`` (NaN when nothing is flagged), ``recall = tp / truth`` (NaN
    when there is nothing to find), ``f1 = 2 tp / (flagged + truth)`` (0 when both are
    empty), with the counts. Both masks are (N,) bool of the same length.
    """
    flagged = np.asarray(flagged)
    truth = np.asarray(truth)
    if flagged.dtype != bool or truth.dtype != bool or flagged.shape != truth.shape:
        raise ValueError(
            f"flagged and truth must be bool masks of one shape, got {flagged.dtype} "
            f"{flagged.shape} and {truth.dtype} {truth.shape}"
        )
    tp = int(np.sum(flagged & truth))
    n_flag, n_true = int(flagged.sum()), int(truth.sum())
    return {
        "precision": tp / n_flag if n_flag else float("nan"),
        "recall": tp / n_true if n_true else float("nan"),
        "f1": 2 * tp / (n_flag + n_true) if n_flag + n_true else 0.0,
        "flagged": n_flag,
        "truth": n_true,
        "true_positives": tp,
        "rows": int(flagged.size),
    }


def min_class_rows(ks: Sequence[int]) -> int:
    """Fewest rows a class needs: more than the largest k plus one eigenvalue for its gap."""
    return max(ks) + 2


def normalised_maps(maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(x, ok)``: (N, h*w) float64 maps divided by their sums (rows that are not ``ok``,
    non-finite or summing to <= 0, are left as zeros)."""
    flat = np.asarray(maps, np.float64).reshape(len(maps), -1)
    total = flat.sum(axis=1)
    ok = np.isfinite(flat).all(axis=1) & (total > 0)
    x = np.zeros_like(flat)
    x[ok] = flat[ok] / total[ok, None]
    return x, ok


def eigengap_k(eigenvalues: np.ndarray, ks: Sequence[int]) -> int:
    """The k in ``ks`` with the largest gap ``lambda_(k+1) - lambda_k`` (1-based, eigenvalues
    ascending); ties go to the smallest k."""
    lam = np.sort(np.asarray(eigenvalues, np.float64))
    usable = [k for k in sorted(ks) if k < len(lam)]
    if not usable:
        raise ValueError(f"{len(lam)} eigenvalues give no gap for any k in {list(ks)}")
    gaps = [lam[k] - lam[k - 1] for k in usable]
    return usable[int(np.argmax(gaps))]


@dataclass(frozen=True)
class ClassClustering:
    """SpRAy on one predicted class: ``rows`` (its rows' positions in the input), the
    embedding's ``eigenvalues`` (ascending), ``labels[k]`` (cluster of each of ``rows``) for
    every k, and the eigengap's ``k``."""

    cls: int
    rows: np.ndarray
    eigenvalues: np.ndarray
    labels: dict[int, np.ndarray]
    k: int

    def smallest_cluster(self) -> np.ndarray:
        """Positions (in the input) of the smallest cluster of the eigengap's clustering."""
        sizes = np.bincount(self.labels[self.k], minlength=self.k)
        return self.rows[self.labels[self.k] == int(np.argmin(sizes))]


def _pipeline_parts(n: int, seed: int) -> dict:
    """CoRelAy's processors for a class of ``n`` rows (its defaults, capped where ``n`` is
    small, ARPACK's start vector drawn from ``seed``)."""
    from corelay.processor.affinity import SparseKNN
    from corelay.processor.embedding import EigenDecomposition

    v0 = np.random.default_rng(seed).uniform(-1.0, 1.0, n)
    return {
        "affinity": SparseKNN(n_neighbors=min(N_NEIGHBORS, n - 1), symmetric=True),
        "embedding": EigenDecomposition(
            n_eigval=min(N_EIGVAL, n - 1), kwargs={"v0": v0}, is_output=True
        ),
    }


def cluster_class(x: np.ndarray, ks: Sequence[int], seed: int = 0):
    """SpRAy's spectral embedding of one class's normalised maps ``x`` (n, d) and its k-means
    labels for every k in ``ks``: ``(eigenvalues ascending, {k: labels})``."""
    from corelay.pipeline.spectral import SpectralEmbedding
    from corelay.processor.clustering import KMeans

    eigenvalues, eigenvectors = SpectralEmbedding(**_pipeline_parts(len(x), seed))(x)
    labels = {
        k: np.asarray(
            KMeans(n_clusters=k, kwargs={"random_state": seed, "n_init": 10})(eigenvectors)
        )
        for k in ks
    }
    return np.sort(eigenvalues), labels


def _check_inputs(maps: np.ndarray, predictions: np.ndarray, ks: Sequence[int]) -> None:
    if maps.ndim != 3:
        raise ValueError(f"maps must be (N, h, w), got shape {maps.shape}")
    if predictions.shape != (len(maps),):
        raise ValueError(f"predictions must be ({len(maps)},), got shape {predictions.shape}")
    if not ks or min(ks) < 2:
        raise ValueError(f"ks must be cluster counts >= 2, got {list(ks)}")


def spray_clusterings(
    maps: np.ndarray, predictions: np.ndarray, ks: Sequence[int] = KS, seed: int = 0
) -> tuple[list[ClassClustering], dict[str, int]]:
    """SpRAy per predicted class (see the module): the clusterings of every class with enough
    rows, and the counts of rows ``skipped`` by reason. ``predictions`` (N,) ints, < 0 for
    rows without one."""
    maps = np.asarray(maps)
    predictions = np.asarray(predictions, np.int64)
    ks = sorted(int(k) for k in ks)
    _check_inputs(maps, predictions, ks)
    x, ok = normalised_maps(maps)
    has_pred = predictions >= 0
    skipped = {
        "no prediction": int(np.sum(~has_pred)),
        "map not normalisable": int(np.sum(has_pred & ~ok)),
        "class too small": 0,
    }
    out = []
    for cls in np.unique(predictions[has_pred & ok]):
        rows = np.flatnonzero((predictions == cls) & ok)
        if len(rows) < min_class_rows(ks):
            skipped["class too small"] += len(rows)
            continue
        eigenvalues, labels = cluster_class(x[rows], ks, seed)
        out.append(
            ClassClustering(int(cls), rows, eigenvalues, labels, eigengap_k(eigenvalues, ks))
        )
    return out, skipped


def eigengap_flags(clusterings: Sequence[ClassClustering], n: int) -> np.ndarray:
    """(n,) bool: the analyst's reading — the smallest cluster of each class's eigengap
    clustering, every class."""
    flagged = np.zeros((n,), bool)
    for c in clusterings:
        flagged[c.smallest_cluster()] = True
    return flagged


def oracle_cluster(clusterings: Sequence[ClassClustering], truth: np.ndarray) -> dict:
    """The single cluster (any class, any k) with the best F1 against ``truth`` (ties: the
    first in class, k, cluster order): its class, k, cluster, row positions and scores."""
    best: dict | None = None
    for c in clusterings:
        for k, labels in c.labels.items():
            for j in range(k):
                flagged = np.zeros(truth.shape, bool)
                flagged[c.rows[labels == j]] = True
                s = flag_scores(flagged, truth)
                if best is None or s["f1"] > best["f1"]:
                    best = {"class": c.cls, "k": k, "cluster": j, **s}
                    best["row_positions"] = np.flatnonzero(flagged).tolist()
    if best is None:
        return {"class": None, "k": None, "cluster": None, "row_positions": []} | flag_scores(
            np.zeros(truth.shape, bool), truth
        )
    return best


def spray(
    maps: np.ndarray,
    predictions: np.ndarray,
    truth: np.ndarray,
    ks: Sequence[int] = KS,
    seed: int = 0,
) -> dict:
    """SpRAy side by side with a detector: its eigengap reading and its oracle-best cluster,
    each scored against ``truth`` (N,) bool by `flag_scores` (see the module for both rules).

    Returns a JSON-able dict: ``eigengap`` and ``oracle`` (scores; ``row_positions``: the
    flagged rows' positions in the input, to rescore against another truth), ``classes`` (per
    class: rows, eigengap k, cluster sizes, the leading eigenvalues), ``skipped`` and the
    ``settings``.
    """
    maps, truth = np.asarray(maps), np.asarray(truth)
    _check_inputs(maps, np.asarray(predictions), ks)
    if truth.dtype != bool or truth.shape != (len(maps),):
        raise ValueError(
            f"truth must be a ({len(maps)},) bool mask, got {truth.dtype} {truth.shape}"
        )
    clusterings, skipped = spray_clusterings(maps, predictions, ks, seed)
    flagged = eigengap_flags(clusterings, len(maps))
    eigengap = flag_scores(flagged, truth) | {"row_positions": np.flatnonzero(flagged).tolist()}
    classes = [
        {
            "class": c.cls,
            "rows": int(len(c.rows)),
            "eigengap_k": c.k,
            "cluster_sizes": np.bincount(c.labels[c.k], minlength=c.k).tolist(),
            "flagged_rows": int(len(c.smallest_cluster())),
            "eigenvalues": np.round(c.eigenvalues[: max(ks) + 2], 5).tolist(),
        }
        for c in clusterings
    ]
    return {
        "method": "SpRAy (CoRelAy 1.0.0), per predicted class",
        "settings": {
            "ks": sorted(int(k) for k in ks),
            "n_neighbors": N_NEIGHBORS,
            "n_eigval": N_EIGVAL,
            "seed": seed,
        },
        "rows": int(len(maps)),
        "skipped": skipped,
        "classes": classes,
        "eigengap": eigengap,
        "oracle": oracle_cluster(clusterings, truth),
    }


def store_inputs(store) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(ids, maps, predictions)`` of an audit's result store, row-aligned (`ResultStore`
    order); predictions -1 where a row has none (error rows)."""
    from fastfem.audit import ResultStore

    s = ResultStore(store)
    rows = s.read_rows()
    if "prediction" not in rows:
        raise ValueError(f"{store}: the store has no prediction column (SpRAy runs per class)")
    pred = np.asarray([-1 if p is None or p != p else int(p) for p in rows["prediction"]])
    return np.asarray(rows["id"]), s.read_maps(), pred


def side_by_side(name: str, out, split: str = "test") -> dict:
    """Audit configuration ``name`` of the shortcut benchmark (`benchmarks.shortcuts`, its own
    model) under ``out`` and score fastfem's flags and SpRAy's two readings against the planted
    marks with `flag_scores`."""
    from pathlib import Path

    from fastfem.audit import ResultStore
    from fastfem.audit.detectors import detect

    from .shortcuts import audit_split, test_split

    store, marked = audit_split(name, Path(out), split=split)
    _, ids, _, _, _ = test_split(name, split)
    rids, maps, pred = store_inputs(store)
    order = {rid: i for i, rid in enumerate(ids)}
    truth = marked[[order[str(r)] for r in rids]]
    det = detect(ResultStore(store))
    res = spray(maps, pred, truth)
    for reading in ("eigengap", "oracle"):
        res[reading].pop("row_positions")
    return {"config": name, "fastfem": flag_scores(det.flagged, truth), "spray": res}


def markdown_table(results: Sequence[dict]) -> str:
    """fastfem's flags beside SpRAy's eigengap reading and oracle-best cluster, per row."""

    def cell(s: dict) -> str:
        p = "–" if s["precision"] != s["precision"] else f"{s['precision']:.2f}"
        r = "–" if s["recall"] != s["recall"] else f"{s['recall']:.2f}"
        return f"{p} / {r} / {s['f1']:.2f}"

    lines = [
        "| planted shortcut | fastfem P / R / F1 | SpRAy eigengap P / R / F1 | SpRAy oracle "
        "P / R / F1 (class, k) |",
        "|---|---|---|---|",
    ]
    for r in results:
        o = r["spray"]["oracle"]
        lines.append(
            f"| {r['config']} | {cell(r['fastfem'])} | {cell(r['spray']['eigengap'])} | "
            f"{cell(o)} ({o['class']}, {o['k']}) |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.spray [--only NAME ...]``: every configuration of the shortcut
    benchmark (its test split, its own model), fastfem beside SpRAy; writes
    ``benchmarks/results/spray.{json,md}``."""
    import argparse
    import json
    import os
    import tempfile
    from pathlib import Path

    from benchmarks.shortcut_data import CONFIGS

    from .shortcuts import BUNDLED, RESULTS

    parser = argparse.ArgumentParser(description="SpRAy beside fastfem's flags")
    parser.add_argument("--only", nargs="*", help="configuration names (default: all)")
    args = parser.parse_args(argv)
    os.environ.setdefault("KERAS_BACKEND", "jax")
    names = args.only or [BUNDLED, *(c.name for c in CONFIGS)]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            results.append(side_by_side(name, Path(tmp) / name.replace("@", "-")))
            print(markdown_table(results[-1:]).splitlines()[-1], flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = {"command": "python -m benchmarks.spray", "results": results}
    (RESULTS / "spray.json").write_text(json.dumps(meta, indent=2) + "\n")
    (RESULTS / "spray.md").write_text(markdown_table(results))
    print(markdown_table(results))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
