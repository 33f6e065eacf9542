"""Base datasets the shortcuts are planted in: three of different make.

* ``shapes``: the bundled sample's images (64x64; a circle, square, triangle or plus-sign cross,
  axis aligned, in a saturated colour on a smooth synthetic texture; `fastfem.sample.dataset`).
* ``photos``: 96x96 random crops (random scale, position and mirror) of the colour photographs
  scikit-image ships in its wheel (astronaut, coffee, chelsea, rocket, Hubble deep field,
  immunohistochemistry, retina, plus the grass/gravel/brick textures; contrast 0.6 around the
  crop's mean), each with one object drawn with Pillow at a random scale (22-38 px across),
  rotation and position, anti-aliased (4x supersampled), in a saturated colour with a 1.5 px
  outline of the opposite brightness: a five-pointed ``star``, a ``ring``, a ``cross`` or a
  ``triangle``.
* ``letters``: 80x80, five classes, the capitals ``A``, ``E``, ``K``, ``R``, ``S`` in Pillow's
  own font (cap height 26-40 px, rotated by up to 25 degrees either way, anywhere in the frame,
  anti-aliased: 4x supersampled), in a saturated colour (HSV saturation 0.75-1, value 0.55-1,
  at least 0.4 from the background under it) over a background of another make: a linear
  gradient between two random colours plus 2-4 large soft Gaussian blobs and, half the time,
  one slow sinusoidal wave. Not tuned on: a check that the audit generalises.

A base renders one *scene* (background, object and 0.015 pixel noise, not clipped) from a NumPy
generator; the object's box (xyxy, x1/y1 exclusive, tight over its pixels) never touches the
``keep_out`` pixels, and the background's mean colour differs from ``avoid`` (a mark's colour)
by at least `MIN_MARK_CONTRAST` in some channel.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from benchmarks.shortcut_data.config import CONFIGS
from fastfem.sample.dataset import CLASS_NAMES as SHAPE_CLASSES
from fastfem.sample.dataset import IMAGE_SIZE as SHAPE_SIZE
from fastfem.sample.dataset import _background, _shape_colour, place_shape, shape_size_and_params

__all__ = ["BASES", "MIN_MARK_CONTRAST", "Base", "configs_of", "get_base"]

MIN_MARK_CONTRAST = 0.4  # max-channel |background mean - mark colour| of coloured marks
PIXEL_NOISE = 0.015
_TRIES = 200

Scene = tuple[np.ndarray, tuple[int, int, int, int]]


@dataclass(frozen=True)
class Base:
    """A base dataset: ``name``, square ``image_size``, ``class_names`` and ``scene(rng, label,
    keep_out, avoid) -> (image (S, S, 3) float32, box)`` (module docstring)."""

    name: str
    image_size: int
    class_names: tuple[str, ...]
    scene: Callable[[np.random.Generator, int, np.ndarray, np.ndarray | None], Scene]
    #: the configurations the benchmark plants in this base (empty: `config.CONFIGS`)
    configs: tuple[str, ...] = ()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def _far_from(bg: np.ndarray, avoid: np.ndarray | None) -> bool:
    return avoid is None or float(np.max(np.abs(bg - avoid))) >= MIN_MARK_CONTRAST


def _box_clear(keep_out: np.ndarray, box: tuple[int, int, int, int]) -> bool:
    x0, y0, x1, y1 = box
    return not keep_out[y0:y1, x0:x1].any()


def _tight_box(cover: np.ndarray) -> tuple[int, int, int, int]:
    """The box (x0, y0, x1, y1; x1/y1 exclusive) of the nonzero pixels of ``cover`` (H, W)."""
    rows, cols = np.flatnonzero(cover.any(axis=1)), np.flatnonzero(cover.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _background_far_from(
    draw: Callable[[np.random.Generator], np.ndarray],
    rng: np.random.Generator,
    avoid: np.ndarray | None,
) -> np.ndarray:
    """A background ``draw(rng)`` whose mean colour is far from ``avoid`` (`_far_from`),
    redrawn up to ``_TRIES`` times."""
    img = draw(rng)
    for _ in range(_TRIES):
        if _far_from(img.mean(axis=(0, 1)), avoid):
            return img
        img = draw(rng)
    # a few percent of backgrounds are redrawn; never all of them
    raise RuntimeError("no background far enough from the mark's colour")  # pragma: no cover


# ------------------------------------------------------------------------------ shapes
def _shapes_scene(
    rng: np.random.Generator, label: int, keep_out: np.ndarray, avoid: np.ndarray | None
) -> Scene:
    """The bundled sample's scene (`fastfem.sample.dataset`), shape clear of ``keep_out``."""
    img, bg = _background(rng)
    for _ in range(_TRIES):
        if _far_from(bg, avoid):
            break
        img, bg = _background(rng)
    else:  # pragma: no cover - a few percent of backgrounds are redrawn
        raise RuntimeError("no background far enough from the mark's colour")
    colour = _shape_colour(rng, bg)
    for _ in range(_TRIES):
        s, params = shape_size_and_params(rng, label)
        for _ in range(50):
            mask, box = place_shape(rng, label, s, params)
            if _box_clear(keep_out, box):
                img = np.where(mask[:, :, None], colour[None, None, :], img)
                img = img + rng.normal(0.0, PIXEL_NOISE, size=img.shape).astype(np.float32)
                return img.astype(np.float32), box
    raise RuntimeError("could not place a shape outside the mark's zone")  # pragma: no cover


# ------------------------------------------------------------------------------ photos
PHOTO_SIZE = 96
PHOTO_CLASSES: tuple[str, ...] = ("star", "ring", "cross", "triangle")
#: scikit-image's bundled photographs used as backgrounds (all ship in its wheel)
PHOTO_NAMES: tuple[str, ...] = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "grass",
    "gravel",
    "brick",
)
_SUPER = 4  # supersampling factor of the drawn objects
_RADIUS = (11.0, 19.0)  # object circumradius in px
_PHOTO_SHORT_SIDE = 256  # photos are downscaled to this shorter side once
PHOTO_CONTRAST = 0.6  # a crop's contrast around its mean (the objects stay the salient thing)


@functools.cache
def _photos() -> tuple[np.ndarray, ...]:
    """The background photographs, float32 RGB in [0.1, 0.85], shorter side 256 px."""
    try:
        from skimage import data
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("the 'photos' base needs scikit-image (pip install scikit-image)") from e
    from PIL import Image

    out = []
    for name in PHOTO_NAMES:
        arr = np.asarray(getattr(data, name)())
        if arr.ndim == 2:
            arr = np.repeat(arr[:, :, None], 3, axis=2)
        im = Image.fromarray(arr[:, :, :3].astype(np.uint8))
        scale = _PHOTO_SHORT_SIDE / min(im.size)
        im = im.resize((round(im.size[0] * scale), round(im.size[1] * scale)), Image.BILINEAR)
        out.append(0.1 + 0.75 * np.asarray(im, np.float32) / 255.0)
    return tuple(out)


def _photo_crop(rng: np.random.Generator) -> np.ndarray:
    """A random square crop (side 64..256 px) of a random photo, resized to 96 px, its
    contrast scaled by `PHOTO_CONTRAST` around its mean colour."""
    from PIL import Image

    photos = _photos()
    photo = photos[int(rng.integers(len(photos)))]
    h, w, _ = photo.shape
    side = int(rng.integers(64, min(h, w) + 1))
    y = int(rng.integers(h - side + 1))
    x = int(rng.integers(w - side + 1))
    crop = photo[y : y + side, x : x + side]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    channels = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(crop[:, :, c])).resize(
                (PHOTO_SIZE, PHOTO_SIZE), Image.BILINEAR
            )
        )
        for c in range(3)
    ]
    out = np.stack(channels, axis=-1).astype(np.float32)
    mean = out.mean(axis=(0, 1), keepdims=True)
    return (mean + PHOTO_CONTRAST * (out - mean)).astype(np.float32)


def _outline_polygon(label: int, r: float, theta: float) -> list[np.ndarray]:
    """Polygons (unit: px, centred at 0) of an object; a ring is two circles (outer, inner)."""
    if label == 0:  # star
        k = np.arange(10)
        rad = np.where(k % 2 == 0, r, 0.45 * r)
        ang = theta + k * np.pi / 5
        return [np.stack([rad * np.sin(ang), -rad * np.cos(ang)], axis=1)]
    if label == 1:  # ring
        ang = np.linspace(0.0, 2 * np.pi, 64, endpoint=False)
        circle = np.stack([np.cos(ang), np.sin(ang)], axis=1)
        return [r * circle, 0.58 * r * circle]
    if label == 2:  # cross: a plus sign of arm half-width 0.28 r, rotated
        t = 0.28 * r
        pts = np.asarray(
            [(t, -r), (t, -t), (r, -t), (r, t), (t, t), (t, r)]
            + [(-t, r), (-t, t), (-r, t), (-r, -t), (-t, -t), (-t, -r)]
        )
    else:  # triangle: equilateral
        ang = theta + np.arange(3) * 2 * np.pi / 3
        return [np.stack([r * np.sin(ang), -r * np.cos(ang)], axis=1)]
    c, s = np.cos(theta), np.sin(theta)
    return [pts @ np.asarray([[c, s], [-s, c]])]


def _object_masks(
    label: int, cx: float, cy: float, r: float, theta: float
) -> tuple[np.ndarray, np.ndarray]:
    """(fill, outline) coverage in [0, 1], (96, 96) float32, 4x supersampled."""
    from PIL import Image, ImageDraw

    big = PHOTO_SIZE * _SUPER
    fill = Image.new("L", (big, big), 0)
    edge = Image.new("L", (big, big), 0)
    df, de = ImageDraw.Draw(fill), ImageDraw.Draw(edge)
    polys = _outline_polygon(label, r, theta)
    for j, poly in enumerate(polys):
        pts = [(float(_SUPER * (cx + x)), float(_SUPER * (cy + y))) for x, y in poly]
        df.polygon(pts, fill=0 if j else 255)
        de.polygon(pts, outline=255, width=3 * _SUPER // 2 * 2)

    def down(im: Image.Image) -> np.ndarray:
        return np.asarray(im.reduce(_SUPER), np.float32) / 255.0

    return down(fill), down(edge)


def _photos_scene(
    rng: np.random.Generator, label: int, keep_out: np.ndarray, avoid: np.ndarray | None
) -> Scene:
    """A photo crop with one drawn object (module docstring), clear of ``keep_out``."""
    img = _background_far_from(_photo_crop, rng, avoid)
    for _ in range(_TRIES):
        r = float(rng.uniform(*_RADIUS))
        cx, cy = (float(v) for v in rng.uniform(r + 2, PHOTO_SIZE - r - 2, size=2))
        theta = float(rng.uniform(0.0, 2 * np.pi))
        fill, edge = _object_masks(label, cx, cy, r, theta)
        cover = np.maximum(fill, edge) > 0
        box = _tight_box(cover)
        if _box_clear(keep_out, box):
            break
    else:  # pragma: no cover
        raise RuntimeError("could not place an object outside the mark's zone")
    under = img[fill > 0.5].mean(axis=0)
    colour = _shape_colour(rng, under)
    dark = float(colour.mean()) > 0.5
    edge_colour = np.full(3, 0.05 if dark else 0.95, np.float32)
    img = img * (1 - edge[:, :, None]) + edge_colour * edge[:, :, None]
    img = img * (1 - fill[:, :, None]) + colour * fill[:, :, None]
    img = img + rng.normal(0.0, PIXEL_NOISE, size=img.shape).astype(np.float32)
    return img.astype(np.float32), box


# ------------------------------------------------------------------------------ letters
#: The letters base's configurations: every kind it was trained with, at places `CONFIGS`
#: does not use (the base was added to check that the reliance test's rules, tuned on the
#: other two, carry over to data of another make).
LETTER_CONFIGS: tuple[str, ...] = (
    "watermark@top",
    "line@middle",
    "hatch@whole",
    "noise@whole",
    "checker@bottom-right",
    "text@top-left",
    "stripe@top",
    "frame@border",
    "none",
)
LETTER_SIZE = 80
LETTER_CLASSES: tuple[str, ...] = ("A", "E", "K", "R", "S")
LETTER_HEIGHT = (26.0, 40.0)  # cap height in px
LETTER_ROTATION = 25.0  # max |rotation| in degrees
LETTER_BG = (0.15, 0.85)  # range of the gradient's two end colours (per channel)
LETTER_BLOBS = (2, 5)  # number of soft blobs, [lo, hi)
LETTER_BLOB_SIGMA = (0.15, 0.35)  # blob radius (Gaussian sigma) / S
LETTER_BLOB_AMP = 0.25  # max |blob colour offset| per channel
LETTER_WAVE_AMP = 0.08  # max |wave amplitude| per channel
LETTER_WAVE_PERIOD = (0.5, 1.5)  # wave period / S
_LETTER_MARGIN = 1  # px kept free between the glyph and the image border


@functools.cache
def _letter_font(px: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=px)


@functools.cache
def _cap_ratio() -> float:
    """Cap height of Pillow's default font / its size (about 0.7)."""
    left, top, right, bottom = _letter_font(400).getbbox("E")
    return (bottom - top) / 400.0


def _letters_background(rng: np.random.Generator) -> np.ndarray:
    """A linear gradient between two random colours in a random direction, plus 2-4 large soft
    Gaussian blobs of random colour offsets and (half the time) one smooth sinusoidal wave,
    clipped to [0.05, 0.95]: (80, 80, 3) float32."""
    s = LETTER_SIZE
    yy, xx = (np.mgrid[0:s, 0:s].astype(np.float32) + 0.5) / s
    c0, c1 = rng.uniform(*LETTER_BG, size=(2, 3)).astype(np.float32)
    angle = rng.uniform(0.0, 2 * np.pi)
    proj = (xx - 0.5) * np.cos(angle) + (yy - 0.5) * np.sin(angle)
    t = (proj - proj.min()) / (proj.max() - proj.min())
    img = c0 * (1 - t[:, :, None]) + c1 * t[:, :, None]
    for _ in range(int(rng.integers(*LETTER_BLOBS))):
        bx, by = rng.uniform(-0.1, 1.1, size=2)
        sigma = rng.uniform(*LETTER_BLOB_SIGMA)
        offset = rng.uniform(-LETTER_BLOB_AMP, LETTER_BLOB_AMP, size=3).astype(np.float32)
        g = np.exp(-((xx - bx) ** 2 + (yy - by) ** 2) / (2 * sigma**2))
        img = img + g[:, :, None] * offset
    if rng.random() < 0.5:
        wave_angle = rng.uniform(0.0, np.pi)
        period = rng.uniform(*LETTER_WAVE_PERIOD)
        phase = rng.uniform(0.0, 2 * np.pi)
        along = xx * np.cos(wave_angle) + yy * np.sin(wave_angle)
        wave = np.sin(2 * np.pi * along / period + phase)
        amp = rng.uniform(-LETTER_WAVE_AMP, LETTER_WAVE_AMP, size=3).astype(np.float32)
        img = img + wave[:, :, None] * amp
    return np.clip(img, 0.05, 0.95).astype(np.float32)


def _letter_glyph(label: int, height: float, degrees: float):
    """The letter's coverage at 4x (Pillow "L" image cropped tight), cap height ``height`` px
    (at 1x), rotated by ``degrees`` (counter-clockwise), anti-aliased."""
    from PIL import Image, ImageDraw

    font = _letter_font(max(8, round(_SUPER * height / _cap_ratio())))
    char = LETTER_CLASSES[label]
    left, top, right, bottom = font.getbbox(char)
    side = 2 * max(right - left, bottom - top) + 8
    im = Image.new("L", (side, side), 0)
    xy = (side / 2 - (left + right) / 2, side / 2 - (top + bottom) / 2)
    ImageDraw.Draw(im).text(xy, char, fill=255, font=font)
    im = im.rotate(degrees, resample=Image.BICUBIC)
    return im.crop(im.getbbox())


def _letter_colour(rng: np.random.Generator, under: np.ndarray) -> np.ndarray:
    """A saturated colour (HSV: saturation 0.75-1, value 0.55-1) at least 0.4 (max channel)
    from ``under``, the mean colour of the background under the letter."""
    import colorsys

    for _ in range(100):
        h, sat, val = rng.uniform(0.0, 1.0), rng.uniform(0.75, 1.0), rng.uniform(0.55, 1.0)
        colour = np.asarray(colorsys.hsv_to_rgb(h, sat, val), np.float32)
        if np.max(np.abs(colour - under)) >= MIN_MARK_CONTRAST:
            return colour
    return (1.0 - under).astype(np.float32)  # pragma: no cover - never reached in practice


def _letters_scene(
    rng: np.random.Generator, label: int, keep_out: np.ndarray, avoid: np.ndarray | None
) -> Scene:
    """A letter on a gradient-and-blobs background (module docstring), clear of ``keep_out``."""
    from PIL import Image

    img = _background_far_from(_letters_background, rng, avoid)
    big = LETTER_SIZE * _SUPER
    lo = _LETTER_MARGIN * _SUPER
    for _ in range(_TRIES):
        height = float(rng.uniform(*LETTER_HEIGHT))
        degrees = float(rng.uniform(-LETTER_ROTATION, LETTER_ROTATION))
        glyph = _letter_glyph(label, height, degrees)
        gw, gh = glyph.size
        x = int(rng.integers(lo, big - lo - gw + 1))
        y = int(rng.integers(lo, big - lo - gh + 1))
        canvas = Image.new("L", (big, big), 0)
        canvas.paste(glyph, (x, y))
        cover = np.asarray(canvas.reduce(_SUPER), np.float32) / 255.0
        box = _tight_box(cover)
        if _box_clear(keep_out, box):
            break
    else:  # pragma: no cover
        raise RuntimeError("could not place a letter outside the mark's zone")
    colour = _letter_colour(rng, img[cover > 0.5].mean(axis=0))
    img = img * (1 - cover[:, :, None]) + colour * cover[:, :, None]
    img = img + rng.normal(0.0, PIXEL_NOISE, size=img.shape).astype(np.float32)
    return img.astype(np.float32), box


BASES: dict[str, Base] = {
    "shapes": Base("shapes", SHAPE_SIZE, SHAPE_CLASSES, _shapes_scene),
    "photos": Base("photos", PHOTO_SIZE, PHOTO_CLASSES, _photos_scene),
    "letters": Base("letters", LETTER_SIZE, LETTER_CLASSES, _letters_scene, LETTER_CONFIGS),
}


def configs_of(base: str | Base) -> tuple[str, ...]:
    """The configuration names the benchmark plants in ``base``."""
    return get_base(base).configs or tuple(c.name for c in CONFIGS)


def get_base(name: str | Base) -> Base:
    """The base dataset called ``name`` (one of `BASES`)."""
    if isinstance(name, Base):
        return name
    if name not in BASES:
        raise ValueError(f"unknown base dataset {name!r}; expected one of {sorted(BASES)}")
    return BASES[name]
