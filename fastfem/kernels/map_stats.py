"""Statistics of one explanation map, on device: where the map puts its energy.

For a map ``m`` (h, w) at feature resolution, the *energy* is its positive part
``p = max(m, 0)`` (FEM maps of linear layers can be negative; the negative part is not where the
model "looks"), and ``q = p / sum(p)`` its distribution (uniform when ``sum(p) = 0``, so every
statistic stays finite for a constant or all-negative map).

- ``peak_y``, ``peak_x``: where the map peaks, at sub-cell precision, as a fraction of the
  height/width, in (0, 1): the centre of the argmax cell ``(i, j)`` moved by the centroid
  ``(dy, dx) = sum_k v_k (a_k, b_k) / sum_k v_k`` of the 3 x 3 cells ``(i + a_k, j + b_k)``,
  ``a_k, b_k`` in {-1, 0, 1}, around it (cells outside the map left out), each weighted by its
  value above the block's minimum, ``v_k = m[i + a_k, j + b_k] - min_k m[...]`` (no move
  when the block is flat): ``peak_y = (i + 0.5 + dy) / h``. A mark that lies across two
  cells of a coarse map has its peak between them, not on the cell that happens to be a
  little higher (`peak_refinement`).
- ``border_energy``: ``sum q`` over the band of ``b = max(1, round(band * min(h, w)))`` cells
  along the four edges.
- ``corner_energy``: the largest ``sum q`` over the four ``b x b`` corner blocks.
- ``entropy``: ``-sum q log q / log(h w)`` in [0, 1] (1 = spread evenly, 0 = one cell).
- ``frac_above``: fraction of cells with ``m >= threshold * max(m)`` (when ``max(m) > 0``, else 0).

Not stored, read by the reliance test's probe that follows each row's map peak
(`fastfem.audit.reliance.peaks`): the map's **peak contrast** ``h w max q``, the peak cell's
share of the energy over a uniform map's (1 for a flat map, ``h w`` for a single hot cell):
how much one place dominates the map (`peak_contrast`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

#: Fraction of min(h, w) taken as the border band / corner block side.
DEFAULT_BAND = 0.125
#: Relative threshold of ``frac_above``.
DEFAULT_THRESHOLD = 0.5


class MapStats(NamedTuple):
    """Per-map statistics (float32 scalars; batched: one array per field)."""

    peak_y: jax.Array
    peak_x: jax.Array
    border_energy: jax.Array
    corner_energy: jax.Array
    entropy: jax.Array
    frac_above: jax.Array


def band_cells(h: int, w: int, band: float = DEFAULT_BAND) -> int:
    """Side ``b`` (in cells) of the border band and corner blocks of an (h, w) map."""
    return max(1, round(band * min(h, w)))


def energy_distribution(m: jax.Array) -> jax.Array:
    """``q = max(m, 0) / sum(max(m, 0))``, or uniform when the map has no positive energy."""
    p = jnp.maximum(m.astype(jnp.float32), 0.0)
    total = jnp.sum(p)
    uniform = jnp.full_like(p, 1.0 / p.size)
    return jnp.where(total > 0, p / jnp.where(total > 0, total, 1.0), uniform)


def peak_refinement(m: jax.Array, i: jax.Array, j: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(dy, dx)`` in [-1, 1] (cells): the centroid of the 3 x 3 block of the (h, w) map
    ``m`` around cell ``(i, j)``, cells outside the map left out, each weighted by its value
    above the block's minimum; ``(0, 0)`` for a flat block (module docstring)."""
    padded = jnp.pad(m.astype(jnp.float32), 1, constant_values=jnp.nan)
    block = jax.lax.dynamic_slice(padded, (i, j), (3, 3))
    inside = ~jnp.isnan(block)
    floor = jnp.min(jnp.where(inside, block, jnp.inf))
    v = jnp.where(inside, block - floor, 0.0)
    total = jnp.sum(v)
    offsets = jnp.arange(-1.0, 2.0)
    safe = jnp.where(total > 0, total, 1.0)
    dy = jnp.where(total > 0, jnp.sum(v.sum(axis=1) * offsets) / safe, 0.0)
    dx = jnp.where(total > 0, jnp.sum(v.sum(axis=0) * offsets) / safe, 0.0)
    return dy, dx


def peak_contrast(m: jax.Array) -> jax.Array:
    """``h w max q`` of ONE map (h, w), float32: its peak cell's share of the energy over a
    uniform map's (module docstring; 1 for a flat or all-negative map). Vmap it for a batch."""
    q = energy_distribution(m)
    return (q.size * jnp.max(q)).astype(jnp.float32)


def map_stats(
    m: jax.Array, band: float = DEFAULT_BAND, threshold: float = DEFAULT_THRESHOLD
) -> MapStats:
    """Statistics of ONE map (h, w); see the module docstring. Vmap it for a batch."""
    h, w = m.shape
    q = energy_distribution(m)
    b = band_cells(h, w, band)
    flat = jnp.argmax(m)
    i, j = flat // w, flat % w
    dy, dx = peak_refinement(m, i, j)
    peak_y = (i + 0.5 + dy) / h
    peak_x = (j + 0.5 + dx) / w
    inner = q[b : h - b, b : w - b] if (h > 2 * b and w > 2 * b) else jnp.zeros((0,))
    border = 1.0 - jnp.sum(inner)
    corners = jnp.stack(
        [q[:b, :b].sum(), q[:b, w - b :].sum(), q[h - b :, :b].sum(), q[h - b :, w - b :].sum()]
    )
    entropy = -jnp.sum(jnp.where(q > 0, q * jnp.log(jnp.where(q > 0, q, 1.0)), 0.0))
    entropy = entropy / jnp.log(float(h * w)) if h * w > 1 else jnp.zeros(())
    peak = jnp.max(m)
    frac = jnp.where(peak > 0, jnp.mean(m >= threshold * peak), 0.0)
    f32 = jnp.float32
    return MapStats(
        peak_y=peak_y.astype(f32),
        peak_x=peak_x.astype(f32),
        border_energy=border.astype(f32),
        corner_energy=jnp.max(corners).astype(f32),
        entropy=entropy.astype(f32),
        frac_above=frac.astype(f32),
    )
