"""MLFEM (Bourroux et al. 2022): FEM at several layers, each at the input size, fused.

For a batch with the activations ``A_l`` (N, h_l, w_l, C_l) of L layers, per sample::

    m_l = layer_map(resize(fem(A_l), (H, W)))              (the variant's resize)
    F   = post_resize(fuse(m_1, ..., m_L))                  (`fastfem.kernels.fusion`)

``fem`` is the FEM formula of `fastfem.kernels.fem` (same ``k`` and ``variant`` for every layer),
``resize`` the variant's resize (`RESIZE_METHOD`) without its post-resize step, and per variant:

* ``xplique``, ``original``: ``layer_map`` = `unit_normalize` (each layer's map min-maxed to
  [0, 1] after the resize, a relative guard for constant maps) and ``post_resize`` the identity.
* ``gradcam``: pytorch-grad-cam's multi-layer pipeline (``BaseCAM`` with several target
  layers). Each layer's map was ReLU'd and min-maxed at its own resolution (`fem_sample`), then
  resized bilinearly; ``layer_map`` = ``max(m, 0)`` (its ``np.maximum`` before the mean; no
  second per-layer min-max), and the fused map is min-maxed once (`post_resize`: its final
  ``scale_cam_image`` in ``aggregate_multi_layers``, eps 1e-7). With ``fusion="mean"`` this is
  ``pytorch_grad_cam.FEM(model, target_layers)``'s output; ``product`` and ``weighted`` use the
  same per-layer maps and final min-max.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from fastfem.kernels.fem import RESIZE_METHOD, Variant, check_variant, fem_map, post_resize
from fastfem.kernels.fusion import Fusion, fuse_maps, unit_normalize
from fastfem.kernels.resize import resize_batch


def layer_map(m: jax.Array, variant: Variant = "xplique") -> jax.Array:
    """One layer's resized FEM map (H, W) as the fusion takes it (module docstring).

    ``gradcam``: ``max(m, 0)``; ``xplique``, ``original``: `unit_normalize`.
    """
    check_variant(variant)
    if variant == "gradcam":
        return jnp.maximum(jnp.asarray(m, jnp.float32), 0.0)
    return unit_normalize(m)


def mlfem_maps(
    activations: Sequence[jax.Array],
    k: float,
    variant: Variant,
    fusion: Fusion,
    weights: np.ndarray | None,
    out_hw: tuple[int, int],
) -> tuple[jax.Array, jax.Array]:
    """MLFEM of a batch: ``(F (N, H, W), per-layer maps (N, L, H, W))`` (module docstring)."""
    method = RESIZE_METHOD[variant]
    per_layer = [
        jax.vmap(lambda m: layer_map(m, variant))(
            resize_batch(fem_map(a, k=k, variant=variant), out_hw, method)  # type: ignore[arg-type]
        )
        for a in activations
    ]
    stack = jnp.stack(per_layer, axis=1)  # (N, L, H, W)
    fused = jax.vmap(lambda m: fuse_maps(m, fusion, weights))(stack)
    return post_resize(fused, variant), stack
