"""k-means on the device, streaming over a store's map chunks (bounded memory).

Lloyd's algorithm on the Hellinger features of the maps (`fastfem.audit.detectors.energy`):

1. *Seed* (host, NumPy): k-means++ (Arthur & Vassilvitskii 2007) on a systematic sample of
   at most ``SEED_ROWS`` feature vectors (every ``ceil(n / SEED_ROWS)``-th ok row, in store
   order), then Lloyd iterations on that sample until no assignment changes; ``N_INIT``
   such starts (seeds ``SEED, SEED + 1, ...``), keeping the one of least inertia on the
   sample.
2. *Refine* (device): full Lloyd passes over the whole store, one chunk at a time: each
   chunk's features are assigned to their nearest centroid and summed per cluster on the
   device; a centroid becomes the mean of its members (a cluster left empty keeps its
   centroid). Stops when the inertia ``sum_i min_k |f_i - c_k|^2`` drops by less than ``TOL``
   (relative) or after ``MAX_PASSES`` passes.

Only the centroids (k x D), the per-cluster sums and the seed sample live across chunks, so
memory does not grow with the number of rows. Everything is deterministic for a given store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

SEED_ROWS = 4096
MAX_PASSES = 10
TOL = 1e-4
SEED = 0
N_INIT = 5


@jax.jit
def assign(features: jax.Array, centroids: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Nearest centroid of each feature vector and the squared distance to it."""
    d2 = (
        jnp.sum(features**2, axis=1, keepdims=True)
        - 2.0 * features @ centroids.T
        + jnp.sum(centroids**2, axis=1)[None, :]
    )
    d2 = jnp.maximum(d2, 0.0)
    label = jnp.argmin(d2, axis=1)
    return label.astype(jnp.int32), jnp.take_along_axis(d2, label[:, None], axis=1)[:, 0]


@partial(jax.jit, static_argnames="k")
def cluster_sums(
    features: jax.Array, valid: jax.Array, centroids: jax.Array, k: int
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(sums (k, D), counts (k,), inertia)`` of the valid rows assigned to ``centroids``."""
    label, d2 = assign(jnp.where(valid[:, None], features, 0.0), centroids)
    onehot = jax.nn.one_hot(label, k, dtype=jnp.float32) * valid[:, None]
    return (
        onehot.T @ jnp.where(valid[:, None], features, 0.0),
        onehot.sum(0),
        jnp.sum(jnp.where(valid, d2, 0.0)),
    )


def kmeans_plus_plus(features: np.ndarray, k: int, seed: int = SEED) -> np.ndarray:
    """k seeds from ``features`` (n, D): the first uniformly, each next with probability
    proportional to the squared distance to the nearest seed so far (NumPy, seeded)."""
    rng = np.random.default_rng(seed)
    x = np.asarray(features, np.float64)
    seeds = [x[rng.integers(x.shape[0])]]
    d2 = np.sum((x - seeds[0]) ** 2, axis=1)
    for _ in range(1, k):
        total = d2.sum()
        p = d2 / total if total > 0 else np.full(x.shape[0], 1.0 / x.shape[0])
        seeds.append(x[rng.choice(x.shape[0], p=p)])
        d2 = np.minimum(d2, np.sum((x - seeds[-1]) ** 2, axis=1))
    return np.stack(seeds)


def lloyd_in_memory(
    features: np.ndarray, starts: np.ndarray, max_iter: int = 100
) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd iterations on an in-memory sample (NumPy), from several starts at once, each
    until its assignment stops changing: ``(centroids (S, k, D), inertia (S,))`` for
    ``starts`` (S, k, D). A centroid left without members keeps its place. A start whose
    assignment no longer changes keeps its centroids, so running the starts together gives
    what running each alone gives."""
    x = np.asarray(features, np.float32)
    sq = np.sum(x**2, axis=1)
    c = np.asarray(starts, np.float32).copy()
    s, k, d = c.shape
    rows = np.arange(x.shape[0])
    prev = None
    for _ in range(max_iter):
        label = _nearest_per_start(x, c, sq)[0]  # (n, S): cluster of each row, per start
        if prev is not None and np.array_equal(label, prev):
            break
        prev = label
        flat = label + np.arange(s)[None, :] * k  # (n, S) index into the S * k centroids
        member = np.zeros((s * k, x.shape[0]), np.float32)
        member[flat.T.ravel(), np.tile(rows, s)] = 1.0
        counts = member.sum(axis=1)[:, None]
        sums = member @ x
        c = np.where(counts > 0, sums / np.maximum(counts, 1.0), c.reshape(s * k, d))
        c = c.reshape(s, k, d)
    return c, _nearest_per_start(x, c, sq)[1].sum(axis=0)


def _nearest_per_start(
    x: np.ndarray, c: np.ndarray, sq: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``(label (n, S), squared distance (n, S))`` of each row to each start's nearest
    centroid (``c`` (S, k, D), ``sq`` the rows' squared norms)."""
    s, k, d = c.shape
    flat = c.reshape(s * k, d)
    d2 = sq[:, None] - 2.0 * x @ flat.T + np.sum(flat**2, axis=1)[None, :]
    d2 = np.maximum(d2, 0.0).reshape(x.shape[0], s, k)
    label = np.argmin(d2, axis=2)
    return label, np.take_along_axis(d2, label[:, :, None], axis=2)[:, :, 0]


def seed_centroids(sample: np.ndarray, k: int, n_init: int = N_INIT) -> np.ndarray:
    """The best of ``n_init`` k-means++ starts refined on ``sample`` (least inertia; the
    first on a tie)."""
    starts = np.stack([kmeans_plus_plus(sample, k, SEED + i) for i in range(n_init)])
    centroids, inertia = lloyd_in_memory(sample, starts)
    return centroids[int(np.argmin(inertia))]


def streaming_kmeans(
    chunks: Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]],
    sample: np.ndarray,
    k: int,
    max_passes: int = MAX_PASSES,
    tol: float = TOL,
) -> tuple[np.ndarray, float]:
    """``(centroids (k, D), inertia)`` of Lloyd passes over ``chunks()`` — an iterable of
    ``(features (B, D), valid (B,))`` — seeded from ``sample`` (see the module docstring).

    ``k`` is capped at the number of distinct sample rows.
    """
    k = int(min(k, len(np.unique(sample, axis=0))))
    centroids = seed_centroids(sample, k)
    inertia = np.inf
    for _ in range(max_passes):
        sums = np.zeros_like(centroids)
        counts = np.zeros((k,), np.float64)
        total = 0.0
        c = jnp.asarray(centroids)
        for feats, valid in chunks():
            s, n, e = cluster_sums(jnp.asarray(feats), jnp.asarray(valid), c, k)
            sums += np.asarray(s)
            counts += np.asarray(n)
            total += float(e)
        centroids = np.where(
            counts[:, None] > 0, sums / np.maximum(counts, 1.0)[:, None], centroids
        )
        done = np.isfinite(inertia) and inertia - total <= tol * max(inertia, 1e-12)
        inertia = total
        if done:
            break
    return centroids.astype(np.float32), inertia
