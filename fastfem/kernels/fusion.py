"""MLFEM fusion: several per-layer maps of ONE sample -> one map (Bourroux et al. 2022).

Each layer's map ``m_l`` has already been resized to the input size (H, W) and brought to
[0, 1] (`fastfem.kernels.mlfem.layer_map`); the ``L`` maps are then fused (``fusion=``)::

    mean      F = (1 / L) sum_l m_l
    product   F = prod_l m_l
    weighted  F = sum_l a_l m_l / sum_l a_l          (user weights a_l >= 0, sum > 0)

All three keep F in [0, 1]. Here F is not re-normalised (a product of maps that peak in
different places stays small everywhere, which is the point of that rule); only the ``gradcam``
variant min-maxes it afterwards (`fastfem.kernels.mlfem`). Per sample; callers vmap.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

Fusion = Literal["mean", "product", "weighted"]
FUSIONS: tuple[str, ...] = ("mean", "product", "weighted")
#: A map whose range is at most this fraction of its largest magnitude is treated as constant.
CONSTANT_MAP_RTOL = 1e-6


def check_fusion(
    fusion: str, weights: Sequence[float] | np.ndarray | None, n_layers: int
) -> np.ndarray | None:
    """Validate ``fusion`` and its weights; return the weights as float32 (L,) or None.

    Raises ValueError for an unknown rule, weights given for a rule that takes none, missing
    weights for ``weighted``, a length other than ``n_layers``, negative or non-finite weights,
    or weights that sum to 0.
    """
    if fusion not in FUSIONS:
        raise ValueError(f"unknown fusion {fusion!r}; expected one of {FUSIONS}")
    if fusion != "weighted":
        if weights is not None:
            raise ValueError(f"weights are only used with fusion='weighted', not {fusion!r}")
        return None
    if weights is None:
        raise ValueError(f"fusion='weighted' needs weights=, one per layer ({n_layers} layers)")
    a = np.asarray(weights, dtype=np.float64)
    if a.shape != (n_layers,):
        raise ValueError(
            f"fusion='weighted' needs one weight per layer: {n_layers} layers, got weights of "
            f"shape {a.shape}"
        )
    if not np.all(np.isfinite(a)) or np.any(a < 0):
        raise ValueError(f"fusion weights must be finite and >= 0; got {a.tolist()}")
    if a.sum() <= 0:
        raise ValueError("fusion weights sum to 0; give at least one layer a positive weight")
    return a.astype(np.float32)


def unit_normalize(m: jax.Array) -> jax.Array:
    """Min-max one map to [0, 1]: ``(m - min m) / (max m - min m)``; a constant map gives 0.

    "Constant" is relative: ``max m - min m <= 1e-6 * max|m|`` (also catches float rounding of
    a constant map). Unlike an absolute ``+ eps`` in the denominator (pytorch-grad-cam's
    ``1e-7``, kept by FEM's ``gradcam`` variant for parity), this is exactly invariant to the
    map's scale, so tiny activations are normalised like large ones. Used by MLFEM (each
    layer's map, variants other than ``gradcam``) and FAM (each pair's map).
    """
    m = m.astype(jnp.float32)
    lo, hi = jnp.min(m), jnp.max(m)
    span = hi - lo
    ok = span > CONSTANT_MAP_RTOL * jnp.maximum(jnp.abs(hi), jnp.abs(lo))
    return jnp.where(ok, (m - lo) / jnp.where(ok, span, 1.0), 0.0)


def fuse_maps(
    maps: jax.Array, fusion: Fusion = "mean", weights: jax.Array | np.ndarray | None = None
) -> jax.Array:
    """Fuse ONE sample's per-layer maps (L, H, W), each already in [0, 1] -> (H, W).

    ``weights`` (L,) are used by ``weighted`` only (validate them with `check_fusion`).
    """
    if fusion not in FUSIONS:
        raise ValueError(f"unknown fusion {fusion!r}; expected one of {FUSIONS}")
    maps = maps.astype(jnp.float32)
    if fusion == "mean":
        return jnp.mean(maps, axis=0)
    if fusion == "product":
        return jnp.prod(maps, axis=0)
    if weights is None:
        raise ValueError("fusion='weighted' needs weights")
    a = jnp.asarray(weights, jnp.float32)
    return jnp.einsum("l,lhw->hw", a / jnp.sum(a), maps, precision=jax.lax.Precision.HIGHEST)
