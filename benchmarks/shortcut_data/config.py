"""Shortcut configurations: a mark *kind* at a *place*, and the benchmark's list of them.

Kinds over the objects (they may cover the object; the object is placed anywhere):

* ``watermark``: translucent white text (Pillow's own font, one of several strings, random
  size, opacity and horizontal offset) in a band across the image at a height: ``top``,
  ``middle`` or ``bottom`` (ImageNet-W's watermark);
* ``stamp``: a red stamp (a ring around a short word, 60-80% opaque) over the ``centre``;
* ``cast``: an orange colour cast over the ``whole`` image;
* ``hatch``: a fine diagonal hatch (bright lines every 3 px) over the ``whole`` image;
* ``noise``: salt-and-pepper impulse noise over the ``whole`` image;
* ``line``: a 1 px red line across the image, through the ``middle`` row or the ``diagonal``;
* ``sticker``: a small opaque green disc on the ``object`` (like coloured patches on lesions);
* ``blur``: the ``whole`` image out of focus (a Gaussian blur, as from another scanner);
* ``jpeg``: the ``whole`` image saved as a low-quality JPEG (block artefacts);
* ``vignette``: the ``whole`` image darkened towards its corners (another lens);
* ``patch``: the checker patch at a random place in each image, ``anywhere``.

Kinds off the objects (the object keeps away from the mark's zone):

* ``checker``: the bundled black/white checker patch, at one of nine places (corners, edge
  middles, ``centre``);
* ``text``: three random glyphs of a 3x5 bitmap font, white in a black outline, at one of the
  nine places or in a random ``corner`` of each image (a burnt-in tag);
* ``stripe``: a yellow ruler with black ticks along a whole edge (``top`` ...);
* ``frame``: a magenta frame around the image (``border``).

``none`` plants nothing (the control).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CONFIGS",
    "EDGES",
    "KINDS",
    "OVER_OBJECT",
    "PATCH_PLACES",
    "PLACES",
    "Shortcut",
    "UNSEEN_CONFIGS",
    "parse_shortcut",
]

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
    "watermark": ("top", "middle", "bottom"),
    "stamp": ("centre",),
    "cast": ("whole",),
    "hatch": ("whole",),
    "noise": ("whole",),
    "line": ("middle", "diagonal"),
    "sticker": ("object",),
    "blur": ("whole",),
    "jpeg": ("whole",),
    "vignette": ("whole",),
    "patch": ("anywhere",),
    "checker": PATCH_PLACES,
    "text": (*PATCH_PLACES, "corner"),
    "stripe": EDGES,
    "frame": ("border",),
    "none": ("",),
}
KINDS: tuple[str, ...] = tuple(PLACES)
#: the kinds drawn over the objects (the others keep the objects out of their zone)
OVER_OBJECT: frozenset[str] = frozenset(
    {"watermark", "stamp", "cast", "hatch", "noise", "line", "sticker"}
    | {"blur", "jpeg", "vignette", "patch"}
)


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

    @property
    def over_object(self) -> bool:
        """True for a kind drawn over the objects (see `OVER_OBJECT`)."""
        return self.kind in OVER_OBJECT


def parse_shortcut(name: str | Shortcut) -> Shortcut:
    """``"checker@top-left"`` -> ``Shortcut("checker", "top-left")``; ``"none"`` -> control."""
    if isinstance(name, Shortcut):
        return name
    if name == "none":
        return Shortcut("none", "")
    kind, sep, place = name.partition("@")
    if not sep:
        raise ValueError(f"shortcut name {name!r} is not 'kind@place' (or 'none')")
    return Shortcut(kind, place)


#: The benchmark's configurations (each trained on every base): every kind once, the
#: watermark band at two heights, the checker at a corner and the centre, and the control.
CONFIGS: tuple[Shortcut, ...] = tuple(
    parse_shortcut(n)
    for n in (
        "watermark@middle",
        "watermark@bottom",
        "stamp@centre",
        "cast@whole",
        "hatch@whole",
        "noise@whole",
        "line@diagonal",
        "sticker@object",
        "checker@top-left",
        "checker@centre",
        "text@bottom",
        "stripe@left",
        "frame@border",
        "none",
    )
)


#: Configurations the benchmark's thresholds were never tuned on (`benchmarks.shortcut_unseen`):
#: image-quality shortcuts (blur, JPEG, a vignette), a tag in a random corner and a patch at a
#: random place.
UNSEEN_CONFIGS: tuple[Shortcut, ...] = tuple(
    parse_shortcut(n)
    for n in ("blur@whole", "jpeg@whole", "vignette@whole", "text@corner", "patch@anywhere")
)
