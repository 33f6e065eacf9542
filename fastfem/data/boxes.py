"""Ground-truth boxes for an audit: read, check, match to the inputs' ids, pack for the device.

Formats (``--boxes FILE`` / ``audit(boxes=...)``). Coordinates are pixels of the MODEL INPUT
(the image as the model sees it, after ``--resize`` if used), ``x0, y0`` inclusive and
``x1, y1`` exclusive (the box is ``image[y0:y1, x0:x1]``; fractional values allowed; a pixel is
inside when its centre is, `fastfem.metrics.box_mask`):

* CSV (``*.csv``): a header row with the columns ``id,x0,y0,x1,y1`` (other columns are
  ignored); one box per row; several rows with the same id are several boxes of that image.
* JSON (``*.json``): an object ``{"id": [[x0, y0, x1, y1], ...], ...}``; a single box may be
  given as ``[x0, y0, x1, y1]``.
* ``"sample"``: the bundled sample's ground-truth shape boxes, for inputs whose id (or file
  name stem) is a sample id such as ``test-00017`` (the bundled default source, or a folder
  written by `fastfem.sample.write_png_folder`).
* In Python also a mapping ``{id: (k, 4) or (4,) array}``.

An image with several boxes is scored against the union of their masks.

Matching: a box id matches the input with exactly that id, else the input whose file name stem
is that id (``test-00017`` matches ``circle/test-00017.png``) when exactly one input has that
stem. A box id that matches no input is an ERROR (the audit does not start: nothing is silently
dropped; filter the file to the audited inputs), except for sources that cannot list their ids
before reading (``tf.data``/iterables), where the unmatched ids are reported at the end (a
warning, and ``boxes_unmatched`` in the manifest). Inputs without a box get null metrics.

Malformed files (a missing column, a non-number, NaN, ``x1 <= x0`` or ``y1 <= y0``, a box
outside the model input, a repeated JSON key, an id with no box) raise a ValueError naming the
file, the line or id, and the problem.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: id -> (k, 4) float32 xyxy boxes, k >= 1.
Boxes = dict[str, np.ndarray]

CSV_COLUMNS: tuple[str, ...] = ("id", "x0", "y0", "x1", "y1")
SAMPLE = "sample"
_SAMPLE_ID = re.compile(r"^(train|test)-(\d+)$")


def check_box(box: Sequence[float], where: str) -> np.ndarray:
    """One xyxy box as float32 (4,); a ValueError naming ``where`` if it is not a proper box."""
    try:
        b = np.asarray(box, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: box {box!r} is not four numbers") from err
    if b.shape != (4,):
        raise ValueError(f"{where}: a box is four numbers [x0, y0, x1, y1]; got {box!r}")
    if not np.all(np.isfinite(b)):
        raise ValueError(f"{where}: box {b.tolist()} has NaN/inf coordinates")
    if b[2] <= b[0] or b[3] <= b[1]:
        raise ValueError(
            f"{where}: box {b.tolist()} is empty (need x1 > x0 and y1 > y0; x1, y1 exclusive)"
        )
    return b.astype(np.float32)


def read_csv_boxes(path: Path) -> Boxes:
    """Boxes from a CSV with the columns ``id,x0,y0,x1,y1`` (several rows per id allowed)."""
    out: dict[str, list[np.ndarray]] = {}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in CSV_COLUMNS if c not in header]
        if missing:
            raise ValueError(
                f"{path}: missing column(s) {missing}; the header must name {list(CSV_COLUMNS)} "
                f"(got {header})"
            )
        for row in reader:
            where = f"{path} line {reader.line_num}"
            rid = (row["id"] or "").strip()
            if not rid:
                raise ValueError(f"{where}: empty id")
            values = [row[c] for c in CSV_COLUMNS[1:]]
            try:
                coords = [float(v) for v in values]
            except (TypeError, ValueError) as err:
                raise ValueError(f"{where}: coordinates {values} are not all numbers") from err
            out.setdefault(rid, []).append(check_box(coords, where))
    if not out:
        raise ValueError(f"{path}: no boxes (a header and at least one row are needed)")
    return {rid: np.stack(b) for rid, b in out.items()}


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"id {key!r} appears twice")
        seen[key] = value
    return seen


def read_json_boxes(path: Path) -> Boxes:
    """Boxes from a JSON object ``{id: [[x0, y0, x1, y1], ...]}`` (or one box per id)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON: {err}") from err
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected an object {{id: [[x0, y0, x1, y1], ...]}}")
    return boxes_from_mapping(data, str(path))


def boxes_from_mapping(data: Mapping[str, Any], what: str = "boxes") -> Boxes:
    """Check ``{id: (k, 4) or (4,) boxes}``; every id needs at least one box."""
    out: Boxes = {}
    for rid, value in data.items():
        where = f"{what}: id {rid!r}"
        items = value.tolist() if isinstance(value, np.ndarray) else value
        if not isinstance(items, (list, tuple)) or len(items) == 0:
            raise ValueError(f"{where}: expected a box [x0, y0, x1, y1] or a list of boxes")
        if not isinstance(items[0], (list, tuple)):
            items = [items]
        out[str(rid)] = np.stack([check_box(b, where) for b in items])
    if not out:
        raise ValueError(f"{what}: no boxes")
    return out


def read_boxes(spec: Any) -> Boxes | str:
    """``spec`` (a path to .csv/.json, a mapping, or ``"sample"``) -> `Boxes` (or ``"sample"``,
    resolved against the source's ids by `sample_boxes`)."""
    if isinstance(spec, str) and spec == SAMPLE:
        return SAMPLE
    if isinstance(spec, Mapping):
        return boxes_from_mapping(spec)
    if isinstance(spec, (str, Path)):
        path = Path(spec)
        if not path.is_file():
            raise FileNotFoundError(f"boxes file not found: {path} (or pass 'sample')")
        if path.suffix.lower() == ".csv":
            return read_csv_boxes(path)
        if path.suffix.lower() == ".json":
            return read_json_boxes(path)
        raise ValueError(f"{path}: boxes must be a .csv or .json file (see fastfem.data.boxes)")
    raise TypeError(f"boxes must be a .csv/.json path, a mapping or 'sample'; got {type(spec)}")


def sample_boxes(ids: Iterable[str]) -> Boxes:
    """The bundled sample's ground-truth boxes for the ``ids`` that are sample ids (by id or
    file name stem, e.g. ``test-00017`` or ``circle/test-00017.png``), keyed by those ids."""
    from fastfem.sample import generate

    wanted: dict[str, list[tuple[str, int]]] = {}
    for rid in ids:
        m = _SAMPLE_ID.match(Path(rid).stem)
        if m:
            wanted.setdefault(m.group(1), []).append((rid, int(m.group(2))))
    if not wanted:
        raise ValueError(
            "boxes='sample': no input id is a bundled-sample id (like test-00017 or "
            "circle/test-00017.png); audit the bundled sample or a folder written by "
            "fastfem.sample.write_png_folder"
        )
    out: Boxes = {}
    for split, items in wanted.items():
        boxes = generate(split, max(i for _, i in items) + 1).boxes
        out.update({rid: boxes[i : i + 1].astype(np.float32) for rid, i in items})
    return out


def match_boxes(boxes: Boxes, ids: Sequence[str]) -> tuple[Boxes, list[str]]:
    """``(boxes keyed by input id, box ids that match no input)``; see the module docstring.

    A ValueError if a box id matches two inputs' stems, or two box ids the same input.
    """
    known = set(ids)
    by_stem: dict[str, list[str]] = {}
    for rid in ids:
        by_stem.setdefault(Path(rid).stem, []).append(rid)
    matched: Boxes = {}
    unknown: list[str] = []
    for key, b in boxes.items():
        if key in known:
            target = key
        elif len(by_stem.get(key, ())) == 1:
            target = by_stem[key][0]
        elif key in by_stem:
            raise ValueError(
                f"box id {key!r} is ambiguous: it is the file name stem of {by_stem[key][:5]}; "
                "use the full ids"
            )
        else:
            unknown.append(key)
            continue
        if target in matched:
            raise ValueError(f"input {target!r} has boxes under two ids (its id and its stem)")
        matched[target] = b
    return matched, unknown


def unknown_ids_error(unknown: Sequence[str], n_boxes: int, where: str) -> ValueError:
    """The error for box ids that match no input (shows up to 10)."""
    shown = ", ".join(repr(u) for u in list(unknown)[:10])
    more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
    return ValueError(
        f"{len(unknown)} of {n_boxes} box ids match no input of {where}: {shown}{more}. Box "
        "ids must be the audit's ids (or their file name stems); remove the others from the "
        "boxes file"
    )


def check_bounds(boxes: Boxes, height: int | None, width: int | None) -> None:
    """A ValueError naming the first box that is not inside the model input (H, W)."""
    for rid, b in boxes.items():
        bad = (b[:, 0] < 0) | (b[:, 1] < 0)
        if width is not None:
            bad |= b[:, 2] > width
        if height is not None:
            bad |= b[:, 3] > height
        if bad.any():
            raise ValueError(
                f"box {b[bad][0].tolist()} of id {rid!r} is outside the model input "
                f"({height}x{width} pixels); boxes are in model-input pixels"
            )


def max_boxes(boxes: Boxes) -> int:
    """Boxes per image in the packed arrays: the most any id has, rounded up to a power of 2
    (so files with 3 or 4 boxes per image share one compiled step)."""
    most = max((b.shape[0] for b in boxes.values()), default=1)
    return 1 << max(0, most - 1).bit_length()


def pack_boxes(boxes: Sequence[np.ndarray | None], k: int) -> tuple[np.ndarray, np.ndarray]:
    """One batch's boxes -> ``(xyxy (B, k, 4) float32, has_box (B,) bool)``; missing boxes are
    the empty box (0, 0, 0, 0), whose mask is empty, so the union is the image's own boxes."""
    out = np.zeros((len(boxes), k, 4), np.float32)
    has = np.zeros((len(boxes),), bool)
    for i, b in enumerate(boxes):
        if b is not None:
            out[i, : b.shape[0]] = b
            has[i] = True
    return out, has
