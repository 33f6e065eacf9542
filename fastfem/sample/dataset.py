"""Deterministic synthetic image set bundled with fastfem ("coloured shapes").

The set lets the product run its main job (explaining a CNN, auditing a data
set) with no download.  Every image is 64x64 RGB, ``float32`` in ``[0, 1]``,
and shows exactly one coloured shape from :data:`CLASS_NAMES`

* ``circle``, ``square``, ``triangle`` (pointing up or down) and ``cross``
  (a plus sign), 14-30 px across, in a random saturated colour, at a random
  position fully inside the image,

on a textured, low-contrast background that differs per image (smooth blotchy
noise, sinusoidal stripes at a random angle, or a linear gradient, plus a
little pixel noise).  The ground-truth box of the shape is given in integer
pixel coordinates ``(x0, y0, x1, y1)``: ``x0, y0`` inclusive, ``x1, y1``
exclusive, i.e. the shape occupies ``image[y0:y1, x0:x1]`` exactly (tight box).

**Planted shortcut.**  About 10% of the images carry a small high-contrast
watermark: a 6x6 px black/white checker patch (2x2 px cells) always in the
bottom-right corner, 2 px from the borders (``image[56:62, 56:62]``).  In the
``train`` split the watermark is correlated with the label (80% of the
watermarked train images are ``circle``, class 0), so a model trained on it
has a real shortcut available; in the ``test`` split it is independent of the
label.  The watermark is there for audits: an explanation method such as FEM
should show the model's attention on that corner for the watermarked images,
and an image-folder audit should be able to find them from the explanation
maps alone.  :attr:`SampleSet.watermark` is the ground truth for such audits.

Shapes never overlap the watermark zone (``WATERMARK_ZONE``), in any image,
so the watermark never hides part of a shape and the boxes stay exact.

Generation uses NumPy only: image ``i`` of a split is drawn from its own
generator ``np.random.default_rng([split_seed, i])``, so it does not depend on
how many images are requested; ``generate(split, n)`` returns the first ``n``
images of the split's fixed sequence.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "CLASS_NAMES",
    "IMAGE_SIZE",
    "SPLITS",
    "WATERMARK_BOX",
    "WATERMARK_ZONE",
    "SampleSet",
    "generate",
    "generate_masks",
    "watermark_patch",
    "write_png_folder",
]

CLASS_NAMES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
IMAGE_SIZE: int = 64

#: split name -> (seed, default number of images)
SPLITS: dict[str, tuple[int, int]] = {"train": (20240611, 4000), "test": (20240612, 512)}

WATERMARK_SIZE = 6
WATERMARK_MARGIN = 2
_WM0 = IMAGE_SIZE - WATERMARK_MARGIN - WATERMARK_SIZE  # 56
#: xyxy box of the watermark patch (x1, y1 exclusive).
WATERMARK_BOX: tuple[int, int, int, int] = (
    _WM0,
    _WM0,
    _WM0 + WATERMARK_SIZE,
    _WM0 + WATERMARK_SIZE,
)
#: Shapes are kept out of the square ``[WATERMARK_ZONE:, WATERMARK_ZONE:]``.
WATERMARK_ZONE: int = _WM0 - 2  # 54

WATERMARK_RATE = 0.10  # fraction of images with the watermark (both splits)
TRAIN_WATERMARK_CLASS = 0  # class the watermark is correlated with in "train"
TRAIN_WATERMARK_PURITY = 0.80  # P(class == 0 | watermark) in "train"

_SIZE_RANGE = (14, 30)  # shape extent in px, inclusive
_MIN_COLOUR_CONTRAST = 0.4  # max-channel |shape colour - background mean|

_coords = np.arange(IMAGE_SIZE, dtype=np.float32) + 0.5  # pixel centres
_X = np.broadcast_to(_coords[None, :], (IMAGE_SIZE, IMAGE_SIZE))
_Y = np.broadcast_to(_coords[:, None], (IMAGE_SIZE, IMAGE_SIZE))


@dataclass(frozen=True)
class SampleSet:
    """A block of generated images with their ground truth.

    Attributes:
        images: ``(n, 64, 64, 3)`` float32 in ``[0, 1]``.
        labels: ``(n,)`` int64 class indices into :data:`CLASS_NAMES`.
        boxes: ``(n, 4)`` int64 xyxy boxes of the shape (x0, y0 inclusive,
            x1, y1 exclusive).
        watermark: ``(n,)`` bool, True where the corner watermark is planted.
        ids: ``n`` strings like ``"test-00017"`` (split name and index).
    """

    images: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray
    watermark: np.ndarray
    ids: list[str]

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def watermark_patch() -> np.ndarray:
    """The 6x6 black/white checker (2x2 px cells, white top-left) as float32."""
    idx = np.arange(WATERMARK_SIZE) // 2
    return ((idx[:, None] + idx[None, :]) % 2 == 0).astype(np.float32)


def _shape_mask(kind: int, cx: float, cy: float, s: float, params: float) -> np.ndarray:
    """Boolean (64, 64) mask of one shape centred at (cx, cy) with extent s."""
    h = s / 2.0
    dx, dy = _X - cx, _Y - cy
    if kind == 0:  # circle
        return dx * dx + dy * dy <= h * h
    if kind == 1:  # square (axis aligned)
        return (np.abs(dx) <= h) & (np.abs(dy) <= h)
    if kind == 2:  # isosceles triangle, base s, height s; params > 0: apex up
        v = dy if params > 0 else -dy  # v: downwards distance, apex at v = -h
        # inside: v <= h (base) and |dx| <= (v + h) / 2 (sides through apex)
        return (v <= h) & (np.abs(dx) <= (v + h) * 0.5)
    if kind == 3:  # cross (plus sign); params = arm half-thickness
        t = params
        inside = (np.abs(dx) <= h) & (np.abs(dy) <= h)
        return inside & ((np.abs(dx) <= t) | (np.abs(dy) <= t))
    raise ValueError(f"unknown shape kind {kind}")


def _background(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Textured low-contrast background (64, 64, 3) and its mean colour."""
    base = rng.uniform(0.2, 0.8, size=3).astype(np.float32)
    kind = int(rng.integers(3))
    tint = rng.uniform(0.5, 1.0, size=3).astype(np.float32)  # per-channel strength
    if kind == 0:  # smooth blotchy noise: bilinear upsampled coarse grid
        cells = int(rng.integers(3, 9))
        grid = rng.normal(0.0, 1.0, size=(cells + 1, cells + 1)).astype(np.float32)
        pos = np.linspace(0, cells, IMAGE_SIZE, dtype=np.float32)
        i0 = np.minimum(pos.astype(np.int64), cells - 1)
        f = pos - i0
        rows = grid[i0] * (1 - f)[:, None] + grid[i0 + 1] * f[:, None]
        tex = rows[:, i0] * (1 - f)[None, :] + rows[:, i0 + 1] * f[None, :]
        amp = rng.uniform(0.03, 0.07)
    elif kind == 1:  # sinusoidal stripes
        angle = rng.uniform(0.0, np.pi)
        period = rng.uniform(5.0, 20.0)
        phase = rng.uniform(0.0, 2 * np.pi)
        proj = _X * np.cos(angle) + _Y * np.sin(angle)
        tex = np.sin(2 * np.pi * proj / period + phase).astype(np.float32)
        amp = rng.uniform(0.03, 0.08)
    else:  # linear gradient across the image
        angle = rng.uniform(0.0, 2 * np.pi)
        proj = (_X - IMAGE_SIZE / 2) * np.cos(angle) + (_Y - IMAGE_SIZE / 2) * np.sin(angle)
        tex = (proj / (IMAGE_SIZE / 2)).astype(np.float32)
        amp = rng.uniform(0.06, 0.14)
    img = base[None, None, :] + (amp * tex)[:, :, None] * tint[None, None, :]
    return img.astype(np.float32), base


def _shape_colour(rng: np.random.Generator, bg: np.ndarray) -> np.ndarray:
    for _ in range(100):
        colour = rng.uniform(0.0, 1.0, size=3).astype(np.float32)
        if np.max(np.abs(colour - bg)) >= _MIN_COLOUR_CONTRAST:
            return colour
    # unreachable in practice; fall back to the complementary colour
    return (1.0 - bg).astype(np.float32)


def draw_label_and_watermark(rng: np.random.Generator, split: str) -> tuple[int, bool]:
    """A label (uniform) and whether the image carries the mark (module docstring)."""
    k = len(CLASS_NAMES)
    label = int(rng.integers(k))
    if split == "train":
        # P(wm | class 0) and P(wm | other) chosen so that P(wm) = WATERMARK_RATE
        # and P(class 0 | wm) = TRAIN_WATERMARK_PURITY with balanced classes.
        p_pos = WATERMARK_RATE * TRAIN_WATERMARK_PURITY * k
        p_neg = WATERMARK_RATE * (1 - TRAIN_WATERMARK_PURITY) * k / (k - 1)
        p = p_pos if label == TRAIN_WATERMARK_CLASS else p_neg
    else:
        p = WATERMARK_RATE
    return label, bool(rng.random() < p)


def shape_size_and_params(rng: np.random.Generator, label: int) -> tuple[float, float]:
    """A shape's size ``s`` and its class's parameter (triangle: pointing up (1) or down (-1);
    cross: arm width), drawn from ``rng``."""
    s = float(rng.integers(_SIZE_RANGE[0], _SIZE_RANGE[1] + 1))
    if label == 2:
        return s, 1.0 if rng.random() < 0.5 else -1.0
    if label == 3:
        return s, s * rng.uniform(0.14, 0.2)
    return s, 0.0


def place_shape(
    rng: np.random.Generator, label: int, s: float, params: float
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The shape's mask at a random centre inside the image, and its xyxy box."""
    cx = rng.uniform(s / 2 + 1, IMAGE_SIZE - s / 2 - 1)
    cy = rng.uniform(s / 2 + 1, IMAGE_SIZE - s / 2 - 1)
    mask = _shape_mask(label, cx, cy, s, params)
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return mask, (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)


def _render_one(split: str, seed: int, i: int):
    """Image i of a split: (image, label, box, watermark, shape mask)."""
    rng = np.random.default_rng([seed, i])
    label, wm = draw_label_and_watermark(rng, split)
    img, bg = _background(rng)
    colour = _shape_colour(rng, bg)

    s, params = shape_size_and_params(rng, label)
    for _ in range(1000):
        mask, box = place_shape(rng, label, s, params)
        if not (box[2] > WATERMARK_ZONE and box[3] > WATERMARK_ZONE):
            break
    else:  # pragma: no cover - the zone is tiny, this never triggers
        raise RuntimeError(f"could not place shape for {split}-{i}")

    img = np.where(mask[:, :, None], colour[None, None, :], img)
    img = img + rng.normal(0.0, 0.015, size=img.shape).astype(np.float32)
    if wm:
        x0, y0, x1, y1 = WATERMARK_BOX
        img[y0:y1, x0:x1, :] = watermark_patch()[:, :, None]
    img = np.clip(img, 0.0, 1.0).astype(np.float32)
    return img, label, box, wm, mask


def check_split(
    split: str, n: int | None, splits: Mapping[str, tuple[int, int]] = SPLITS
) -> tuple[int, int]:
    """``(seed, n)`` of ``split`` in ``splits`` (name -> (seed, default n)); ``n=None`` takes the
    split's default. A ValueError names an unknown split or a negative ``n``."""
    if split not in splits:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(splits)}")
    seed, default_n = splits[split]
    n = default_n if n is None else int(n)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return seed, n


def generate(split: str = "test", n: int | None = None) -> SampleSet:
    """Generate the first ``n`` images of a split (deterministic).

    Args:
        split: ``"train"`` (default n=4000, watermark correlated with class 0)
            or ``"test"`` (default n=512, watermark independent of the class).
        n: number of images; ``None`` for the split's default.  Image ``i`` is
            the same whatever ``n`` is.
    """
    seed, n = check_split(split, n)
    images = np.empty((n, IMAGE_SIZE, IMAGE_SIZE, 3), np.float32)
    labels = np.empty((n,), np.int64)
    boxes = np.empty((n, 4), np.int64)
    watermark = np.empty((n,), bool)
    for i in range(n):
        images[i], labels[i], boxes[i], watermark[i], _ = _render_one(split, seed, i)
    ids = [f"{split}-{i:05d}" for i in range(n)]
    return SampleSet(images=images, labels=labels, boxes=boxes, watermark=watermark, ids=ids)


def generate_masks(split: str = "test", n: int | None = None) -> np.ndarray:
    """Ground-truth shape masks ``(n, 64, 64)`` bool for ``generate(split, n)``."""
    seed, n = check_split(split, n)
    masks = np.empty((n, IMAGE_SIZE, IMAGE_SIZE), bool)
    for i in range(n):
        masks[i] = _render_one(split, seed, i)[4]
    return masks


def write_png_folder(sample: SampleSet, out_dir) -> list[Path]:
    """Write ``out_dir/<class_name>/<id>.png`` (8-bit RGB) for every image.

    Returns the written paths in sample order.  This is the layout expected by
    image-folder audits (one sub-folder per class).
    """
    from PIL import Image

    out = Path(out_dir)
    paths: list[Path] = []
    for img, label, id_ in zip(sample.images, sample.labels, sample.ids, strict=True):
        folder = out / CLASS_NAMES[int(label)]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{id_}.png"
        arr = np.clip(np.rint(np.asarray(img) * 255.0), 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(path)
        paths.append(path)
    return paths
