"""Planted-shortcut variants of the bundled sample: the ground truth of the shortcut benchmark.

The bundled sample (`fastfem.sample.dataset`) plants ONE shortcut: a checker patch in the
bottom-right corner. This module plants other shortcuts — other kinds at other places — in the
same coloured-shapes images, so that an audit's flags can be scored against a known truth
wherever the shortcut sits and whatever it looks like.

A *configuration* is a mark ``kind`` at a ``place``:

* ``checker``: the bundled 6x6 black/white checker patch (2x2 px cells);
* ``text``: three random glyphs of a 3x5 bitmap font, white with a 1 px black outline
  (13x7 px; different characters in every image, like a burnt-in tag or ID);
* ``stripe``: a 2 px yellow line along a whole edge, 1 px from it, with black ticks every 4 px
  (a ruler);
* ``frame``: a 2 px magenta frame around the whole image (place ``border``).

Patch marks (checker, text) sit at one of nine places, 2 px from the borders: the four corners
(``top-left`` ...), the four edge middles (``top``, ``left``, ``right``, ``bottom``) or the
``centre``; stripes run along ``top``, ``bottom``, ``left`` or ``right``.

Per split (the bundled sample's rules): ``MARK_RATE`` = 10% of the images carry the mark. In
``train`` the mark goes with class 0 (``circle``): 80% of the marked images are circles, so a
model trained there has a shortcut to learn. In ``test`` the mark is independent of the label;
``ShortcutSet.marked`` is the ground truth of an audit ("this test image carries the mark").
``holdout`` is a second test split (another seed, 512 images) for checking that results are
not specific to the test images a detector was developed on.
The ``none`` configuration plants nothing (the control).

In every image of a configuration (marked or not) the shape's box keeps 2 px away from the
mark's zone, so a mark never covers the object and the boxes stay exact; for the ``centre``
configurations this limits shapes to 26 px (a larger shape cannot avoid the centre). Likewise
a coloured mark (stripe, frame) never blends into the background: in every image of those
configurations the background's mean colour differs from the mark's colour by at least
``MIN_MARK_CONTRAST`` in some channel (as shapes do from their background; the black/white
checker and outlined text contrast with any background). Image
``i`` of a split is drawn from ``np.random.default_rng([split seed, config seed, i])``:
deterministic and independent of how many images are asked for.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .dataset import (
    IMAGE_SIZE,
    SPLITS,
    TRAIN_WATERMARK_CLASS,
    TRAIN_WATERMARK_PURITY,
    WATERMARK_MARGIN,
    WATERMARK_RATE,
    _background,
    _shape_colour,
    draw_label_and_watermark,
    place_shape,
    shape_size_and_params,
    watermark_patch,
)

__all__ = [
    "CONFIGS",
    "KINDS",
    "MARK_RATE",
    "PLACES",
    "Shortcut",
    "ShortcutSet",
    "generate_shortcut",
    "mark_zone",
    "parse_shortcut",
]

MARK_RATE = WATERMARK_RATE  # fraction of marked images, every split
#: split name -> (seed, default number of images): the bundled sample's, and a second test split
SHORTCUT_SPLITS: dict[str, tuple[int, int]] = {**SPLITS, "holdout": (20240613, 512)}
MARK_CLASS = TRAIN_WATERMARK_CLASS  # the class the mark goes with in "train"
MARK_PURITY = TRAIN_WATERMARK_PURITY  # P(class == MARK_CLASS | marked) in "train"
MARGIN = WATERMARK_MARGIN  # px between a patch mark and the image border
ZONE_GAP = 2  # px the shapes keep away from the mark's zone
MIN_MARK_CONTRAST = 0.4  # max-channel |background mean - mark colour| of coloured marks

PATCH_PLACES: tuple[str, ...] = (
    "top-left",
    "top",
    "top-right",
    "left",
    "centre",
    "right",
    "bottom-left",
    "bottom",
    "bottom-right",
)
EDGES: tuple[str, ...] = ("top", "bottom", "left", "right")
#: kind -> the places it can take
PLACES: dict[str, tuple[str, ...]] = {
    "checker": PATCH_PLACES,
    "text": PATCH_PLACES,
    "stripe": EDGES,
    "frame": ("border",),
    "none": ("",),
}
KINDS: tuple[str, ...] = tuple(PLACES)

STRIPE_COLOUR = np.asarray([1.0, 0.9, 0.1], np.float32)
FRAME_COLOUR = np.asarray([0.9, 0.1, 0.8], np.float32)
#: kind -> the colour of a coloured mark
MARK_COLOURS: dict[str, np.ndarray] = {"stripe": STRIPE_COLOUR, "frame": FRAME_COLOUR}
STRIPE_WIDTH = 2
FRAME_WIDTH = 2
TICK_EVERY = 4

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
TEXT_SIZE = (7, 13)  # (h, w) of the outlined text block


@dataclass(frozen=True)
class Shortcut:
    """A planted mark: ``kind`` (one of `KINDS`) at ``place`` (one of ``PLACES[kind]``)."""

    kind: str
    place: str

    def __post_init__(self) -> None:
        if self.kind not in PLACES:
            raise ValueError(f"unknown shortcut kind {self.kind!r}; expected one of {KINDS}")
        if self.place not in PLACES[self.kind]:
            raise ValueError(
                f"shortcut kind {self.kind!r} cannot sit at {self.place!r}; "
                f"expected one of {PLACES[self.kind]}"
            )

    @property
    def name(self) -> str:
        """``"kind@place"`` (``"none"`` for the control)."""
        return "none" if self.kind == "none" else f"{self.kind}@{self.place}"


def parse_shortcut(name: str) -> Shortcut:
    """``"checker@top-left"`` -> ``Shortcut("checker", "top-left")``; ``"none"`` -> control."""
    if name == "none":
        return Shortcut("none", "")
    kind, sep, place = name.partition("@")
    if not sep:
        raise ValueError(f"shortcut name {name!r} is not 'kind@place' (or 'none')")
    return Shortcut(kind, place)


#: The benchmark's configurations: every kind, at corners, edge middles and the centre.
CONFIGS: tuple[Shortcut, ...] = tuple(
    parse_shortcut(n)
    for n in (
        "checker@top-left",
        "checker@bottom-left",
        "checker@top",
        "checker@right",
        "checker@centre",
        "text@top-right",
        "text@bottom",
        "text@left",
        "text@centre",
        "stripe@top",
        "stripe@left",
        "frame@border",
        "none",
    )
)


@dataclass(frozen=True)
class ShortcutSet:
    """Generated images of one configuration and split, with their ground truth.

    ``images`` (n, 64, 64, 3) float32 in [0, 1]; ``labels`` (n,) class indices; ``boxes``
    (n, 4) xyxy shape boxes; ``marked`` (n,) bool, True where the mark is planted; ``ids``
    ``"<split>-<i:05d>"``; ``shortcut`` the configuration.
    """

    images: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray
    marked: np.ndarray
    ids: list[str]
    shortcut: Shortcut

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def _patch_origin(place: str, h: int, w: int) -> tuple[int, int]:
    """Top-left pixel of an (h, w) patch at ``place``, ``MARGIN`` px from the borders."""
    vertical, _, horizontal = place.partition("-") if "-" in place else (place, "", place)
    y = {"top": MARGIN, "bottom": IMAGE_SIZE - MARGIN - h}.get(vertical, (IMAGE_SIZE - h) // 2)
    x = {"left": MARGIN, "right": IMAGE_SIZE - MARGIN - w}.get(horizontal, (IMAGE_SIZE - w) // 2)
    return y, x


def _patch_size(kind: str) -> tuple[int, int]:
    size = watermark_patch().shape
    return (int(size[0]), int(size[1])) if kind == "checker" else TEXT_SIZE


def mark_zone(shortcut: Shortcut) -> np.ndarray:
    """(64, 64) bool: the pixels the mark may cover (empty for ``none``)."""
    zone = np.zeros((IMAGE_SIZE, IMAGE_SIZE), bool)
    kind, place = shortcut.kind, shortcut.place
    if kind in ("checker", "text"):
        h, w = _patch_size(kind)
        y, x = _patch_origin(place, h, w)
        zone[y : y + h, x : x + w] = True
    elif kind == "stripe":
        lo, hi = 1, 1 + STRIPE_WIDTH
        sl = {"top": np.s_[lo:hi, :], "bottom": np.s_[-hi:-lo, :]}
        sl.update(left=np.s_[:, lo:hi], right=np.s_[:, -hi:-lo])
        zone[sl[place]] = True
    elif kind == "frame":
        zone[:FRAME_WIDTH, :] = zone[-FRAME_WIDTH:, :] = True
        zone[:, :FRAME_WIDTH] = zone[:, -FRAME_WIDTH:] = True
    return zone


def _draw_checker(img: np.ndarray, place: str, rng: np.random.Generator) -> None:
    patch = watermark_patch()
    y, x = _patch_origin(place, *patch.shape)
    img[y : y + patch.shape[0], x : x + patch.shape[1], :] = patch[:, :, None]


def _text_bitmap(chars: str) -> np.ndarray:
    """(5, 4 len - 1) bool glyph pixels of ``chars`` (1 px between glyphs)."""
    out = np.zeros((5, 4 * len(chars) - 1), bool)
    for j, c in enumerate(chars):
        rows = np.asarray(_FONT_ROWS[c])
        out[:, 4 * j : 4 * j + 3] = (rows[:, None] >> np.asarray([2, 1, 0])[None, :]) & 1 == 1
    return out


def _draw_text(img: np.ndarray, place: str, rng: np.random.Generator) -> None:
    chars = "".join(rng.choice(list(GLYPHS), size=TEXT_GLYPHS))
    glyph = np.pad(_text_bitmap(chars), 1)  # (7, 13)
    outline = np.zeros_like(glyph)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            outline |= np.roll(np.roll(glyph, dy, 0), dx, 1)
    y, x = _patch_origin(place, *glyph.shape)
    region = img[y : y + glyph.shape[0], x : x + glyph.shape[1], :]
    region[outline] = 0.0
    region[glyph] = 1.0


def _draw_stripe(img: np.ndarray, place: str, rng: np.random.Generator) -> None:
    zone = mark_zone(Shortcut("stripe", place))
    img[zone] = STRIPE_COLOUR
    along = np.arange(IMAGE_SIZE) % TICK_EVERY == 0
    ticks = zone & (along[None, :] if place in ("top", "bottom") else along[:, None])
    img[ticks] = 0.0


def _draw_frame(img: np.ndarray, place: str, rng: np.random.Generator) -> None:
    img[mark_zone(Shortcut("frame", place))] = FRAME_COLOUR


_DRAW: dict[str, Callable[[np.ndarray, str, np.random.Generator], None]] = {
    "checker": _draw_checker,
    "text": _draw_text,
    "stripe": _draw_stripe,
    "frame": _draw_frame,
}


def _keep_out(shortcut: Shortcut) -> np.ndarray:
    """The mark's zone grown by ``ZONE_GAP`` px (a shape's box must not touch it)."""
    zone = mark_zone(shortcut)
    grown = zone.copy()
    for dy in range(-ZONE_GAP, ZONE_GAP + 1):
        for dx in range(-ZONE_GAP, ZONE_GAP + 1):
            shifted = np.zeros_like(zone)
            ys = slice(max(dy, 0), IMAGE_SIZE + min(dy, 0))
            yd = slice(max(-dy, 0), IMAGE_SIZE + min(-dy, 0))
            xs = slice(max(dx, 0), IMAGE_SIZE + min(dx, 0))
            xd = slice(max(-dx, 0), IMAGE_SIZE + min(-dx, 0))
            shifted[ys, xs] = zone[yd, xd]
            grown |= shifted
    return grown


def _place_shape(
    rng: np.random.Generator, label: int, keep_out: np.ndarray
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A shape mask of class ``label`` whose box does not touch ``keep_out``."""
    for _ in range(200):
        s, params = shape_size_and_params(rng, label)
        for _ in range(50):
            mask, box = place_shape(rng, label, s, params)
            if not keep_out[box[1] : box[3], box[0] : box[2]].any():
                return mask, box
    raise RuntimeError("could not place a shape outside the mark's zone")  # pragma: no cover


def _render(split: str, shortcut: Shortcut, seed: int, i: int):
    """Image ``i``: (image, label, box, marked)."""
    rng = np.random.default_rng([seed, zlib.crc32(shortcut.name.encode()), i])
    label, marked = draw_label_and_watermark(rng, split)
    marked = marked and shortcut.kind != "none"
    img, bg = _background(rng)
    mark_colour = MARK_COLOURS.get(shortcut.kind)
    while mark_colour is not None and np.max(np.abs(bg - mark_colour)) < MIN_MARK_CONTRAST:
        img, bg = _background(rng)
    colour = _shape_colour(rng, bg)
    mask, box = _place_shape(rng, label, _keep_out(shortcut))
    img = np.where(mask[:, :, None], colour[None, None, :], img)
    img = img + rng.normal(0.0, 0.015, size=img.shape).astype(np.float32)
    if marked:
        _DRAW[shortcut.kind](img, shortcut.place, rng)
    return np.clip(img, 0.0, 1.0).astype(np.float32), label, box, marked


def generate_shortcut(
    shortcut: Shortcut | str, split: str = "test", n: int | None = None
) -> ShortcutSet:
    """The first ``n`` images of ``split`` with ``shortcut`` planted (default n: 4000 train,
    512 test or holdout)."""
    if isinstance(shortcut, str):
        shortcut = parse_shortcut(shortcut)
    if split not in SHORTCUT_SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(SHORTCUT_SPLITS)}")
    seed, default_n = SHORTCUT_SPLITS[split]
    n = default_n if n is None else int(n)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    images = np.empty((n, IMAGE_SIZE, IMAGE_SIZE, 3), np.float32)
    labels = np.empty((n,), np.int64)
    boxes = np.empty((n, 4), np.int64)
    marked = np.empty((n,), bool)
    for i in range(n):
        images[i], labels[i], boxes[i], marked[i] = _render(split, shortcut, seed, i)
    ids = [f"{split}-{i:05d}" for i in range(n)]
    return ShortcutSet(images, labels, boxes, marked, ids, shortcut)
