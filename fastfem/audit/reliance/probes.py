"""The reliance test's probes: the regions it hides (`fastfem.kernels.occlusion`'s fixed
family, the map detectors' hot spots) and the whole image under the global fills, how they
relate (which overlap, which are each other's mirror images), and their parameters for the
probe step (`fastfem.audit.reliance.step`), whose per-fill drops `probe_drops` folds back into
one per probe."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jax.numpy as jnp
import numpy as np

from fastfem.audit.reliance.step import ProbeParams
from fastfem.kernels.occlusion import (
    FILLS,
    GLOBAL_FILLS,
    MIN_CHANNELS,
    Region,
    grown_region,
    region_family,
    whole_image,
)

PROBE_BUCKET = 8  # probes per step: a power of two up to this, then multiples of it (few shapes)

#: How the sweep hides a region: filled from its surroundings. A flat or a noise patch draws
#: edges a model may read as an object or a frame (measured: a model that never saw a frame
#: loses one class on 88-98% of its rows when a 2 px border is painted flat or noisy, on 0%
#: when it is blurred); the other fills are evidence (`fill_effects`).
HIDE_FILLS: tuple[str, ...] = ("inpaint",)


#: The shape families whose adjacent members (overlapping by half) make a pair
#: (`adjacent_pairs`): the narrow bands and columns. A wide band's pair spans 3/8 of the image
#: and hides whole objects.
PAIRED_KINDS: tuple[str, ...] = ("band", "column")

#: The side of the window around each row's map peak (`peak_probe`), as a fraction of the
#: image's longer side.
PEAK_FRACTION = 1 / 4


@dataclass(frozen=True)
class Probe:
    """A region and the fills that hide it; its drop is the smallest over the fills. A pair
    (`adjacent_pairs`) hides its ``parts`` one at a time, ``region`` their union: its drop is
    the largest over its parts (a row counts where hiding either knocks it out)."""

    region: Region
    fills: tuple[str, ...]
    parts: tuple[Region, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.region.name} ({'+'.join(self.fills)})"

    @property
    def hidden(self) -> tuple[Region, ...]:
        """The regions hidden one at a time: the parts of a pair, else the region."""
        return self.parts or (self.region,)


def sweep_probes(h: int, w: int, proposed: Sequence[Region] = (), channels: int = 3) -> list[Probe]:
    """The sweep: every region of `region_family` and every ``proposed`` region (map hot spots)
    hidden by ``HIDE_FILLS``, and the whole image under each global fill that can change an
    image of ``channels`` channels (`MIN_CHANNELS`: on one channel the hues and the grey world
    would leave every image as it is — a test with no hit, counted in the correction all the
    same)."""
    regions = [*region_family(h, w), *proposed]
    globals_ = [f for f in GLOBAL_FILLS if channels >= MIN_CHANNELS.get(f, 1)]
    return [Probe(r, HIDE_FILLS) for r in regions] + [
        Probe(whole_image(h, w), (f,)) for f in globals_
    ]


def peak_probe(h: int, w: int) -> Probe:
    """The probe that follows each row's map peak: on every row it hides (``HIDE_FILLS``) the
    square of `peak_side` px around the peak of the row's stored map (the step's
    ``follow``; `fastfem.audit.reliance.step.peak_windows`), wherever it lies. Its region's
    mask is empty (no fixed pixel), its box the whole image. A mark at a random place lies in
    no fixed region; a class's own objects lie under the peak as often (`fastfem.audit.
    reliance.peaks`)."""
    side = peak_side(h, w)
    region = Region(f"each row's map peak ({side} px)", "peak", (0, 0, w, h), np.zeros((h, w)))
    return Probe(region, HIDE_FILLS)


def peak_side(h: int, w: int) -> int:
    """The side of `peak_probe`'s window on (H, W) images (at least 1 px)."""
    return max(1, round(max(h, w) * PEAK_FRACTION))


def peak_pixels(peak_y: np.ndarray, peak_x: np.ndarray, h: int, w: int) -> np.ndarray:
    """(N, 2) int32 (row, column): the stored peaks ``peak_y``, ``peak_x`` (fractions of the
    height and width, the peak cell's centre) as pixels of (H, W) images."""
    y = np.clip(np.floor(np.asarray(peak_y, np.float64) * h), 0, h - 1)
    x = np.clip(np.floor(np.asarray(peak_x, np.float64) * w), 0, w - 1)
    return np.stack([y, x], axis=1).astype(np.int32)


def adjacent_pairs(probes: Sequence[Probe]) -> list[tuple[Probe, int, int]]:
    """The pairs of adjacent, overlapping regions of the ``PAIRED_KINDS`` families among
    ``probes`` (a band and the band half its height below it), each ``(pair, i, j)`` with the
    indices of its parts. A mark whose place varies from image to image (text at a random
    height in a strip) lies whole in one of two adjacent bands on each row, in neither band
    alone on every row; the pair's drop is the larger of its parts' (`pair_drops`), so it
    counts every such row, where hiding their union at once would hide more of every object.
    Pairs are never candidates: a candidate band may grow into one (`rules.widest_extent`)."""
    out = []
    for kind in PAIRED_KINDS:
        members = sorted(
            (k for k, p in enumerate(probes) if p.region.kind == kind),
            key=lambda k: probes[k].region.box,
        )
        for i, j in zip(members, members[1:], strict=False):
            a, b = probes[i].region, probes[j].region
            if not (a.mask * b.mask).any():
                continue
            mask = np.maximum(a.mask, b.mask)
            box = (*np.minimum(a.box[:2], b.box[:2]), *np.maximum(a.box[2:], b.box[2:]))
            name = f"{a.name} or {b.name}"
            union = Region(name, f"{kind} pair", tuple(int(v) for v in box), mask)
            out.append((Probe(union, probes[i].fills, (a, b)), i, j))
    return out


def grown_family(probes: Sequence[Probe], kind: str, margin: int) -> list[tuple[Probe, int]]:
    """Every probe of ``probes`` whose region is of the family ``kind`` (one of
    `occlusion.GROWN_AXES`; a pair's kind is another), its region grown by ``margin``
    (`occlusion.grown_region`) — a candidate's grown region and its translates and mirror
    images, which its place lift compares it with — each with the index of the probe it
    grew from."""
    return [
        (Probe(grown_region(p.region, margin), p.fills), k)
        for k, p in enumerate(probes)
        if p.region.kind == kind
    ]


def pair_drops(drop: np.ndarray, pairs: Sequence[tuple[Probe, int, int]]) -> np.ndarray:
    """(N, len(pairs)) the drops (or doses) of ``pairs`` (`adjacent_pairs`) from the (N, P)
    ones of their parts: per row the larger of the two, with no forward."""
    if not pairs:
        return np.zeros((drop.shape[0], 0), drop.dtype)
    return np.stack([np.maximum(drop[:, i], drop[:, j]) for _, i, j in pairs], axis=1)


def region_overlaps(probes: Sequence[Probe]) -> np.ndarray:
    """(P, P) bool: which probes' regions share a pixel (global probes: none)."""
    masks = np.stack([p.region.mask.ravel() > 0 for p in probes]).astype(np.float32)
    masks[[p.region.kind == "image" for p in probes]] = 0.0
    return (masks @ masks.T) > 0


def narrow_regions(probes: Sequence[Probe]) -> np.ndarray:
    """(P,) bool: which probes' regions are less than half the image across in some direction
    (bands, columns, cells; not a quarter, the centre, a border ring, the corners or the whole
    image, whose boxes span half the image or more both ways): those whose tests are also
    counted on the rows only they knock out (`fastfem.audit.reliance.stats.only_here_hits`)."""
    out = []
    for p in probes:
        h, w = p.region.mask.shape
        x0, y0, x1, y1 = p.region.box
        out.append(2 * (y1 - y0) < h or 2 * (x1 - x0) < w)
    return np.asarray(out, bool)


def shifted_region(r: Region, dy: int, dx: int) -> Region | None:
    """The region ``r`` moved by ``dy`` rows and ``dx`` columns (its kind kept, its name saying
    how far), None where its box would leave the image."""
    h, w = r.mask.shape
    x0, y0, x1, y1 = r.box
    if y0 + dy < 0 or y1 + dy > h or x0 + dx < 0 or x1 + dx > w:
        return None
    mask = np.zeros_like(r.mask)
    mask[y0 + dy : y1 + dy, x0 + dx : x1 + dx] = r.mask[y0:y1, x0:x1]
    way = "down" if dy > 0 else "up" if dy < 0 else "right" if dx > 0 else "left"
    name = f"{r.name} moved {way} {abs(dy) + abs(dx)} px"
    return Region(name, r.kind, (x0 + dx, y0 + dy, x1 + dx, y1 + dy), mask)


def neighbour_probes(probe: Probe) -> list[Probe]:
    """``probe``'s region moved by its own height up and down and by its own width left and
    right, each where it stays in the image (a band's the bands just above and below it, a
    cell's the four beside it; a pair's parts moved alike), hidden by its fills: what a
    class's own object the region hides lies partly under them too; a mark that lies in the
    region does not."""
    x0, y0, x1, y1 = probe.region.box
    out = []
    for dy, dx in ((y0 - y1, 0), (y1 - y0, 0), (0, x0 - x1), (0, x1 - x0)):
        region = shifted_region(probe.region, dy, dx)
        parts = [shifted_region(r, dy, dx) for r in probe.parts]
        if region is not None and all(q is not None for q in parts):
            out.append(Probe(region, probe.fills, tuple(q for q in parts if q is not None)))
    return out


def region_mirrors(probes: Sequence[Probe], min_iou: float = 0.75) -> list[list[int]]:
    """Per probe, the other probes of its family (`Region.kind`) whose region is its mirror
    image — its mask reflected left-right, top-bottom or both, matched by intersection over
    union ``>= min_iou`` (the family's edges are rounded) — for `stats.typical_rate`. A region
    that is its own mirror image (a border ring, the centre, a middle band), global probes and
    hot spots and the peak probe have none."""
    masks = np.stack([p.region.mask.ravel() > 0 for p in probes]).astype(np.float32)
    kinds = np.asarray([p.region.kind for p in probes], dtype=object)
    sizes = masks.sum(axis=1)
    out = []
    for k, p in enumerate(probes):
        found: set[int] = set()
        if p.region.kind not in ("image", "hot spot", "peak"):
            m = p.region.mask > 0
            for flipped in (m[:, ::-1], m[::-1, :], m[::-1, ::-1]):
                inter = masks @ flipped.ravel().astype(np.float32)
                iou = inter / np.maximum(sizes + flipped.sum() - inter, 1.0)
                found.update(int(j) for j in np.flatnonzero((iou >= min_iou) & (kinds == kinds[k])))
            found.discard(k)
        out.append(sorted(found))
    return out


def hot_spot_regions(hot: Any, h: int, w: int) -> list[Region]:
    """The map detectors' candidate hot spots (`fastfem.audit.detectors.hotspots`: cells of a
    coarse grid) as regions of the (H, W) model input, to be tested like the fixed family."""
    if hot is None:
        return []
    out = []
    for k in np.flatnonzero(hot.candidate):
        cells = np.asarray(hot.hot[k]) > 0
        gy = (np.arange(h) * cells.shape[0]) // h
        gx = (np.arange(w) * cells.shape[1]) // w
        mask = cells[gy[:, None], gx[None, :]].astype(np.float32)
        ys, xs = np.nonzero(mask)
        box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        out.append(Region(f"hot spot {k}", "hot spot", box, mask))
    return out


def probe_params(probes: Sequence[Probe], fills: Any) -> tuple[ProbeParams, np.ndarray]:
    """The step's probes, one per (probe, hidden region, fill), and (F, 2) the probe and the
    part (`Probe.hidden`) each belongs to (probe -1: padding). Their number is padded with
    empty masks (drop 0) to a power of two up to ``PROBE_BUCKET`` and to a multiple of it
    above, so the few shapes a test uses are compiled once and the member pass (a candidate
    or two on every row) runs no empty probe."""
    steps = [
        (k, i, r.mask, f)
        for k, p in enumerate(probes)
        for i, r in enumerate(p.hidden)
        for f in p.fills
    ]
    n = len(steps)
    pad = (1 << (n - 1).bit_length()) - n if n <= PROBE_BUCKET else -n % PROBE_BUCKET
    empty = np.zeros_like(steps[0][2])
    steps += [(-1, 0, empty, FILLS[0])] * pad
    masks = np.stack([m for *_, m, _ in steps]).astype(np.float32)
    idx = np.asarray([FILLS.index(f) for *_, f in steps], np.int32)
    owner = np.asarray([(k, i) for k, i, _, _ in steps], np.int64)
    follow = np.asarray([k >= 0 and probes[k].region.kind == "peak" for k, *_ in steps])
    side = peak_side(*masks.shape[1:])
    params = ProbeParams(
        jnp.asarray(masks),
        jnp.asarray(idx),
        fills,
        jnp.asarray(follow, jnp.float32),
        jnp.int32(side),
    )
    return params, owner


def probe_drops(drop: np.ndarray, owner: np.ndarray, n_probes: int) -> np.ndarray:
    """(N, P) drops of the probes from the (N, F) drops of their (part, fill) steps (``owner``
    (F, 2), `probe_params`): per part the smallest over the fills, per probe the largest over
    its parts."""
    parts: dict[tuple[int, int], np.ndarray] = {}
    for j, (k, i) in enumerate(owner):
        if k >= 0:
            parts[k, i] = np.minimum(parts.get((k, i), np.inf), drop[:, j])
    out = np.full((drop.shape[0], n_probes), -np.inf, np.float32)
    for (k, _), d in parts.items():
        out[:, k] = np.maximum(out[:, k], d)
    return out
