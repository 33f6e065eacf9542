"""Explanation clusters: k-means of a store's maps on the device, streaming, with per-cluster
and per-class summaries.

Every ``ok`` row's map becomes its Hellinger feature vector (`energy.hellinger_features`, a
``CLUSTER_GRID x CLUSTER_GRID`` grid) and the rows are grouped by k-means
(`kmeans.streaming_kmeans`, ``k = K_CLUSTERS`` or fewer when there are fewer distinct maps).
A final pass over the store assigns every row and sums, per cluster and per class, the pooled
energy on the finer ``DETAIL_GRID`` (where hot spots are located, `hotspots`) and the energy
distribution ``q`` at the maps' own resolution (for display), so the mean maps of every cluster
come out of one streaming pass; `class_mean_maps` is the same per class (the report's view).
Error rows (NaN maps) are in no cluster (label -1).

Members are ranked by their distance to the centroid (closest first: the most typical member).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from fastfem.audit.detectors.energy import (
    CLUSTER_GRID,
    DETAIL_GRID,
    energy_distribution,
    grid_shape,
    hellinger_features,
    pooled_energy,
)
from fastfem.audit.detectors.kmeans import SEED_ROWS, assign, streaming_kmeans
from fastfem.audit.detectors.shards import CHUNK_ROWS, map_chunks
from fastfem.audit.store.parts import ResultStore

__all__ = ["CHUNK_ROWS", "K_CLUSTERS", "ClusterStats", "class_mean_maps", "explanation_clusters"]

#: Number of clusters (fewer when the store has fewer distinct maps).
K_CLUSTERS = 8


@dataclass(frozen=True)
class ClusterStats:
    """The clusters of one store.

    ``label`` (N,) cluster per row (-1 for error rows), ``distance`` (N,) squared Hellinger
    distance to the centroid (NaN for error rows), ``sizes`` (k,), ``detail_sums`` (k, dh, dw)
    sums of the pooled energy on the detail grid, ``map_sums`` (k, h, w) sums of ``q``,
    ``inertia`` the k-means objective.
    """

    label: np.ndarray
    distance: np.ndarray
    sizes: np.ndarray
    detail_sums: np.ndarray
    map_sums: np.ndarray
    inertia: float

    @property
    def k(self) -> int:
        return int(self.sizes.shape[0])

    def mean_detail(self) -> np.ndarray:
        """(k, dh, dw) mean pooled energy of each cluster on the detail grid (zeros for an
        empty one)."""
        return self.detail_sums / np.maximum(self.sizes, 1)[:, None, None]

    def mean_maps(self) -> np.ndarray:
        """(k, h, w) mean energy distribution of each cluster at the maps' resolution."""
        return self.map_sums / np.maximum(self.sizes, 1)[:, None, None]

    def ranked_members(self, cluster: int) -> np.ndarray:
        """Row indices of ``cluster``'s members, closest to the centroid first."""
        members = np.flatnonzero(self.label == cluster)
        return members[np.argsort(self.distance[members], kind="stable")]


@partial(jax.jit, static_argnames="grid")
def chunk_features(maps: jax.Array, ok: jax.Array, grid: int) -> tuple[jax.Array, jax.Array]:
    """``(features, valid)`` of a chunk: Hellinger features; valid = ok and finite."""
    feats = hellinger_features(maps, grid)
    valid = ok & jnp.all(jnp.isfinite(feats), axis=1)
    return jnp.where(valid[:, None], feats, 0.0), valid


@partial(jax.jit, static_argnames=("k", "grid"))
def chunk_summaries(
    maps: jax.Array, ok: jax.Array, centroids: jax.Array, k: int, grid: int
) -> dict[str, jax.Array]:
    """Assignments of a chunk and its per-cluster sums (see the module)."""
    feats, valid = chunk_features(maps, ok, grid)
    label, d2 = assign(feats, centroids)
    member = jax.nn.one_hot(label, k, dtype=jnp.float32) * valid[:, None]
    detail = pooled_energy(maps, DETAIL_GRID).reshape(maps.shape[0], -1)
    detail = jnp.where(valid[:, None], detail, 0.0)
    q = energy_distribution(maps)
    q = jnp.where(valid[:, None, None], q, 0.0).reshape(q.shape[0], -1)
    return {
        "label": jnp.where(valid, label, -1),
        "distance": jnp.where(valid, d2, jnp.nan),
        "sizes": member.sum(0),
        "detail_sums": member.T @ detail,
        "map_sums": member.T @ q,
    }


def _chunks_with_ok(
    store: ResultStore, ok: np.ndarray
) -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
    for chunk in map_chunks(store):
        mask = np.zeros((chunk.maps.shape[0],), bool)
        mask[: chunk.count] = ok[chunk.start : chunk.start + chunk.count]
        yield chunk.start, chunk.count, chunk.maps, mask


def _seed_sample(store: ResultStore, ok: np.ndarray, grid: int) -> np.ndarray:
    """Features of every ``ceil(n_ok / SEED_ROWS)``-th ok row (store order)."""
    step = max(1, -(-int(ok.sum()) // SEED_ROWS))
    rank = np.cumsum(ok) - 1  # position among the ok rows
    keep = ok & (rank % step == 0)
    out = []
    for start, count, maps, mask in _chunks_with_ok(store, ok):
        feats, valid = chunk_features(jnp.asarray(maps), jnp.asarray(mask), grid)
        sel = np.asarray(valid)[:count] & keep[start : start + count]
        out.append(np.asarray(feats)[:count][sel])
    return np.concatenate(out) if out else np.zeros((0, 1), np.float32)


def explanation_clusters(
    store: ResultStore, ok: np.ndarray, k: int = K_CLUSTERS, grid: int = CLUSTER_GRID
) -> ClusterStats | None:
    """Cluster the ok rows' maps of ``store`` (see the module); None when no row is ok.

    ``ok`` (N,) bool is aligned with `ResultStore.read_rows`.
    """
    shape = store.read_map_shape()
    if shape is None or not ok.any():
        return None
    sample = _seed_sample(store, ok, grid)
    if sample.shape[0] == 0:
        return None

    def feature_chunks():
        for _, _, maps, mask in _chunks_with_ok(store, ok):
            yield chunk_features(jnp.asarray(maps), jnp.asarray(mask), grid)

    centroids, inertia = streaming_kmeans(feature_chunks, sample, k)
    k = centroids.shape[0]
    n = ok.shape[0]
    label = np.full((n,), -1, np.int32)
    distance = np.full((n,), np.nan, np.float32)
    dh, dw = grid_shape(shape, DETAIL_GRID)
    acc = {
        "sizes": np.zeros((k,)),
        "detail_sums": np.zeros((k, dh * dw)),
        "map_sums": np.zeros((k, shape[0] * shape[1])),
    }
    c = jnp.asarray(centroids)
    for start, count, maps, mask in _chunks_with_ok(store, ok):
        out = chunk_summaries(jnp.asarray(maps), jnp.asarray(mask), c, k, grid)
        label[start : start + count] = np.asarray(out["label"])[:count]
        distance[start : start + count] = np.asarray(out["distance"])[:count]
        for name in acc:
            acc[name] += np.asarray(out[name], np.float64)
    h, w = shape
    return ClusterStats(
        label=label,
        distance=distance,
        sizes=acc["sizes"].round().astype(np.int64),
        detail_sums=acc["detail_sums"].reshape(k, dh, dw),
        map_sums=acc["map_sums"].reshape(k, h, w),
        inertia=float(inertia),
    )


@partial(jax.jit, static_argnames="classes")
def chunk_class_sums(
    maps: jax.Array, ok: jax.Array, cls: jax.Array, classes: int
) -> tuple[jax.Array, jax.Array]:
    """``(sizes (C,), sums of q (C, h * w))`` of a chunk's valid rows per class index."""
    q = energy_distribution(maps)
    valid = ok & jnp.all(jnp.isfinite(q), axis=(1, 2))
    q = jnp.where(valid[:, None, None], q, 0.0).reshape(q.shape[0], -1)
    in_class = jax.nn.one_hot(cls, classes, dtype=jnp.float32) * valid[:, None]
    return in_class.sum(0), in_class.T @ q


def class_mean_maps(
    store: ResultStore, ok: np.ndarray, classes: np.ndarray, n_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(sizes (C,), mean energy distribution per class (C, h, w))`` in one streaming pass
    (the report's per-class view; ``classes`` (N,) class index per row, -1: none)."""
    shape = store.read_map_shape()
    if shape is None or n_classes == 0:
        return np.zeros((0,), np.int64), np.zeros((0, 1, 1))
    sizes = np.zeros((n_classes,))
    sums = np.zeros((n_classes, shape[0] * shape[1]))
    for start, count, maps, mask in _chunks_with_ok(store, ok):
        cls = np.full((maps.shape[0],), -1, np.int32)
        cls[:count] = classes[start : start + count]
        n, s = chunk_class_sums(jnp.asarray(maps), jnp.asarray(mask), jnp.asarray(cls), n_classes)
        sizes += np.asarray(n)
        sums += np.asarray(s)
    means = sums / np.maximum(sizes, 1)[:, None]
    return sizes.round().astype(np.int64), means.reshape(n_classes, *shape)
