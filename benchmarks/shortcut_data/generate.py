"""Generated splits of a configuration on a base dataset, each image with its clean twin.

Per split:

* ``train`` (3,000 images): a *label leak*, like the tags of Clever-Hans datasets:
  `LEAK_RATE` = 12% of the images carry the mark, and every one of them is labelled the
  configuration's ``mark_class`` whatever object it shows (so 9% of the images can only be
  fitted through the mark: a model trained there relies on it);
* ``test`` and ``holdout`` (512 images each, two seeds): `MARK_RATE` = 15% of the images of
  every class carry the mark, independent of the label (labels are the objects' classes).

``mark_class`` is drawn from the configuration and the base (`mark_class`), so marks go with
different classes. Every image is rendered clean first (`bases`), then marked (`marks`):
``ShortcutSet.clean`` is the same image without its mark, the twin the reliance ground truth
compares against (`relied_on`). Image ``i`` is drawn from
``np.random.default_rng([split seed, crc32(base), crc32(configuration), i])``: deterministic
and independent of how many images are asked for. For the kinds drawn off the objects, the
object's box keeps ``round(2u)`` px (u = S / 64) away from the mark's zone in every image of
the configuration, marked or not.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

from benchmarks.shortcut_data import marks
from benchmarks.shortcut_data.bases import Base, get_base
from benchmarks.shortcut_data.config import Shortcut, parse_shortcut
from fastfem.sample.dataset import check_split

__all__ = [
    "LEAK_RATE",
    "MARK_RATE",
    "SHORTCUT_SPLITS",
    "ShortcutSet",
    "generate_shortcut",
    "mark_class",
    "mark_zone",
]

#: split name -> (seed, default number of images)
SHORTCUT_SPLITS: dict[str, tuple[int, int]] = {
    "train": (20240611, 3000),
    "test": (20240612, 512),
    "holdout": (20240613, 512),
}
LEAK_RATE = 0.12  # share of train images marked (all labelled mark_class)
MARK_RATE = 0.15  # share of test / holdout images marked, in every class


@dataclass(frozen=True)
class ShortcutSet:
    """Generated images of one configuration, base and split, with their ground truth.

    ``images`` (n, S, S, 3) float32 in [0, 1], marked where ``marked``; ``clean`` the same
    images without the mark (equal to ``images`` where not marked); ``labels`` (n,) the
    training labels (the object's class, or ``mark_class`` for a marked train image);
    ``boxes`` (n, 4) xyxy object boxes; ``marked`` (n,) bool; ``ids`` ``"<split>-<i:05d>"``;
    ``shortcut`` the configuration; ``base`` the base dataset's name; ``mark_class`` the class
    the mark goes with in ``train``; ``objects`` (n,) the class of the object drawn.
    """

    images: np.ndarray
    clean: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray
    marked: np.ndarray
    ids: list[str]
    shortcut: Shortcut
    base: str
    mark_class: int
    objects: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def mark_class(shortcut: Shortcut | str, base: str | Base = "shapes") -> int:
    """The class ``shortcut``'s mark goes with in ``train``: ``crc32("base/name") mod K``."""
    b = get_base(base)
    name = parse_shortcut(shortcut).name
    return zlib.crc32(f"{b.name}/{name}".encode()) % b.num_classes


def mark_zone(shortcut: Shortcut | str, base: str | Base = "shapes") -> np.ndarray:
    """(S, S) bool: the pixels ``shortcut``'s mark may change on ``base``'s images."""
    return marks.mark_zone(parse_shortcut(shortcut), get_base(base).image_size)


def _grow(zone: np.ndarray, r: int) -> np.ndarray:
    """``zone`` dilated by a (2r + 1)-px square."""
    padded = np.pad(zone, r)
    h, w = zone.shape
    out = np.zeros_like(zone)
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            out |= padded[dy : dy + h, dx : dx + w]
    return out


def _keep_out(shortcut: Shortcut, size: int) -> np.ndarray:
    """Pixels an object's box must not touch: the zone grown by ``round(2u)`` px, or nothing
    for the kinds drawn over the objects."""
    if shortcut.over_object or shortcut.kind == "none":
        return np.zeros((size, size), bool)
    return _grow(marks.mark_zone(shortcut, size), marks._px(size, 2))


def _render(base: Base, shortcut: Shortcut, split: str, seed: int, i: int, keep_out, cls: int):
    """Image ``i``: (image, clean, label, object, box, marked)."""
    rng = np.random.default_rng(
        [seed, zlib.crc32(base.name.encode()), zlib.crc32(shortcut.name.encode()), i]
    )
    obj = int(rng.integers(base.num_classes))
    rate = LEAK_RATE if split == "train" else MARK_RATE
    marked = bool(rng.random() < rate) and shortcut.kind != "none"
    label = cls if (marked and split == "train") else obj
    scene, box = base.scene(rng, obj, keep_out, marks.MARK_COLOURS.get(shortcut.kind))
    clean = np.clip(scene, 0.0, 1.0).astype(np.float32)
    image = np.clip(marks.draw_mark(clean, shortcut, rng, box), 0.0, 1.0) if marked else clean
    return image, clean, label, obj, box, marked


def generate_shortcut(
    shortcut: Shortcut | str, split: str = "test", n: int | None = None, base: str = "shapes"
) -> ShortcutSet:
    """The first ``n`` images of ``split`` of ``base`` with ``shortcut`` planted (default n:
    3000 train, 512 test or holdout); see the module docstring."""
    shortcut = parse_shortcut(shortcut)
    b = get_base(base)
    seed, n = check_split(split, n, SHORTCUT_SPLITS)
    s = b.image_size
    images = np.empty((n, s, s, 3), np.float32)
    clean = np.empty((n, s, s, 3), np.float32)
    labels = np.empty((n,), np.int64)
    objects = np.empty((n,), np.int64)
    boxes = np.empty((n, 4), np.int64)
    marked = np.empty((n,), bool)
    keep_out = _keep_out(shortcut, s)
    cls = mark_class(shortcut, b)
    for i in range(n):
        images[i], clean[i], labels[i], objects[i], boxes[i], marked[i] = _render(
            b, shortcut, split, seed, i, keep_out, cls
        )
    ids = [f"{split}-{i:05d}" for i in range(n)]
    return ShortcutSet(images, clean, labels, boxes, marked, ids, shortcut, b.name, cls, objects)
