"""Occlusion probes: a region of an image replaced by a fill, for one sample (pure, jittable).

A *probe* is a soft region mask ``m`` (H, W) in [0, 1] and a fill ``f``; the probed image is

    x' = x + m * (F_f(x) - x)                       (per pixel and channel; x in [0, 1])

so ``m = 1`` pixels take the fill and the rest of the image is untouched. The fills remove what
a region shows in different ways, since a shortcut may survive one of them:

    mean        F = mu                      the dataset's mean colour (C,), a flat patch
    blur        F = G_s * x                 a Gaussian blur, sigma s = max(H, W) / 16: hides
                                            marks, text and edges, keeps the region's colours
    noise       F = clip(mu + sd * z, 0, 1) a fixed Gaussian noise image z (seed 0) with the
                                            dataset's per-channel mean and std
    inpaint     F = G_r * ((1 - m) x)       the region filled from its surroundings by
                    / G_r * (1 - m)         normalised convolution, r = max(H, W) / 8: each
                                            pixel the Gaussian-weighted mean of the pixels
                                            outside the region (smooth, no new edge, so it adds
                                            no feature of its own, where a flat or a noise
                                            patch draws edges a model may read as an object
                                            or a frame); mu where nothing is near

    median      F = med_3x3(x)              each pixel the median of its 3x3 neighbourhood
                                            (edges replicated): removes isolated pixels, 1 px
                                            lines and fine textures, keeps edges and areas
    balance     F = clip(x g / xbar)        the image white-balanced by the grey world:
                                            each channel scaled so that its mean ``xbar`` is
                                            the image's grey level ``g`` (the mean of its
                                            channel means): takes a colour cast away (a
                                            tint, an orange blend, a scanner's channel
                                            gain), keeps every shape and the colours'
                                            contrasts within the image
    no <hue>    F = x + w (l - x)           each pixel's colour of one hue ``h`` (red, yellow,
                                            green, cyan, blue, magenta) moved towards grey:
                                            ``l`` its channel mean, ``w = chroma *
                                            max(0, cos(theta - h))^4`` (``theta`` its hue angle,
                                            ``chroma`` max - min of its channels: a vivid
                                            colour loses most, a dull one little): takes the
                                            colour of a coloured mark (a sticker, a stamp, a
                                            red line), keeps every shape
    no <hue> area                           the same image as ``no <hue>``; a probe of its own
                                            because the reliance test counts its change of an
                                            image by area (the mean change: a background or a
                                            large part of the hue), ``no <hue>``'s by
                                            vividness (a small vivid mark; `fastfem.audit.
                                            reliance.step.probed`)
    falloff     F = clip(x / g(r))          the image's radial fall-off of brightness taken
                                            away: ``g(r) = (a + b r^2) / a``, ``a + b r^2``
                                            the least-squares fit of the pixels' grey level
                                            ``l`` against ``r^2`` (``r`` the distance from the
                                            centre over the half-diagonal), clipped to
                                            ``[1 / FALLOFF_GAIN, FALLOFF_GAIN]``: takes away a
                                            vignette or a lamp's hot spot, keeps every shape
    grain       F = clip(x + k max(0, D - d(x)) z)
                                            fine grain where the image lacks fine detail:
                                            ``d(x)`` the RMS of ``x - G_l * x`` (what the
                                            ``lowpass`` blur takes away: the image's fine
                                            detail), ``D`` the sample's median ``d``
                                            (`fine_detail`), ``z`` a fixed standard normal
                                            grey image (H, W, 1; seed 0: the same in every
                                            channel, so no colour changes), ``k =
                                            GRAIN_GAIN``: an image softer than the sample's
                                            typical one is given the fine detail it lacks,
                                            one as sharp or sharper is left as it is; takes
                                            away a softness (out of focus, a soft camera or
                                            scanner, a blurred copy), keeps every shape and
                                            colour

``lowpass``, ``colour``, ``median``, ``balance``, the ``no <hue>`` fills, ``falloff``, ``grain``
and the ``no <hue> area`` fills are *global* fills, used with the whole-image mask; ``balance`` and
the ``no <hue>`` and ``no <hue> area`` fills change colours only (`COLOUR_FILLS`); those,
``falloff`` and ``grain`` take away a property a class's own images may have by nature — a colour,
a cast, a lighting, a softness — as well as a mark may bring it (`PROPERTY_FILLS`). ``grain`` is
the one fill that *adds* something: a softness is an absence (of fine detail), and what takes it
away is what it lacks; its change is largest on the softest images, as the other global fills' is
on the images that carry most of what they remove (the reliance test's *dose*). The region family
that needs no map (`region_family`) and the fills are fixed; `probe_image` is the one per-sample
function, `vmap`ped and `lax.map`ped over probes by the caller.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

#: The hues the ``no <hue>`` fills turn grey, name -> angle in degrees (`hue_angle`).
HUES: dict[str, float] = {
    "red": 0.0,
    "yellow": 60.0,
    "green": 120.0,
    "cyan": 180.0,
    "blue": 240.0,
    "magenta": 300.0,
}
HUE_FILLS: tuple[str, ...] = tuple(f"no {h}" for h in HUES)
#: The same fills, each a probe of its own whose change of an image is counted by area.
AREA_HUE_FILLS: tuple[str, ...] = tuple(f"no {h} area" for h in HUES)
#: The fills, in the order of a probe's fill index.
FILLS: tuple[str, ...] = (
    "mean",
    "blur",
    "noise",
    "lowpass",
    "colour",
    "inpaint",
    "median",
    "balance",
    *HUE_FILLS,
    "falloff",
    "grain",
    *AREA_HUE_FILLS,
)
#: Fills that make sense for a region; the others are applied to the whole image.
REGION_FILLS: tuple[str, ...] = ("inpaint", "mean", "blur", "noise")
GLOBAL_FILLS: tuple[str, ...] = (
    "lowpass",
    "colour",
    "median",
    "balance",
    *HUE_FILLS,
    "falloff",
    "grain",
    *AREA_HUE_FILLS,
)
#: The fills that change an image's colours only, never a shape: a colour a mark brings and a
#: colour a class's own objects have look alike to them.
COLOUR_FILLS: tuple[str, ...] = (*HUE_FILLS, *AREA_HUE_FILLS, "balance")
#: The fills that take away a property of the whole image that a class's own images may have
#: by nature as well as a mark may bring it: a colour, a cast, a lighting (a vignette, or a
#: class photographed under a lamp), a softness (a blur, or a class of smooth things). Their
#: tests are judged alike (`fastfem.audit.reliance.rules`).
PROPERTY_FILLS: tuple[str, ...] = (*COLOUR_FILLS, "falloff", "grain")
#: What each of the `PROPERTY_FILLS` takes away, as a report names it.
PROPERTY_KINDS: dict[str, str] = {
    **{f: "a colour" for f in COLOUR_FILLS},
    "falloff": "a lighting",
    "grain": "a softness",
}
#: The fewest channels an image needs for a fill to change it: a hue needs three, the grey
#: world two (`hue_out` and `balance` return an image of fewer as it is); others need one.
MIN_CHANNELS: dict[str, int] = {**{f: 3 for f in (*HUE_FILLS, *AREA_HUE_FILLS)}, "balance": 2}
FALLOFF_GAIN = 5.0  # ``falloff``'s largest correction of a pixel's brightness, either way
#: ``grain``'s gain ``k``: the grain's RMS per unit of the image's missing fine detail.
#: Measured on the shortcut benchmark's models (every test row, the grain drawn per channel):
#: on the photographs' blur model the blurred class's hits collapse on 0.42 of them at 1 and
#: 0.70 at 2 (0.74 in the audit, grey grain); at 4 the grain alone knocks out 22 rows of the
#: clean model of flat synthetic shapes, at 2 no row of any clean model.
GRAIN_GAIN = 2.0
HUE_POWER = 4.0  # the hue window cos^4: half its weight within +-33 degrees of its hue
BLUR_FRACTION = 1 / 16  # sigma of ``blur`` as a fraction of the image's longer side
LOWPASS_FRACTION = 1 / 64  # sigma of ``lowpass``
NOISE_SEED = 0
INPAINT_FRACTION = 1 / 8  # sigma of ``inpaint``


class Region(NamedTuple):
    """A named region of an (H, W) image: ``mask`` (H, W) float32 in {0, 1}; ``box`` its
    bounding box (x0, y0, x1, y1), pixel edges; ``kind`` the family member it comes from
    (``band``, ``column``, ``cell``, ``border``, ``quarter``, ``image`` or ``hot spot``)."""

    name: str
    kind: str
    box: tuple[int, int, int, int]
    mask: np.ndarray


def _spans(size: int, parts: int) -> list[tuple[int, int]]:
    """Spans of length ~size/parts at a stride of half that (overlapping halves), covering
    [0, size) with integer edges; every interval of length <= size/(2 parts) lies whole in one."""
    edges = [round(i * size / (2 * parts)) for i in range(2 * parts + 1)]
    return [(edges[i], edges[i + 2]) for i in range(2 * parts - 1)]


def box_name(shape: str, box: tuple[int, int, int, int]) -> str:
    """The name of a ``band``, ``column`` or ``cell`` region with ``box`` (x0, y0, x1, y1):
    ``band y0-y1``, ``column x0-x1``, ``cell y0-y1 x0-x1``."""
    x0, y0, x1, y1 = box
    return {
        "band": f"band y{y0}-{y1}",
        "column": f"column x{x0}-{x1}",
        "cell": f"cell y{y0}-{y1} x{x0}-{x1}",
    }[shape]


def _box_region(name: str, kind: str, h: int, w: int, box: tuple[int, int, int, int]) -> Region:
    x0, y0, x1, y1 = box
    mask = np.zeros((h, w), np.float32)
    mask[y0:y1, x0:x1] = 1.0
    return Region(name, kind, box, mask)


def border_region(h: int, w: int, width: int) -> Region:
    """The ring of ``width`` px along the four edges."""
    mask = np.ones((h, w), np.float32)
    mask[width : h - width, width : w - width] = 0.0
    return Region(f"border {width} px", "border", (0, 0, w, h), mask)


def corners_region(h: int, w: int) -> Region:
    """The four corner squares of H/4 x W/4 (the corner cells of `region_family`'s grid)."""
    ch, cw = round(h / 4), round(w / 4)
    mask = np.zeros((h, w), np.float32)
    for ys in (slice(0, ch), slice(h - ch, h)):
        for xs in (slice(0, cw), slice(w - cw, w)):
            mask[ys, xs] = 1.0
    return Region("corners", "corners", (0, 0, w, h), mask)


def region_family(h: int, w: int) -> list[Region]:
    """The fixed, map-free regions of an (H, W) image.

    * ``band``: full-width horizontal bands of height H/8 at a stride of H/16 (15 bands: a
      line, a ruler, text in a band of height <= H/16 lies whole in one), and ``band wide``:
      height H/4 at a stride of H/8 (7: text up to H/8 high);
    * ``column``, ``column wide``: the same vertically (15 + 7);
    * ``cell``: squares of H/4 x W/4 on the 4x4 grid and on the 3x3 grid offset by half a cell
      (25: corners, edge middles, the centre and everything between);
    * ``border``: the rings of width max(1, H/32) and max(2, H/16) (a frame);
    * ``corners``: the four corner cells of the 4x4 grid at once (a tag put in any corner:
      each corner alone is hit as often as its mirror images, which the place lift takes for
      objects, not a mark);
    * ``quarter``: squares of H/2 x W/2 at a stride of H/4 (9; the middle one is the
      ``centre``: a stamp over the object), so the centre has translates to be compared with;
    * ``image``: the whole image (for the global fills).
    """
    out: list[Region] = []
    for parts, tag in ((8, ""), (4, " wide")):
        for y0, y1 in _spans(h, parts):
            box = (0, y0, w, y1)
            out.append(_box_region(box_name("band", box), f"band{tag}", h, w, box))
        for x0, x1 in _spans(w, parts):
            box = (x0, 0, x1, h)
            out.append(_box_region(box_name("column", box), f"column{tag}", h, w, box))
    ys = [round(i * h / 8) for i in range(9)]
    xs = [round(i * w / 8) for i in range(9)]
    for offset, n in ((0, 4), (1, 3)):
        for i in range(n):
            for j in range(n):
                y0, y1 = ys[offset + 2 * i], ys[offset + 2 * i + 2]
                x0, x1 = xs[offset + 2 * j], xs[offset + 2 * j + 2]
                box = (x0, y0, x1, y1)
                out.append(_box_region(box_name("cell", box), "cell", h, w, box))
    for width in sorted({max(1, round(min(h, w) / 32)), max(2, round(min(h, w) / 16))}):
        out.append(border_region(h, w, width))
    out.append(corners_region(h, w))
    ys = [round(i * h / 4) for i in range(5)]
    xs = [round(i * w / 4) for i in range(5)]
    for i in range(3):
        for j in range(3):
            box = (xs[j], ys[i], xs[j + 2], ys[i + 2])
            name = "centre" if i == j == 1 else f"quarter y{ys[i]}-{ys[i + 2]} x{xs[j]}-{xs[j + 2]}"
            out.append(_box_region(name, "quarter", h, w, box))
    return out


#: The families a region may grow by a margin (`grown_region`), and the axes it grows along:
#: a band across its height, a column across its width, a cell both ways.
GROWN_AXES: dict[str, str] = {
    "band": "y",
    "band wide": "y",
    "column": "x",
    "column wide": "x",
    "cell": "xy",
}
#: A grown region's kind: its family's with this suffix (``cell grown``), a family of its own.
GROWN = " grown"


def region_margin(h: int, w: int) -> int:
    """The margin a region grows by (`grown_region`): half the cells' stride, max(1, H/16)
    px. A mark of up to a stride across lies whole in some cell of `region_family` only away
    from the image's edges (its two grids meet nowhere along them), and a mark up to half a
    cell larger than a stride lies whole in none; grown by this margin, the cell it mostly
    lies in holds it."""
    return max(1, round(min(h, w) / 16))


def grown_region(r: Region, margin: int) -> Region:
    """The region ``r`` of a `GROWN_AXES` family, its box grown by ``margin`` px on each side
    along its family's axes (clipped to the image); its kind ``kind + GROWN``."""
    h, w = r.mask.shape
    x0, y0, x1, y1 = r.box
    axes = GROWN_AXES[r.kind]
    if "y" in axes:
        y0, y1 = max(0, y0 - margin), min(h, y1 + margin)
    if "x" in axes:
        x0, x1 = max(0, x0 - margin), min(w, x1 + margin)
    box = (x0, y0, x1, y1)
    return _box_region(box_name(r.kind.split(" ")[0], box), r.kind + GROWN, h, w, box)


def whole_image(h: int, w: int) -> Region:
    """The whole image, the region of the global fills."""
    return Region("whole image", "image", (0, 0, w, h), np.ones((h, w), np.float32))


def gaussian_matrix(size: int, sigma: float) -> np.ndarray:
    """(size, size) row-normalised Gaussian smoothing matrix: ``(G v)_i = sum_j g(i - j) v_j /
    sum_j g(i - j)``, ``g(d) = exp(-d^2 / 2 sigma^2)`` (normalised per row, so the edges are
    the mean of the pixels that exist, no padding colour)."""
    d = np.arange(size)[:, None] - np.arange(size)[None, :]
    g = np.exp(-(d.astype(np.float64) ** 2) / (2.0 * max(sigma, 1e-6) ** 2))
    return (g / g.sum(axis=1, keepdims=True)).astype(np.float32)


def separable_blur(x: jax.Array, gy: jax.Array, gx: jax.Array) -> jax.Array:
    """``G_y x G_x^T`` per channel of one image (H, W, C)."""
    return jnp.einsum("hi,iwc,vw->hvc", gy, x, gx)


class FillParams(NamedTuple):
    """What the fills need beside the image: the dataset's mean colour ``mean`` (C,) and its
    per-channel ``std`` (C,), the noise image ``noise`` (H, W, C), the standard normal grey
    image ``grain`` (H, W, 1) and the sample's median fine detail ``detail`` () (`fine_detail`;
    ``grain``'s ``z`` and ``D``), the blur matrices (``blur_y``, ``blur_x``: sigma H/16;
    ``low_y``, ``low_x``: sigma H/64; ``fill_y``, ``fill_x``: sigma H/8)."""

    mean: jax.Array
    std: jax.Array
    noise: jax.Array
    grain: jax.Array
    detail: jax.Array
    blur_y: jax.Array
    blur_x: jax.Array
    low_y: jax.Array
    low_x: jax.Array
    fill_y: jax.Array
    fill_x: jax.Array


def fill_params(
    mean: np.ndarray, std: np.ndarray, h: int, w: int, detail: float = 0.0
) -> FillParams:
    """`FillParams` for (H, W) images whose pixels have per-channel ``mean`` and ``std`` and
    whose median fine detail (`fine_detail`) is ``detail`` (0: ``grain`` leaves every image
    as it is)."""
    mean = np.asarray(mean, np.float32)
    std = np.asarray(std, np.float32)
    z = np.random.default_rng(NOISE_SEED).standard_normal((h, w, mean.shape[0]))
    noise = np.clip(mean + std * z, 0.0, 1.0).astype(np.float32)
    side = max(h, w)
    low_y, low_x = lowpass_matrices(h, w)
    return FillParams(
        mean=jnp.asarray(mean),
        std=jnp.asarray(std),
        noise=jnp.asarray(noise),
        grain=jnp.asarray(
            np.random.default_rng(NOISE_SEED).standard_normal((h, w, 1)), jnp.float32
        ),
        detail=jnp.asarray(detail, jnp.float32),
        blur_y=jnp.asarray(gaussian_matrix(h, side * BLUR_FRACTION)),
        blur_x=jnp.asarray(gaussian_matrix(w, side * BLUR_FRACTION)),
        low_y=jnp.asarray(low_y),
        low_x=jnp.asarray(low_x),
        fill_y=jnp.asarray(gaussian_matrix(h, side * INPAINT_FRACTION)),
        fill_x=jnp.asarray(gaussian_matrix(w, side * INPAINT_FRACTION)),
    )


def lowpass_matrices(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``lowpass`` blur's matrices (sigma max(H, W) / 64) for (H, W) images."""
    side = max(h, w)
    return gaussian_matrix(h, side * LOWPASS_FRACTION), gaussian_matrix(w, side * LOWPASS_FRACTION)


def fine_detail(x: jax.Array, low_y: jax.Array, low_x: jax.Array) -> jax.Array:
    """One image's (H, W, C) fine detail ``d(x)``: the RMS over its pixels and channels of
    ``x - G_l * x``, what the ``lowpass`` blur (matrices ``low_y``, ``low_x``) takes away."""
    return jnp.sqrt(jnp.mean((x - separable_blur(x, low_y, low_x)) ** 2))


def add_grain(x: jax.Array, p: FillParams) -> jax.Array:
    """One image (H, W, C) given the fine detail it lacks (``grain`` above)."""
    missing = jnp.maximum(p.detail - fine_detail(x, p.low_y, p.low_x), 0.0)
    return jnp.clip(x + GRAIN_GAIN * missing * p.grain, 0.0, 1.0)


def flatten_falloff(x: jax.Array) -> jax.Array:
    """One image (H, W, C) with its radial fall-off of brightness taken away (``falloff``
    above)."""
    h, w = x.shape[:2]
    yy = jnp.arange(h, dtype=jnp.float32)[:, None] + 0.5 - h / 2
    xx = jnp.arange(w, dtype=jnp.float32)[None, :] + 0.5 - w / 2
    r2 = (yy**2 + xx**2) / (h * h / 4 + w * w / 4)
    grey = jnp.mean(x, axis=-1)
    du = r2 - jnp.mean(r2)
    b = jnp.sum(du * (grey - jnp.mean(grey))) / jnp.sum(du * du)
    a = jnp.mean(grey) - b * jnp.mean(r2)
    gain = jnp.clip((a + b * r2) / jnp.maximum(a, 1e-3), 1.0 / FALLOFF_GAIN, FALLOFF_GAIN)
    return jnp.clip(x / gain[:, :, None], 0.0, 1.0)


def colour_moments(x: jax.Array, mean: jax.Array, std: jax.Array) -> jax.Array:
    """Each channel of one image (H, W, C) moved to ``mean`` and ``std`` (C,) (``colour``)."""
    xbar = jnp.mean(x, axis=(0, 1))
    s = jnp.std(x, axis=(0, 1))
    return jnp.clip((x - xbar) / jnp.maximum(s, 1e-3) * std + mean, 0.0, 1.0)


#: A comparator network whose 5th output is the median of 9 values (19 min/max pairs; Paeth's
#: network as written by N. Devillard): far cheaper in XLA than sorting each pixel's 9 values.
MEDIAN9_PAIRS: tuple[tuple[int, int], ...] = (
    (1, 2), (4, 5), (7, 8), (0, 1), (3, 4), (6, 7), (1, 2), (4, 5), (7, 8), (0, 3),
    (5, 8), (4, 7), (3, 6), (1, 4), (2, 5), (4, 7), (4, 2), (6, 4), (4, 2),
)  # fmt: skip


def median_of_9(values: list[jax.Array]) -> jax.Array:
    """The elementwise median of 9 arrays: each pair ``(a, b)`` of ``MEDIAN9_PAIRS`` puts the
    smaller value in ``a`` and the larger in ``b``; the median ends in position 4."""
    v = list(values)
    for a, b in MEDIAN9_PAIRS:
        v[a], v[b] = jnp.minimum(v[a], v[b]), jnp.maximum(v[a], v[b])
    return v[4]


def median_3x3(x: jax.Array) -> jax.Array:
    """Each pixel of one image (H, W, C) the median of its 3x3 neighbourhood (``median``)."""
    h, w = x.shape[:2]
    padded = jnp.pad(x, ((1, 1), (1, 1), (0, 0)), mode="edge")
    return median_of_9([padded[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)])


def balance(x: jax.Array) -> jax.Array:
    """One image (H, W, C) white-balanced by the grey world (``balance``): each channel ``c``
    scaled by ``g / xbar_c``, ``xbar_c`` its mean and ``g = mean_c xbar_c``, so that every
    channel's mean is ``g``; an image of one channel is returned as it is."""
    if x.shape[-1] < 2:
        return x
    xbar = jnp.mean(x, axis=(0, 1))
    grey = jnp.mean(xbar)
    return jnp.clip(x * (grey / jnp.maximum(xbar, 1e-3)), 0.0, 1.0)


def hue_angle(x: jax.Array) -> jax.Array:
    """Each pixel's hue angle (H, W) in radians of one image (H, W, 3): the angle of its
    colour on the opponent axes ``r - (g + b) / 2`` and ``sqrt(3) / 2 (g - b)`` (0 red,
    2 pi / 3 green, 4 pi / 3 blue)."""
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    return jnp.arctan2(0.5 * jnp.sqrt(3.0) * (g - b), r - 0.5 * (g + b))


def hue_out(x: jax.Array, degrees: float) -> jax.Array:
    """One image (H, W, C) with its colours near the hue ``degrees`` moved towards grey
    (``no <hue>`` above); an image of fewer than 3 channels has no hue and is returned as it
    is."""
    if x.shape[-1] < 3:
        return x
    chroma = jnp.max(x, axis=-1) - jnp.min(x, axis=-1)
    w = chroma * jnp.maximum(jnp.cos(hue_angle(x) - jnp.deg2rad(degrees)), 0.0) ** HUE_POWER
    return x + w[..., None] * (jnp.mean(x, axis=-1, keepdims=True) - x)


def inpaint(x: jax.Array, mask: jax.Array, p: FillParams) -> jax.Array:
    """The region ``mask`` of one image filled from its surroundings (``inpaint`` above)."""
    outside = (1.0 - mask)[:, :, None]
    num = separable_blur(outside * x, p.fill_y, p.fill_x)
    den = separable_blur(outside, p.fill_y, p.fill_x)
    return jnp.where(den > 1e-3, num / jnp.maximum(den, 1e-3), p.mean)


def fill_image(x: jax.Array, mask: jax.Array, fill: jax.Array, p: FillParams) -> jax.Array:
    """The fill ``FILLS[fill]`` of one image (H, W, C) in [0, 1] over the region ``mask``
    (``fill`` a traced index; only ``inpaint`` reads the mask)."""
    hues = tuple(functools.partial(hue_out, degrees=d) for d in HUES.values())
    branches = (
        lambda v: jnp.broadcast_to(p.mean, v.shape),
        lambda v: separable_blur(v, p.blur_y, p.blur_x),
        lambda v: p.noise,
        lambda v: separable_blur(v, p.low_y, p.low_x),
        lambda v: colour_moments(v, p.mean, p.std),
        lambda v: inpaint(v, mask, p),
        median_3x3,
        balance,
        *hues,
        flatten_falloff,
        lambda v: add_grain(v, p),
        *hues,  # the area views: the same images
    )
    return jax.lax.switch(fill, branches, x)


def probe_image(x: jax.Array, mask: jax.Array, fill: jax.Array, p: FillParams) -> jax.Array:
    """One image (H, W, C) in [0, 1] probed: ``x + mask * (F_fill(x) - x)``."""
    return x + mask[:, :, None] * (fill_image(x, mask, fill, p) - x)
