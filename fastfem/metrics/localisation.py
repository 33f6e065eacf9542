"""Localisation metrics: does the explanation point at the object? Per sample, on device.

Every function here is a pure function of ONE sample: a saliency map ``m`` of shape ``(H, W)``
and a ground-truth region ``B`` (a boolean mask of the same shape, e.g. `box_mask` of an xyxy
box). Batch them with `jax.vmap` and `jax.jit` them once outside: `localisation_metrics` does
both for a batch, and is the one batch form `fastfem.evaluate`'s metrics step and the audit's
step call.

Maps are first normalised to ``L`` in [0, 1] (`normalize_map`, ``normalize=``):

===============  ============================================  ============================
mode             L                                             constant / all-zero map
===============  ============================================  ============================
``relu_minmax``  min-max of ``max(m, 0)`` (default;            uniform: ``L = 1`` everywhere
                 pytorch-grad-cam's ReLU + ``scale_cam_image``)
``minmax``       ``(m - min m) / (max m - min m)``             uniform: ``L = 1`` everywhere
``abs_minmax``   min-max of ``|m|`` (Xplique's AD/IC mask)     uniform: ``L = 1`` everywhere
``abs_max``      ``|m| / max |m|`` (Quantus ``abs`` + its      all-zero stays 0
                 ``normalise_by_max``)
``none``         ``m`` as given (for maps already in [0, 1])   as given
===============  ============================================  ============================

A map is constant when ``max m - min m <= 1e-6 * max(max |m|, 1e-12)`` (float noise of a
resized constant map counts as constant). A constant map carries no localisation information;
the min-max modes turn it into the uniform map, whose scores are the chance level of each
metric (with ``relu_minmax`` that includes a map that is <= 0 everywhere).

Why ReLU first: a bicubic resize (FEM's ``xplique`` variant, as Xplique) undershoots below 0 at
the edges of the plateaus of a FEM map (on the bundled sample by ~7% of the peak). Plain
min-max lifts the whole background by that amount, which spreads "energy" over the image: the
energy pointing game of FEM ``xplique`` maps on the sample drops from 0.60 to 0.36 although
the bilinear ``original`` variant, the same map up to the resize, stays at 0.59. The ReLU keeps
the background at 0. Maps that are >= 0 (every other method here) are unaffected. For maps whose
negative values carry meaning (FEM at a linear layer, e.g. ResNet50's ``conv5_block3_3_conv``),
pass ``normalize="minmax"``. Orderings (pointing-game peak, deletion/insertion ranks) are
taken on the normalised map for the pointing game and on the raw map for the curves.

Metrics, with ``P = {p : L_p = max L}`` the peak pixels and ``|B|`` the box area:

* pointing game (Zhang et al. 2018): 1 if the peak lies in ``B``. Ties (several pixels at the
  maximum, e.g. a plateau) are resolved by ``ties=``: ``"mean"`` (default) scores
  ``|P ∩ B| / |P|``, the expected hit when the tie is broken uniformly at random, so the
  uniform map scores ``|B| / (H W)``; ``"any"`` scores 1 if any peak pixel is in ``B``
  (Quantus's ``PointingGame``: its ``a == a.max()`` test); ``"first"`` looks only at the first
  peak pixel in raster order (``jnp.argmax``). The three agree whenever the peak is unique.
* energy-based pointing game (Wang et al. 2020, Score-CAM; Quantus's
  ``AttributionLocalisation``): ``sum(L * B) / sum(L)``. A map with no energy
  (``sum(L) <= 0``, possible with ``abs_max`` / ``none``) is scored as the uniform map,
  ``|B| / (H W)``.
* IoU@t: ``|A ∩ B| / |A ∪ B|`` with ``A = {L >= t * max L}`` (t = 0.5 by default). ``A`` always
  holds the peak, so the union is never empty.
* IoU of the largest-connected-component box (CAM, Zhou et al. 2016): ``A`` is labelled into
  8-connected components on the host (`scipy.ndimage.label`), the largest one (most pixels;
  first in raster order on a tie) is boxed, and the box's IoU with the ground-truth box is
  returned (`iou_box`, `iou_box_batch`). This one runs on the host, not under ``jit``.

Degenerate inputs, all finite: an empty box scores 0 on every metric (nothing can point into
it; Quantus's ``AttributionLocalisation`` returns NaN there and leaves it out of its mean, its
``PointingGame`` returns True); a box covering the whole image
scores 1 on both pointing games and ``|A| / (H W)`` on IoU@t; a constant map scores
``|B| / (H W)`` on both pointing games (``ties="mean"``) and on IoU@t (A is every pixel).
A map with NaN/inf values scores NaN on every metric.
"""

from __future__ import annotations

import functools
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

Normalize = Literal["minmax", "relu_minmax", "abs_minmax", "abs_max", "none"]
Ties = Literal["mean", "any", "first"]
NORMALIZATIONS: tuple[str, ...] = ("minmax", "relu_minmax", "abs_minmax", "abs_max", "none")
TIES: tuple[str, ...] = ("mean", "any", "first")

#: Relative span under which a map is treated as constant.
CONSTANT_RTOL = 1e-6


def check_normalize(mode: str) -> None:
    """Raise a ValueError naming the allowed map normalisations if ``mode`` is unknown."""
    if mode not in NORMALIZATIONS:
        raise ValueError(f"unknown map normalisation {mode!r}; expected one of {NORMALIZATIONS}")


@functools.partial(jax.jit, static_argnames=("mode",))
def normalize_map(m: jax.Array, mode: Normalize = "relu_minmax") -> jax.Array:
    """ONE map (H, W) -> float32 map in [0, 1] (see the module docstring for each mode)."""
    check_normalize(mode)
    m = jnp.asarray(m, jnp.float32)
    if mode == "none":
        return m
    if mode in ("abs_minmax", "abs_max"):
        m = jnp.abs(m)
    elif mode == "relu_minmax":
        m = jnp.maximum(m, 0.0)
    hi, lo = jnp.max(m), jnp.min(m)
    if mode == "abs_max":
        return m / jnp.where(hi > 0, hi, 1.0)
    span = hi - lo
    constant = span <= CONSTANT_RTOL * jnp.maximum(jnp.max(jnp.abs(m)), 1e-12)
    return jnp.where(constant, 1.0, (m - lo) / jnp.where(constant, 1.0, span))


@functools.partial(jax.jit, static_argnames=("height", "width", "image_size"))
def box_mask(
    box: jax.Array, height: int, width: int, image_size: tuple[int, int] | None = None
) -> jax.Array:
    """Rasterise ONE xyxy box into a boolean (height, width) mask.

    Pixel (i, j) is inside when its centre is: ``x0 <= j + 0.5 < x1`` and ``y0 <= i + 0.5 < y1``.
    For integer boxes with exclusive ends (the bundled sample's convention) that is exactly
    ``mask[y0:y1, x0:x1]``. ``image_size=(H, W)``: the box is in the pixel coordinates of an
    (H, W) image and the mask is at (height, width) (e.g. a feature-resolution map); the box
    is scaled by ``(width / W, height / H)``. A box with ``x1 <= x0`` or ``y1 <= y0`` is empty.
    Jittable and vmappable (``height``, ``width``, ``image_size`` static).
    """
    box = jnp.asarray(box, jnp.float32)
    x0, y0, x1, y1 = box[0], box[1], box[2], box[3]
    if image_size is not None:
        sy, sx = height / image_size[0], width / image_size[1]
        x0, x1, y0, y1 = x0 * sx, x1 * sx, y0 * sy, y1 * sy
    cx = jnp.arange(width, dtype=jnp.float32) + 0.5
    cy = jnp.arange(height, dtype=jnp.float32) + 0.5
    in_x = (cx >= x0) & (cx < x1)
    in_y = (cy >= y0) & (cy < y1)
    return in_y[:, None] & in_x[None, :]


def _finite_or_nan(m: jax.Array, value: jax.Array) -> jax.Array:
    return jnp.where(jnp.all(jnp.isfinite(m)), value, jnp.nan).astype(jnp.float32)


def _area_fraction(box: jax.Array) -> jax.Array:
    return jnp.mean(box.astype(jnp.float32))


@functools.partial(jax.jit, static_argnames=("normalize", "ties"))
def pointing_game(
    m: jax.Array, box: jax.Array, normalize: Normalize = "relu_minmax", ties: Ties = "mean"
) -> jax.Array:
    """Pointing game of ONE map (H, W) and box mask (H, W): a float32 scalar in [0, 1].

    ``ties="mean"``: ``|P ∩ B| / |P|`` over the peak pixels P; ``"any"``: Quantus's rule;
    ``"first"``: the first peak in raster order. 0 for an empty box.
    """
    if ties not in TIES:
        raise ValueError(f"unknown ties rule {ties!r}; expected one of {TIES}")
    L = normalize_map(m, normalize)
    b = jnp.asarray(box, bool)
    if ties == "first":
        hit = b.reshape(-1)[jnp.argmax(L.reshape(-1))].astype(jnp.float32)
    else:
        peak = jnp.max(L) == L
        inside = jnp.sum(peak & b).astype(jnp.float32)
        if ties == "any":
            hit = (inside > 0).astype(jnp.float32)
        else:
            hit = inside / jnp.maximum(jnp.sum(peak), 1).astype(jnp.float32)
    return _finite_or_nan(L, hit)


@functools.partial(jax.jit, static_argnames=("normalize",))
def energy_pointing_game(
    m: jax.Array, box: jax.Array, normalize: Normalize = "relu_minmax"
) -> jax.Array:
    """Energy-based pointing game ``sum(L * B) / sum(L)`` of ONE map and box mask (H, W).

    A map with ``sum(L) <= 0`` is scored as the uniform map: ``|B| / (H W)``.
    """
    L = normalize_map(m, normalize)
    b = jnp.asarray(box, jnp.float32)
    total = jnp.sum(L)
    inside = jnp.sum(L * b)
    ratio = jnp.where(total > 0, inside / jnp.where(total > 0, total, 1.0), _area_fraction(b))
    return _finite_or_nan(L, ratio)


def threshold_region(L: jax.Array, threshold: float = 0.5) -> jax.Array:
    """``{L >= t * max L}`` of a normalised map: a boolean (H, W) mask holding the peak."""
    return threshold * jnp.max(L) <= L


@functools.partial(jax.jit, static_argnames=("normalize",))
def iou_at(
    m: jax.Array, box: jax.Array, threshold: float = 0.5, normalize: Normalize = "relu_minmax"
) -> jax.Array:
    """IoU of ``{L >= t * max L}`` with the box mask, for ONE map (H, W): scalar in [0, 1]."""
    L = normalize_map(m, normalize)
    a = threshold_region(L, threshold)
    b = jnp.asarray(box, bool)
    inter = jnp.sum(a & b).astype(jnp.float32)
    union = jnp.sum(a | b).astype(jnp.float32)
    return _finite_or_nan(L, inter / jnp.maximum(union, 1.0))


class Localisation(NamedTuple):
    """Per-sample localisation scores, float32 (N,)."""

    pointing_game: jax.Array
    energy_pointing_game: jax.Array
    iou: jax.Array


def localisation_sample(
    m: jax.Array,
    box: jax.Array,
    threshold: float = 0.5,
    normalize: Normalize = "relu_minmax",
    ties: Ties = "mean",
) -> Localisation:
    """All three on-device localisation metrics of ONE map (H, W) and box mask (H, W)."""
    return Localisation(
        pointing_game=pointing_game(m, box, normalize, ties),
        energy_pointing_game=energy_pointing_game(m, box, normalize),
        iou=iou_at(m, box, threshold, normalize),
    )


def box_masks(boxes: jax.Array, height: int, width: int, image_size=None) -> jax.Array:
    """`box_mask` of a batch of xyxy boxes (N, 4) -> (N, height, width) bool."""
    return jax.vmap(lambda b: box_mask(b, height, width, image_size))(jnp.asarray(boxes))


def region_masks(boxes: jax.Array, height: int, width: int) -> jax.Array:
    """Ground-truth regions ``B`` (N, height, width) bool of a batch, from masks (N, height,
    width), xyxy boxes (N, 4), or K boxes per image (N, K, 4) (``B`` is the union of their
    `box_mask`; an empty padding box adds nothing)."""
    boxes = jnp.asarray(boxes)
    if boxes.shape[1:] == (height, width):
        return boxes.astype(bool)
    if boxes.ndim == 2:
        return box_masks(boxes, height, width)
    return jnp.any(jax.vmap(lambda b: box_masks(b, height, width))(boxes), axis=1)


@functools.partial(jax.jit, static_argnames=("normalize", "ties"))
def localisation_metrics(
    maps: jax.Array,
    boxes: jax.Array,
    threshold: float = 0.5,
    normalize: Normalize = "relu_minmax",
    ties: Ties = "mean",
) -> Localisation:
    """The on-device localisation metrics of a batch: `localisation_sample` of each map and
    its region, ``jax.vmap`` over the batch.

    Per sample i: ``pointing_game_i = |P_i ∩ B_i| / |P_i|`` (``ties="mean"``),
    ``energy_pointing_game_i = sum(L_i * B_i) / sum(L_i)``, ``iou_i = |A_i ∩ B_i| / |A_i ∪ B_i|``
    with ``A_i = {L_i >= t * max L_i}`` (module docstring). ``maps``: (N, H, W) or (N, H, W, 1);
    ``boxes``: anything `region_masks` reads, in the maps' pixel coordinates. Jitted, and
    callable inside a jitted step (`fastfem.evaluate`'s stages, the audit's step).
    """
    if maps.ndim == 4 and maps.shape[-1] == 1:
        maps = maps[..., 0]
    regions = region_masks(boxes, maps.shape[1], maps.shape[2])
    fn = jax.vmap(localisation_sample, in_axes=(0, 0, None, None, None))
    return fn(maps, regions, threshold, normalize, ties)


# ----------------------------------------------------------------------------------------------
# Largest-connected-component box IoU (host side, SciPy), as in the CAM literature.


def box_iou(a, b) -> float:
    """IoU of two xyxy boxes (continuous coordinates, exclusive ends); 0 if either is empty."""
    ax0, ay0, ax1, ay1 = (float(v) for v in a)
    bx0, by0, bx1, by1 = (float(v) for v in b)
    area_a = max(ax1 - ax0, 0.0) * max(ay1 - ay0, 0.0)
    area_b = max(bx1 - bx0, 0.0) * max(by1 - by0, 0.0)
    iw = max(min(ax1, bx1) - max(ax0, bx0), 0.0)
    ih = max(min(ay1, by1) - max(ay0, by0), 0.0)
    inter = iw * ih
    union = area_a + area_b - inter
    return inter / union if union > 0 and area_a > 0 and area_b > 0 else 0.0


def largest_component_box(region: np.ndarray) -> tuple[int, int, int, int]:
    """xyxy box (exclusive ends) of the largest 8-connected component of a boolean (H, W) mask.

    The largest component has the most pixels; on a tie, the first one in raster order. An
    empty mask gives the empty box (0, 0, 0, 0).
    """
    from scipy import ndimage

    region = np.asarray(region, bool)
    labels, n = ndimage.label(region, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return (0, 0, 0, 0)
    sizes = np.bincount(labels.ravel())[1:]
    keep = labels == (int(np.argmax(sizes)) + 1)
    rows = np.flatnonzero(keep.any(axis=1))
    cols = np.flatnonzero(keep.any(axis=0))
    return (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)


_normalize_batch = jax.jit(jax.vmap(normalize_map, in_axes=(0, None)), static_argnames=("mode",))


def iou_box_batch(
    maps, boxes, threshold: float = 0.5, normalize: Normalize = "relu_minmax"
) -> np.ndarray:
    """Largest-connected-component box IoU of a batch (host): maps (N, H, W[, 1]), boxes
    xyxy (N, 4) in the maps' pixel coordinates -> float32 (N,). NaN for a non-finite map."""
    check_normalize(normalize)
    maps = np.asarray(maps, np.float32)
    if maps.ndim == 4 and maps.shape[-1] == 1:
        maps = maps[..., 0]
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if maps.ndim != 3 or boxes.shape[0] != maps.shape[0]:
        raise ValueError(
            f"iou_box_batch expects maps (N, H, W) and boxes (N, 4); got {maps.shape} and "
            f"{boxes.shape}"
        )
    L = np.asarray(_normalize_batch(maps, normalize))
    out = np.empty(maps.shape[0], np.float32)
    for i in range(maps.shape[0]):
        if not np.all(np.isfinite(L[i])):
            out[i] = np.nan
            continue
        region = L[i] >= threshold * L[i].max()
        out[i] = box_iou(largest_component_box(region), boxes[i])
    return out


def iou_box(m, box, threshold: float = 0.5, normalize: Normalize = "relu_minmax") -> float:
    """Largest-connected-component box IoU of ONE map (H, W) with ONE xyxy box (host)."""
    return float(iou_box_batch(np.asarray(m)[None], np.asarray(box)[None], threshold, normalize)[0])
