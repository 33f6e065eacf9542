"""How every mark kind is drawn, at any image size (see `config` for the kinds and places).

Sizes are relative to the image: with ``u = S / 64`` (S the image side), the checker's cells
are ``round(2u)`` px, the text glyphs are scaled by ``round(u)``, the ruler and the frame are
``round(2u)`` px wide, patches sit ``round(2u)`` px from the borders; the watermark's band,
font size and the stamp are fractions of S; the line is 1 px at every size. Python's ``round``
rounds halves to even: at 80 px (u = 1.25) ``round(2u)`` = 2 and ``round(u)`` = 1, the same
pixel sizes as at 64 px.

Each ``draw(img, place, rng, box) -> marked image`` takes the clean scene (S, S, 3) float32 and
the object's box, and draws its random parameters (string, opacity, jitter ...) from ``rng``.
`mark_zone` is the set of pixels a kind's mark may change in any image (the whole image for a
cast, a texture, noise, blur, JPEG, a vignette, the sticker, which goes on the object, and the
patch at a random place; the four corners for the tag in a random corner).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

from benchmarks.shortcut_data.config import Shortcut
from fastfem.kernels.occlusion import gaussian_matrix
from fastfem.sample.dataset import watermark_patch

__all__ = ["MARK_COLOURS", "draw_mark", "mark_zone"]

STRIPE_COLOUR = np.asarray([1.0, 0.9, 0.1], np.float32)
FRAME_COLOUR = np.asarray([0.9, 0.1, 0.8], np.float32)
LINE_COLOUR = np.asarray([1.0, 0.0, 0.0], np.float32)
STICKER_COLOUR = np.asarray([0.1, 0.85, 0.2], np.float32)
STAMP_COLOUR = np.asarray([0.85, 0.1, 0.1], np.float32)
CAST_COLOUR = np.asarray([1.0, 0.55, 0.15], np.float32)
#: kind -> the colour of a solid coloured mark (the background's mean keeps away from it)
MARK_COLOURS: dict[str, np.ndarray] = {
    "stripe": STRIPE_COLOUR,
    "frame": FRAME_COLOUR,
    "line": LINE_COLOUR,
}

WATERMARK_STRINGS: tuple[str, ...] = (
    "SAMPLE",
    "PREVIEW",
    "© STOCK",
    "ImageBank",
    "PHOTO ID 0417",
    "watermark",
)
#: band centre, as a fraction of the height
WATERMARK_BANDS: dict[str, float] = {"top": 0.2, "middle": 0.5, "bottom": 0.8}
WATERMARK_HALF_BAND = 0.14  # band half-height / S
WATERMARK_FONT = (0.14, 0.22)  # font size / S
WATERMARK_OPACITY = (0.35, 0.55)
STAMP_WORDS: tuple[str, ...] = ("OK", "QC", "A1")
STAMP_RADIUS = (0.2, 0.24)  # / S
STAMP_OPACITY = (0.6, 0.8)
STAMP_HALF_ZONE = 0.3  # / S
CAST_STRENGTH = (0.3, 0.4)
HATCH_PERIOD = 4
HATCH_OPACITY = 0.3
NOISE_SHARE = 0.05
STICKER_RADIUS = 0.06  # / S
BLUR_SIGMA = (1.0, 1.5)  # px at 64 px
JPEG_QUALITY = (5, 15)
VIGNETTE_STRENGTH = (0.5, 0.7)  # the corners' darkening
CORNERS: tuple[str, ...] = ("top-left", "top-right", "bottom-left", "bottom-right")

# 3x5 glyphs (rows top to bottom, 3 bits each, MSB left): digits and a few capitals.
_FONT_ROWS: dict[str, tuple[int, ...]] = {
    "0": (7, 5, 5, 5, 7),
    "1": (2, 6, 2, 2, 7),
    "2": (7, 1, 7, 4, 7),
    "3": (7, 1, 3, 1, 7),
    "4": (5, 5, 7, 1, 1),
    "5": (7, 4, 7, 1, 7),
    "6": (7, 4, 7, 5, 7),
    "7": (7, 1, 2, 2, 2),
    "8": (7, 5, 7, 5, 7),
    "9": (7, 5, 7, 1, 7),
    "A": (2, 5, 7, 5, 5),
    "E": (7, 4, 6, 4, 7),
    "H": (5, 5, 7, 5, 5),
    "L": (4, 4, 4, 4, 7),
    "R": (6, 5, 6, 5, 5),
    "X": (5, 5, 2, 5, 5),
}
GLYPHS: str = "".join(_FONT_ROWS)
TEXT_GLYPHS = 3

Box = tuple[int, int, int, int]


def _unit(size: int) -> float:
    return size / 64.0


def _px(size: int, at64: float) -> int:
    """``at64`` px at 64 px, scaled to ``size`` (at least 1)."""
    return max(1, round(at64 * _unit(size)))


def _patch_size(kind: str, size: int) -> tuple[int, int]:
    if kind == "checker":
        side = 3 * _px(size, 2)
        return side, side
    k = _px(size, 1)
    return 7 * k, 13 * k


def _patch_origin(place: str, h: int, w: int, size: int) -> tuple[int, int]:
    """Top-left pixel of an (h, w) patch at ``place``, ``round(2u)`` px from the borders."""
    vertical, _, horizontal = place.partition("-") if "-" in place else (place, "", place)
    m = _px(size, 2)
    y = {"top": m, "bottom": size - m - h}.get(vertical, (size - h) // 2)
    x = {"left": m, "right": size - m - w}.get(horizontal, (size - w) // 2)
    return y, x


def _band_rows(place: str, size: int) -> tuple[int, int]:
    centre = WATERMARK_BANDS[place] * size
    half = WATERMARK_HALF_BAND * size
    return max(0, int(round(centre - half))), min(size, int(round(centre + half)))


def _line_mask(place: str, size: int) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    if place == "middle":
        mask[size // 2, :] = True
    else:
        mask[np.arange(size), np.arange(size)] = True
    return mask


def mark_zone(shortcut: Shortcut, size: int = 64) -> np.ndarray:
    """(size, size) bool: the pixels ``shortcut``'s mark may change (empty for ``none``)."""
    zone = np.zeros((size, size), bool)
    kind, place = shortcut.kind, shortcut.place
    if kind in ("checker", "text"):
        h, w = _patch_size(kind, size)
        for at in CORNERS if place == "corner" else (place,):
            y, x = _patch_origin(at, h, w, size)
            zone[y : y + h, x : x + w] = True
    elif kind == "stripe":
        lo = _px(size, 1)
        hi = lo + _px(size, 2)
        sl = {"top": np.s_[lo:hi, :], "bottom": np.s_[size - hi : size - lo, :]}
        sl.update(left=np.s_[:, lo:hi], right=np.s_[:, size - hi : size - lo])
        zone[sl[place]] = True
    elif kind == "frame":
        w = _px(size, 2)
        zone[:w, :] = zone[-w:, :] = True
        zone[:, :w] = zone[:, -w:] = True
    elif kind == "watermark":
        y0, y1 = _band_rows(place, size)
        zone[y0:y1, :] = True
    elif kind == "stamp":
        half = int(round(STAMP_HALF_ZONE * size))
        zone[size // 2 - half : size // 2 + half, size // 2 - half : size // 2 + half] = True
    elif kind == "line":
        zone = _line_mask(place, size)
    elif kind != "none":  # cast, hatch, noise, sticker, blur, jpeg, vignette, patch: anywhere
        zone[:] = True
    return zone


def _blend(img: np.ndarray, colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``img (1 - alpha) + colour alpha`` (alpha (S, S) or scalar)."""
    a = np.asarray(alpha, np.float32)
    a = a[:, :, None] if a.ndim == 2 else a
    return (img * (1.0 - a) + colour * a).astype(np.float32)


# ---------------------------------------------------------------------------- off the objects
def _checker(size: int) -> np.ndarray:
    """The bundled checker patch at ``round(2u)`` px per cell."""
    return np.kron(watermark_patch()[::2, ::2], np.ones((_px(size, 2),) * 2, np.float32))


def _paste(img: np.ndarray, patch: np.ndarray, y: int, x: int) -> np.ndarray:
    """``img`` with the grey ``patch`` pasted at top-left ``(y, x)``."""
    out = img.copy()
    out[y : y + patch.shape[0], x : x + patch.shape[1], :] = patch[:, :, None]
    return out


def _draw_checker(img: np.ndarray, place: str, rng: np.random.Generator, box: Box) -> np.ndarray:
    patch = _checker(img.shape[0])
    return _paste(img, patch, *_patch_origin(place, *patch.shape, img.shape[0]))


def _text_bitmap(chars: str) -> np.ndarray:
    """(5, 4 len - 1) bool glyph pixels of ``chars`` (1 px between glyphs)."""
    out = np.zeros((5, 4 * len(chars) - 1), bool)
    for j, c in enumerate(chars):
        rows = np.asarray(_FONT_ROWS[c])
        out[:, 4 * j : 4 * j + 3] = (rows[:, None] >> np.asarray([2, 1, 0])[None, :]) & 1 == 1
    return out


def _draw_text(img: np.ndarray, place: str, rng: np.random.Generator, box: Box) -> np.ndarray:
    size = img.shape[0]
    if place == "corner":
        place = str(rng.choice(CORNERS))
    chars = "".join(rng.choice(list(GLYPHS), size=TEXT_GLYPHS))
    glyph = np.pad(_text_bitmap(chars), 1)  # (7, 13)
    outline = np.zeros_like(glyph)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            outline |= np.roll(np.roll(glyph, dy, 0), dx, 1)
    k = _px(size, 1)
    glyph, outline = (np.kron(g, np.ones((k, k), bool)) for g in (glyph, outline))
    y, x = _patch_origin(place, *glyph.shape, size)
    out = img.copy()
    region = out[y : y + glyph.shape[0], x : x + glyph.shape[1], :]
    region[outline] = 0.0
    region[glyph] = 1.0
    return out


def _draw_stripe(img: np.ndarray, place: str, rng: np.random.Generator, box: Box) -> np.ndarray:
    size = img.shape[0]
    zone = mark_zone(Shortcut("stripe", place), size)
    out = img.copy()
    out[zone] = STRIPE_COLOUR
    along = np.arange(size) % _px(size, 4) == 0
    ticks = zone & (along[None, :] if place in ("top", "bottom") else along[:, None])
    out[ticks] = 0.0
    return out


def _draw_frame(img: np.ndarray, place: str, rng: np.random.Generator, box: Box) -> np.ndarray:
    out = img.copy()
    out[mark_zone(Shortcut("frame", place), img.shape[0])] = FRAME_COLOUR
    return out


# ---------------------------------------------------------------------------- over the objects
@functools.cache
def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def _text_layer(size: int, text: str, font_px: int, xy: tuple[float, float]) -> np.ndarray:
    """(size, size) float32 coverage of ``text`` drawn with Pillow's default font."""
    from PIL import Image, ImageDraw

    layer = Image.new("L", (size, size), 0)
    ImageDraw.Draw(layer).text(xy, text, fill=255, font=_font(font_px))
    return np.asarray(layer, np.float32) / 255.0


def _draw_watermark(img: np.ndarray, place: str, rng: np.random.Generator, box: Box) -> np.ndarray:
    """White text repeated across the band (random string, size, offset, opacity)."""
    size = img.shape[0]
    y0, y1 = _band_rows(place, size)
    font_px = int(round(rng.uniform(*WATERMARK_FONT) * size))
    word = str(rng.choice(WATERMARK_STRINGS))
    left, top, right, bottom = _font(font_px).getbbox(word + "  ")
    period = max(right - left, 1)
    text = "  ".join([word] * (size // period + 2))
    x = -float(rng.uniform(0.0, period))
    free = max((y1 - y0) - (bottom - top), 0)
    y = y0 - top + float(rng.uniform(0.0, free))
    zone = np.zeros((size, size), np.float32)
    zone[y0:y1] = 1.0
    alpha = _text_layer(size, text, font_px, (x, y)) * zone * rng.uniform(*WATERMARK_OPACITY)
    return _blend(img, np.ones(3, np.float32), alpha)


def _draw_stamp(img: np.ndarray, place: str, rng: np.random.Generator, box: Box) -> np.ndarray:
    """A red ring with a short word inside, translucent, over the centre."""
    from PIL import Image, ImageDraw

    size = img.shape[0]
    r = rng.uniform(*STAMP_RADIUS) * size
    cx, cy = size / 2 + rng.uniform(-0.03, 0.03, size=2) * size
    layer = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(layer)
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=255, width=_px(size, 3))
    word = str(rng.choice(STAMP_WORDS))
    draw.text((cx, cy), word, fill=255, font=_font(int(round(0.9 * r))), anchor="mm")
    alpha = np.asarray(layer, np.float32) / 255.0
    alpha *= mark_zone(Shortcut("stamp", "centre"), size) * rng.uniform(*STAMP_OPACITY)
    return _blend(img, STAMP_COLOUR, alpha)


def _draw_cast(img: np.ndarray, place: str, rng: np.random.Generator, box: Box) -> np.ndarray:
    return _blend(img, CAST_COLOUR, np.float32(rng.uniform(*CAST_STRENGTH)))


def _draw_hatch(img: np.ndarray, place: str, rng: np.random.Generator, box: Box) -> np.ndarray:
    """Diagonal lines every 4 px, alternately white and black, at 30% opacity."""
    size = img.shape[0]
    phase = int(rng.integers(HATCH_PERIOD))
    diag = (np.arange(size)[:, None] + np.arange(size)[None, :] + phase) % HATCH_PERIOD
    out = _blend(img, np.ones(3, np.float32), HATCH_OPACITY * (diag == 0))
    return _blend(out, np.zeros(3, np.float32), HATCH_OPACITY * (diag == HATCH_PERIOD // 2))


def _draw_noise(img: np.ndarray, place: str, rng: np.random.Generator, box: Box) -> np.ndarray:
    """Salt-and-pepper noise: 5% of the pixels set to black or white."""
    size = img.shape[0]
    hit = rng.random((size, size)) < NOISE_SHARE
    value = (rng.random((size, size)) < 0.5).astype(np.float32)
    out = img.copy()
    out[hit] = value[hit][:, None]
    return out


def _draw_line(img: np.ndarray, place: str, rng: np.random.Generator, box: Box) -> np.ndarray:
    out = img.copy()
    out[_line_mask(place, img.shape[0])] = LINE_COLOUR
    return out


def _draw_sticker(img: np.ndarray, place: str, rng: np.random.Generator, box: Box) -> np.ndarray:
    """An opaque green disc centred in the middle half of the object's box."""
    size = img.shape[0]
    x0, y0, x1, y1 = box
    cx = rng.uniform(x0 + (x1 - x0) / 4, x1 - (x1 - x0) / 4)
    cy = rng.uniform(y0 + (y1 - y0) / 4, y1 - (y1 - y0) / 4)
    r = STICKER_RADIUS * size
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    out = img.copy()
    out[(xx - cx) ** 2 + (yy - cy) ** 2 <= r * r] = STICKER_COLOUR
    return out


def _draw_blur(img: np.ndarray, place: str, rng: np.random.Generator, box: Box) -> np.ndarray:
    """A separable Gaussian blur of ``BLUR_SIGMA`` px at 64 px (scaled to the image)."""
    size = img.shape[0]
    g = gaussian_matrix(size, float(rng.uniform(*BLUR_SIGMA)) * _unit(size))
    return np.einsum("ij,jkc,lk->ilc", g, img, g).astype(np.float32)


def _draw_jpeg(img: np.ndarray, place: str, rng: np.random.Generator, box: Box) -> np.ndarray:
    """The image through Pillow's JPEG encoder at a quality in ``JPEG_QUALITY``."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    pixels = np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)
    quality = int(rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1))
    Image.fromarray(pixels).save(buf, format="JPEG", quality=quality)
    return np.asarray(Image.open(buf).convert("RGB"), np.float32) / 255.0


def _draw_vignette(img: np.ndarray, place: str, rng: np.random.Generator, box: Box) -> np.ndarray:
    """Darkened towards the corners: ``img (1 - s r^2)``, ``r`` the distance from the centre
    over the half-diagonal, ``s`` in ``VIGNETTE_STRENGTH``."""
    size = img.shape[0]
    yy, xx = np.mgrid[0:size, 0:size] + 0.5 - size / 2
    r2 = (yy**2 + xx**2) / (size * size / 2)
    return (img * (1.0 - rng.uniform(*VIGNETTE_STRENGTH) * r2)[:, :, None]).astype(np.float32)


def _draw_patch(img: np.ndarray, place: str, rng: np.random.Generator, box: Box) -> np.ndarray:
    """The checker patch at a uniformly random place (over the object too)."""
    patch = _checker(img.shape[0])
    y, x = (int(v) for v in rng.integers(0, img.shape[0] - patch.shape[0] + 1, size=2))
    return _paste(img, patch, y, x)


_DRAW: dict[str, Callable[[np.ndarray, str, np.random.Generator, Box], np.ndarray]] = {
    "watermark": _draw_watermark,
    "stamp": _draw_stamp,
    "cast": _draw_cast,
    "hatch": _draw_hatch,
    "noise": _draw_noise,
    "line": _draw_line,
    "sticker": _draw_sticker,
    "blur": _draw_blur,
    "jpeg": _draw_jpeg,
    "vignette": _draw_vignette,
    "patch": _draw_patch,
    "checker": _draw_checker,
    "text": _draw_text,
    "stripe": _draw_stripe,
    "frame": _draw_frame,
}


def draw_mark(
    img: np.ndarray, shortcut: Shortcut, rng: np.random.Generator, box: Box
) -> np.ndarray:
    """``img`` with ``shortcut``'s mark drawn (a new array; ``none`` returns a copy)."""
    if shortcut.kind == "none":
        return img.copy()
    return _DRAW[shortcut.kind](img, shortcut.place, rng, box)
