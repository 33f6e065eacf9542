"""Maps as energy distributions on a coarse grid: the common input of the shortcut detectors.

For a map ``m`` (h, w) the energy is its positive part and ``q = max(m, 0) / sum(max(m, 0))``
its distribution (uniform when the map has no positive energy), as in
`fastfem.kernels.map_stats`. Detectors compare maps of one store on a grid of at most
``g x g`` cells: ``Q = P_h q P_w^T`` sums ``q`` over the grid's cells, where ``P_h`` (g, h)
holds the fraction of each map row that falls in each grid row (the map's rows cut into ``g``
equal intervals; a map row split between two grid rows shares its energy in proportion), so
``sum Q = 1`` for every map. A map already at most ``g`` cells tall (wide) keeps its height
(width).

Clustering uses ``sqrt(Q)`` flattened: the Euclidean distance of two such vectors is (up to
``sqrt 2``) the Hellinger distance of the two distributions, so k-means groups maps that put
their energy in the same places, whatever the maps' scale.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

#: Side of the clustering grid (cells).
CLUSTER_GRID = 8
#: Side of the finer grid on which hot spots are located and matched.
DETAIL_GRID = 16


def pool_matrix(n: int, g: int) -> np.ndarray:
    """``(min(g, n), n)`` float32: row ``a`` holds the fraction of each of the ``n`` source
    cells that lies in grid cell ``a`` (source cell ``y`` covers ``[y, y+1) * g / n``); every
    column sums to 1. Identity when ``n <= g``."""
    if n <= g:
        return np.eye(n, dtype=np.float32)
    edges = np.arange(n + 1, dtype=np.float64) * g / n  # source cell y: [edges[y], edges[y+1])
    lo = np.maximum(edges[None, :-1], np.arange(g)[:, None])
    hi = np.minimum(edges[None, 1:], np.arange(g)[:, None] + 1)
    return (np.clip(hi - lo, 0.0, None) * n / g).astype(np.float32)


def grid_shape(map_shape: tuple[int, int], g: int) -> tuple[int, int]:
    """The grid of an (h, w) map: ``(min(g, h), min(g, w))``."""
    return min(g, int(map_shape[0])), min(g, int(map_shape[1]))


def energy_distribution(maps: jax.Array) -> jax.Array:
    """``q`` of each map of a batch (B, h, w): positive part over its sum, uniform where the
    map has no positive energy. NaN maps (error rows) stay NaN."""
    p = jnp.maximum(maps.astype(jnp.float32), 0.0)
    total = jnp.sum(p, axis=(1, 2), keepdims=True)
    uniform = jnp.full_like(p, 1.0 / (p.shape[1] * p.shape[2]))
    q = jnp.where(total > 0, p / jnp.where(total > 0, total, 1.0), uniform)
    return jnp.where(jnp.isnan(total), jnp.nan, q)


def pooled_energy(maps: jax.Array, g: int) -> jax.Array:
    """``Q = P_h q P_w^T`` of each map of a batch (B, h, w) -> (B, gh, gw), summing to 1."""
    ph = jnp.asarray(pool_matrix(maps.shape[1], g))
    pw = jnp.asarray(pool_matrix(maps.shape[2], g))
    q = energy_distribution(maps)
    return jnp.einsum("ay,byx,cx->bac", ph, q, pw)


def hellinger_features(maps: jax.Array, g: int = CLUSTER_GRID) -> jax.Array:
    """``sqrt(Q)`` flattened, (B, gh * gw): the clustering features of a batch of maps."""
    pooled = pooled_energy(maps, g)
    return jnp.sqrt(pooled.reshape(pooled.shape[0], -1))
