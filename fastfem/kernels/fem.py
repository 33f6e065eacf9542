"""FEM — Feature Explanation Method: the formula, for one sample.

This module is the one place the FEM formula lives. Everything here is a pure function of
one sample's activations ``A`` of shape ``(h, w, C)`` (channels last); batching (`vmap`),
compilation (`jit`) and sharding are applied once, outside (see `fastfem.explainers.fem`).

For each channel ``c``, over the spatial axes::

    mu_c    = mean(A_c)
    sigma_c = std(A_c)                 (population std, ddof = 0, accumulated in float32)
    T_c     = mu_c + k * sigma_c       (k = 2.0 by default)

Variants (``variant=``):

===========  ==========  ===================  ================  =================  ===========
variant      mask M_c    channel weight w_c   map               at (h, w)          after resize
===========  ==========  ===================  ================  =================  ===========
xplique      A_c >= T_c  mu_c                 sum_c w_c * M_c   none               none
original     A_c >  T_c  mu_c                 sum_c w_c * M_c   divide by max      none
                                                                if max > 0
gradcam      A_c >  T_c  mean(M_c) (on frac)  sum_c w_c * A_c   ReLU, min-max      min-max
===========  ==========  ===================  ================  =================  ===========

The post-processing is applied at feature resolution, before the single resize to the input
size. After the resize (`post_resize`), ``gradcam`` min-maxes once more, as pytorch-grad-cam's
``BaseCAM`` does for every CAM method: per target layer ``np.maximum(cam, 0)``, then
``scale_cam_image`` (min-max with eps 1e-7, then ``cv2.resize`` bilinear), then in
``aggregate_multi_layers`` ``np.maximum(., 0)``, the mean over layers and ``scale_cam_image``
again. With one layer the mean is that layer's map, and the second min-max is not a no-op: a
bilinear resize of a [0, 1] map interpolates between samples, so its minimum can sit above 0 and
its maximum below 1 (measured on random-weight CNNs: the map moves by up to 0.29 of its range
from 30x30 to 32x32, 0.10-0.17 from 15x15 to 32x32 or 11x19 to 24x40). ``xplique`` and
``original`` do nothing after the resize. `fem_resize` is the whole way to the input size (the
variant's resize, then `post_resize`); MLFEM resizes each layer without the post-resize step
and applies it to the fused map (`fastfem.kernels.mlfem`).

Degenerate channels: a spatially constant channel has sigma 0 in exact arithmetic, but float
rounding can leave a tiny positive sigma (e.g. a constant 0.1 channel), which flips ``A >= T``.
``sigma_c <= 1e-6 * max(|mu_c|, 1e-12)`` is therefore treated as exactly 0.
"""

from __future__ import annotations

import functools
import math
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp

from fastfem.kernels.resize import resize_batch

Variant = Literal["xplique", "original", "gradcam"]
VARIANTS: tuple[str, ...] = ("xplique", "original", "gradcam")
#: How each variant's map is resized to the input size (`fastfem.kernels.resize`).
RESIZE_METHOD: dict[str, str] = {
    "xplique": "bicubic",
    "original": "bilinear",
    "gradcam": "bilinear",
}

#: Relative bound under which a channel's sigma is treated as exactly zero.
DEGENERATE_SIGMA_RTOL = 1e-6
#: Epsilon of the min-max normalisation of the ``gradcam`` variant (pytorch-grad-cam's).
MINMAX_EPS = 1e-7


class ChannelStats(NamedTuple):
    """Per-channel spatial statistics of one sample's activations, float32, shape (C,)."""

    mean: jax.Array
    std: jax.Array


def check_variant(variant: str) -> None:
    """Raise a ValueError naming the allowed variants if ``variant`` is unknown."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown FEM variant {variant!r}; expected one of {VARIANTS}")


def check_k(k: float) -> float:
    """``k`` as a float; a ValueError unless it is a finite number >= 0 (``nan``, ``inf`` and
    negative values would make every mask empty or full without a word)."""
    if isinstance(k, bool) or not isinstance(k, (int, float)) and not hasattr(k, "__float__"):
        raise ValueError(f"k must be a finite number >= 0; got {k!r}")
    value = float(k)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"k must be a finite number >= 0; got {k!r}")
    return value


def channel_stats(activations: jax.Array) -> ChannelStats:
    """Channel means and population stds of ``A`` (h, w, C), accumulated in float32.

    ``mu_c = mean_{i,j} A_ijc``; ``sigma_c = sqrt(mean_{i,j} (A_ijc - mu_c)^2)``, with
    ``sigma_c`` set to exactly 0 where ``sigma_c <= 1e-6 * max(|mu_c|, 1e-12)``.
    """
    a = activations.astype(jnp.float32)
    mean = jnp.mean(a, axis=(0, 1))
    std = jnp.sqrt(jnp.mean(jnp.square(a - mean), axis=(0, 1)))
    degenerate = std <= DEGENERATE_SIGMA_RTOL * jnp.maximum(jnp.abs(mean), 1e-12)
    return ChannelStats(mean=mean, std=jnp.where(degenerate, 0.0, std))


def fem_masks(activations: jax.Array, stats: ChannelStats, k: float, inclusive: bool) -> jax.Array:
    """Binary k-sigma masks ``M_c = A_c >= T_c`` (inclusive) or ``A_c > T_c``, float32 (h, w, C)."""
    a = activations.astype(jnp.float32)
    threshold = stats.mean + k * stats.std
    on = a >= threshold if inclusive else a > threshold
    return on.astype(jnp.float32)


def minmax_normalize(m: jax.Array, eps: float = MINMAX_EPS) -> jax.Array:
    """``(m - min m) / (max(m - min m) + eps)``: pytorch-grad-cam's ``scale_cam_image``."""
    shifted = m - jnp.min(m)
    return shifted / (jnp.max(shifted) + eps)


def post_resize(maps: jax.Array, variant: Variant = "xplique") -> jax.Array:
    """What ``variant`` does to its maps AFTER the resize to the input size: (..., H, W) -> same.

    ``gradcam``: ``m -> (r - min r) / (max(r - min r) + 1e-7)`` with ``r = max(m, 0)``, min and
    max over the last two axes (pytorch-grad-cam's final ``scale_cam_image`` of
    ``aggregate_multi_layers``; the ``max(m, 0)`` is its ``np.maximum`` before the mean, a no-op
    after a bilinear resize of a map in [0, 1]). ``xplique``, ``original``: the identity.
    """
    check_variant(variant)
    if variant != "gradcam":
        return maps
    r = jnp.maximum(jnp.asarray(maps, jnp.float32), 0.0)
    shifted = r - jnp.min(r, axis=(-2, -1), keepdims=True)
    return shifted / (jnp.max(shifted, axis=(-2, -1), keepdims=True) + MINMAX_EPS)


def fem_sample(activations: jax.Array, k: float = 2.0, variant: Variant = "xplique") -> jax.Array:
    """FEM map of ONE sample at feature resolution: (h, w, C) -> (h, w) float32.

    See the module docstring for the formula of each variant. ``k`` may be a traced scalar;
    ``variant`` is static.
    """
    check_variant(variant)
    if activations.ndim != 3:
        raise ValueError(
            "fem_sample expects one sample's activations of shape (h, w, C); "
            f"got {activations.shape}"
        )
    stats = channel_stats(activations)
    if variant == "gradcam":
        masks = fem_masks(activations, stats, k, inclusive=False)
        weights = jnp.mean(masks, axis=(0, 1))
        cam = jnp.einsum("hwc,c->hw", activations.astype(jnp.float32), weights)
        return minmax_normalize(jax.nn.relu(cam))
    masks = fem_masks(activations, stats, k, inclusive=(variant == "xplique"))
    fem = jnp.einsum("hwc,c->hw", masks, stats.mean)
    if variant == "original":
        peak = jnp.max(fem)
        fem = jnp.where(peak > 0, fem / jnp.where(peak > 0, peak, 1.0), fem)
    return fem


def fem_map(activations: jax.Array, k: float = 2.0, variant: Variant = "xplique") -> jax.Array:
    """FEM maps at feature resolution for a batch: (..., h, w, C) -> (..., h, w) float32.

    `fem_sample` vmapped over every leading axis. Jittable (``variant`` static) and vmappable.
    """
    check_variant(variant)
    if activations.ndim < 3:
        raise ValueError(
            f"fem_map expects activations of shape (..., h, w, C); got shape {activations.shape}"
        )
    fn = functools.partial(fem_sample, k=k, variant=variant)
    for _ in range(activations.ndim - 3):
        fn = jax.vmap(fn)
    return fn(activations)


def fem_resize(maps: jax.Array, out_hw: tuple[int, int], variant: Variant = "xplique") -> jax.Array:
    """FEM maps (..., h, w) -> (..., H, W) the way ``variant`` brings them to the input size:
    its resize (`RESIZE_METHOD`: TF-exact bicubic for ``xplique``, bilinear otherwise;
    `fastfem.kernels.resize`), then its `post_resize` (``gradcam``: min-max again)."""
    check_variant(variant)
    resized = resize_batch(maps, out_hw, RESIZE_METHOD[variant])  # type: ignore[arg-type]
    return post_resize(resized, variant)
