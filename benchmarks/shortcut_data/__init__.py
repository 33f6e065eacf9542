"""Planted shortcuts: the ground truth of the shortcut benchmark.

A *configuration* is a mark kind at a place (`config`: fifteen kinds, eleven of them drawn
over the objects; the benchmark's eleven, `CONFIGS`, and four more with the tag in a random
corner, `UNSEEN_CONFIGS`, that no threshold was tuned on), planted in one of three base
datasets of different make (`bases`: the bundled sample's 64 px shapes, 96 px crops of real
photographs with drawn objects, and 80 px rotated letters on gradient-and-blob backgrounds,
five classes), with a label leak in ``train`` and the mark on 15% of every class in
``test``/``holdout`` (`generate`).
Every image comes with its clean twin, so whether a model relies on the mark is measured, not
assumed (`reliance`).
"""

from __future__ import annotations

from benchmarks.shortcut_data.bases import BASES, Base, configs_of, get_base
from benchmarks.shortcut_data.config import (
    CONFIGS,
    EDGES,
    KINDS,
    OVER_OBJECT,
    PATCH_PLACES,
    PLACES,
    UNSEEN_CONFIGS,
    Shortcut,
    parse_shortcut,
)
from benchmarks.shortcut_data.generate import (
    LEAK_RATE,
    MARK_RATE,
    SHORTCUT_SPLITS,
    ShortcutSet,
    generate_shortcut,
    mark_class,
    mark_zone,
)
from benchmarks.shortcut_data.marks import FRAME_COLOUR, MARK_COLOURS, STRIPE_COLOUR
from benchmarks.shortcut_data.reliance import reliance_summary, relied_on

__all__ = [
    "BASES",
    "CONFIGS",
    "EDGES",
    "FRAME_COLOUR",
    "KINDS",
    "LEAK_RATE",
    "MARK_COLOURS",
    "MARK_RATE",
    "OVER_OBJECT",
    "PATCH_PLACES",
    "PLACES",
    "SHORTCUT_SPLITS",
    "STRIPE_COLOUR",
    "UNSEEN_CONFIGS",
    "Base",
    "Shortcut",
    "configs_of",
    "ShortcutSet",
    "generate_shortcut",
    "get_base",
    "mark_class",
    "mark_zone",
    "parse_shortcut",
    "relied_on",
    "reliance_summary",
]
