"""MLFEM (Bourroux et al. 2022): FEM at several layers, each at the input size, fused.

For a batch with the activations ``A_l`` (N, h_l, w_l, C_l) of L layers, per sample::

    m_l = unit_normalize(resize(fem(A_l), (H, W)))        (the variant's resize)
    F   = fuse(m_1, ..., m_L)                               (`fastfem.kernels.fusion`)

``fem`` is the FEM formula of `fastfem.kernels.fem` (same ``k`` and ``variant`` for every layer),
``unit_normalize`` a min-max to [0, 1] with a relative guard for constant maps.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .fem import Variant, fem_map, fem_resize
from .fusion import Fusion, fuse_maps, unit_normalize


def mlfem_maps(
    activations: Sequence[jax.Array],
    k: float,
    variant: Variant,
    fusion: Fusion,
    weights: np.ndarray | None,
    out_hw: tuple[int, int],
) -> tuple[jax.Array, jax.Array]:
    """MLFEM of a batch: ``(F (N, H, W), per-layer maps (N, L, H, W))`` (module docstring)."""
    per_layer = [
        jax.vmap(unit_normalize)(fem_resize(fem_map(a, k=k, variant=variant), out_hw, variant))
        for a in activations
    ]
    stack = jnp.stack(per_layer, axis=1)  # (N, L, H, W)
    fused = jax.vmap(lambda m: fuse_maps(m, fusion, weights))(stack)
    return fused, stack
