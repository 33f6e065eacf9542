"""Hot spots: where a cluster's maps put their energy, compared with the rest of the dataset.

On the detail grid (`energy.DETAIL_GRID`, ``D`` cells), with ``q_i`` row i's pooled energy and
``M_k`` the mean of cluster k's members (`clusters.ClusterStats.mean_detail`):

* hot spot ``H_k = {c : M_k(c) >= HOT_FRACTION * max M_k}``, template ``T_k = M_k`` on ``H_k``;
* every ok row's hot-spot energy ``e_ik = sum_{c in H_k} q_i(c)`` and *coverage*

      cov_ik = sum_{c in H_k} T_k(c) [q_i(c) >= TAU T_k(c)] / sum_{c in H_k} T_k(c)

  the share of the hot spot (weighted by the members' mean energy) where row i has at least
  ``TAU`` of the members' mean energy: 1 when the row reproduces the whole hot spot, small when
  it lights only part of it (an object that touches one end of a line);
* *agreement* — do the members carry the hot spot's energy alike? Its variation is the mean,
  over the hot cells, of the members' coefficient of variation:

      variation_k = mean_{c in H_k} std_{i in k} q_i(c) / M_k(c)

  Objects sit at different places and have different sizes in every image, so a given cell
  is sometimes inside the object and sometimes not (variation ~0.7-1); a mark at a fixed
  place gives every member nearly the same energy on the same cells (variation ~0.1-0.4);
* spatial consensus — the cluster's *contrast* with the rest of the dataset:

      contrast_k = mean_{i in k} e_ik / (mean_{i ok, not in k} e_ik + EPS)

  how many times more energy the members put on their hot spot than the other maps of the
  dataset put there ("away from where the objects are": a hot spot that other images'
  objects also light has a low contrast).

``e``, ``cov`` and the members' squared deviations from ``M_k`` (for the standard deviation,
from the finished mean: no cancellation) come from one streaming pass on the device.

A cluster is a *shortcut candidate* when ``variation_k <= MAX_VARIATION``, ``contrast_k >=
MIN_CONTRAST`` and it has at least ``MIN_MEMBERS`` members; its score is
``min(MAX_VARIATION / variation_k, contrast_k / MIN_CONTRAST)`` (>= 1 for a candidate).

Every ok row — member or not — is flagged when it covers a candidate's hot spot,
``cov_ik >= MIN_COVERAGE``, with a concentrated share of its energy there,
``e_ik >= MIN_ROW_LIFT |H_k| / D`` (``MIN_ROW_LIFT`` times what a uniform map puts on the hot
spot); its score is ``cov_ik / MIN_COVERAGE`` (>= 1) and its cluster that candidate. A row on
several candidates' hot spots takes the largest score (ties: the larger ``e_ik``).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from fastfem.audit.detectors.clusters import ClusterStats
from fastfem.audit.detectors.energy import DETAIL_GRID, pooled_energy
from fastfem.audit.detectors.shards import map_chunks
from fastfem.audit.store.parts import ResultStore

HOT_FRACTION = 0.5
TAU = 0.1
MIN_COVERAGE = 0.8
MIN_ROW_LIFT = 2.0
MAX_VARIATION = 0.5
MIN_CONTRAST = 5.0
MIN_MEMBERS = 5
EPS = 1e-3


def hot_spots(mean_detail: np.ndarray) -> np.ndarray:
    """(k, dh, dw) bool: ``M_k >= HOT_FRACTION * max M_k`` per cluster (none for an all-zero
    mean)."""
    peak = mean_detail.max(axis=(1, 2), keepdims=True)
    return (mean_detail >= HOT_FRACTION * peak) & (peak > 0)


def variation(mean_detail: np.ndarray, std_detail: np.ndarray, hot: np.ndarray) -> np.ndarray:
    """(k,) mean over each hot spot of the members' coefficient of variation ``std / mean``
    (infinite for an empty hot spot)."""
    out = np.full((hot.shape[0],), np.inf)
    for j in range(hot.shape[0]):
        if hot[j].any():
            out[j] = float(np.mean(std_detail[j][hot[j]] / mean_detail[j][hot[j]]))
    return out


@jax.jit
def chunk_hot_match(
    maps: jax.Array, ok: jax.Array, label: jax.Array, mean: jax.Array, template: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(e, cov)``, each (B, k), of a chunk against the templates (k, dh, dw) (``T_k`` on
    ``H_k``, 0 elsewhere; NaN for rows that are not ok or not finite), and the per-cluster
    sums (k, dh * dw) of the members' squared deviation ``(q_i - M_k)^2`` from their
    cluster's mean (rows with ``label`` -1 add nothing)."""
    q = pooled_energy(maps, DETAIL_GRID).reshape(maps.shape[0], -1)
    t = template.reshape(template.shape[0], -1)
    hot = t > 0
    e = q @ hot.T.astype(jnp.float32)
    hit = (q[:, None, :] >= TAU * t[None, :, :]) & hot[None, :, :]
    cov = jnp.sum(jnp.where(hit, t[None, :, :], 0.0), axis=2) / jnp.sum(t, axis=1)[None, :]
    valid = ok & jnp.all(jnp.isfinite(q), axis=1)
    m = mean.reshape(mean.shape[0], -1)
    member = jax.nn.one_hot(label, m.shape[0], dtype=jnp.float32) * valid[:, None]
    dev = jnp.where(valid[:, None], q - m[jnp.maximum(label, 0)], 0.0)
    nan = jnp.nan
    return jnp.where(valid[:, None], e, nan), jnp.where(valid[:, None], cov, nan), member.T @ dev**2


def hot_match(
    store: ResultStore, ok: np.ndarray, label: np.ndarray, mean: np.ndarray, template: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, k) ``e_ik`` and ``cov_ik`` of every row of the store (NaN for error rows) and the
    (k, dh, dw) standard deviation of each cluster's members around ``mean``, in one
    streaming pass (the deviations from the finished mean: no cancellation)."""
    k = template.shape[0]
    e_all = np.full((ok.shape[0], k), np.nan, np.float32)
    cov_all = np.full_like(e_all, np.nan)
    sq = np.zeros((k, mean.shape[1] * mean.shape[2]))
    t = jnp.asarray(template, jnp.float32)
    mu = jnp.asarray(mean, jnp.float32)
    for chunk in map_chunks(store):
        rows = slice(chunk.start, chunk.start + chunk.count)
        mask = np.zeros((chunk.maps.shape[0],), bool)
        mask[: chunk.count] = ok[rows]
        lab = np.full((chunk.maps.shape[0],), -1, np.int32)
        lab[: chunk.count] = label[rows]
        e, cov, dev = chunk_hot_match(
            jnp.asarray(chunk.maps), jnp.asarray(mask & (lab >= 0)), jnp.asarray(lab), mu, t
        )
        e_all[rows] = np.asarray(e)[: chunk.count]
        cov_all[rows] = np.asarray(cov)[: chunk.count]
        sq += np.asarray(dev, np.float64)
    sizes = np.bincount(label[label >= 0], minlength=k)[:k]
    std = np.sqrt(sq / np.maximum(sizes, 1)[:, None]).reshape(mean.shape)
    return e_all, cov_all, std


def contrast(energy: np.ndarray, label: np.ndarray) -> np.ndarray:
    """(k,) ``mean e_ik over members / (mean e_ik over the other ok rows + EPS)``."""
    k = energy.shape[1]
    out = np.zeros((k,), np.float64)
    ok = label >= 0
    for j in range(k):
        members = label == j
        rest = ok & ~members
        inside = float(np.mean(energy[members, j])) if members.any() else 0.0
        outside = float(np.mean(energy[rest, j])) if rest.any() else 0.0
        out[j] = inside / (outside + EPS)
    return out


@dataclass(frozen=True)
class HotSpotResult:
    """``hot`` (k, dh, dw) hot spots, ``energy`` and ``coverage`` (N, k); per cluster (k,)
    ``contrast``, ``variation``, ``cluster_score`` and ``candidate``; per row ``score`` (N,)
    (0 when not flagged) and ``cluster`` (N,) (the candidate whose hot spot fired, -1 when
    none)."""

    hot: np.ndarray
    energy: np.ndarray
    coverage: np.ndarray
    contrast: np.ndarray
    variation: np.ndarray
    cluster_score: np.ndarray
    candidate: np.ndarray
    score: np.ndarray
    cluster: np.ndarray


def row_flags(
    energy: np.ndarray, coverage: np.ndarray, candidate: np.ndarray, hot: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per row ``(score, cluster)``: the best candidate hot spot the row covers (module)."""
    n = energy.shape[0]
    e = np.nan_to_num(energy, nan=0.0)
    floor = MIN_ROW_LIFT * hot.reshape(hot.shape[0], -1).mean(axis=1)  # uniform share on H_k
    fires = (
        candidate[None, :]
        & (np.nan_to_num(coverage, nan=0.0) >= MIN_COVERAGE)
        & (e >= floor[None, :])
    )
    ratio = np.where(fires, np.nan_to_num(coverage, nan=0.0) / MIN_COVERAGE, 0.0)
    if ratio.shape[1] == 0:
        return np.zeros((n,)), np.full((n,), -1, np.int32)
    key = ratio + 1e-6 * e * fires  # ties on coverage: the larger energy
    best = np.argmax(key, axis=1)
    score = ratio[np.arange(n), best]
    return score, np.where(score > 0, best, -1).astype(np.int32)


def hot_spot_flags(store: ResultStore, ok: np.ndarray, stats: ClusterStats) -> HotSpotResult:
    """Candidates and per-row flags of the module docstring."""
    mean = stats.mean_detail()
    hot = hot_spots(mean)
    energy, coverage, std = hot_match(store, ok, stats.label, mean, np.where(hot, mean, 0.0))
    con = contrast(energy, stats.label)
    var = variation(mean, std, hot)
    cluster_score = np.minimum(MAX_VARIATION / np.maximum(var, 1e-12), con / MIN_CONTRAST)
    candidate = (cluster_score >= 1.0) & (stats.sizes >= MIN_MEMBERS)
    score, cluster = row_flags(energy, coverage, candidate, hot)
    return HotSpotResult(
        hot=hot,
        energy=energy,
        coverage=coverage,
        contrast=con,
        variation=var,
        cluster_score=cluster_score,
        candidate=candidate,
        score=score,
        cluster=cluster,
    )
