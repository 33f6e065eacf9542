"""Which images look wrong: outlier explanations, ranked by a score.

Rule (stated in the summary and the report): an ``ok`` row is flagged when its map puts an
outlying share of its energy in one corner, i.e. its robust z-score

    z = (corner_energy - median) / (1.4826 * MAD + 1e-6)      (median/MAD over the ok rows)

is above ``Z_CORNER`` *and* ``corner_energy >= MIN_CORNER`` (a corner block holds at least that
share of the map's energy). With ground-truth boxes, a row is also flagged when the share of the
map's energy outside the object's box is above ``MAX_OUTSIDE_BOX``. The score ranks the flagged
rows: the largest z (corner) or the outside-box share.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

Z_CORNER = 5.0
MIN_CORNER = 0.15
MAX_OUTSIDE_BOX = 0.8


@dataclass(frozen=True)
class Flags:
    ids: np.ndarray
    score: np.ndarray
    flagged: np.ndarray
    rule: str

    def top_ids(self, n: int) -> list[str]:
        order = np.argsort(-np.where(self.flagged, self.score, -np.inf), kind="stable")
        return [str(self.ids[i]) for i in order[:n] if self.flagged[i]]


def robust_z(x: np.ndarray) -> np.ndarray:
    """``(x - median) / (1.4826 MAD + 1e-6)`` over the finite entries (NaN stays NaN)."""
    finite = x[np.isfinite(x)]
    if finite.size == 0:
        return np.full_like(x, np.nan)
    med = np.median(finite)
    mad = np.median(np.abs(finite - med))
    return (x - med) / (1.4826 * mad + 1e-6)


def flag_rows(rows: Mapping[str, np.ndarray]) -> Flags:
    ok = np.asarray(rows["status"]) == "ok"
    corner = np.where(ok, np.asarray(rows["corner_energy"], dtype=np.float64), np.nan)
    z = robust_z(corner)
    flagged = ok & (np.nan_to_num(z) > Z_CORNER) & (np.nan_to_num(corner) >= MIN_CORNER)
    score = np.nan_to_num(z, nan=-np.inf)
    rule = f"corner_energy robust z-score > {Z_CORNER} and corner_energy >= {MIN_CORNER}"
    if "outside_box" in rows:
        outside = np.where(ok, np.asarray(rows["outside_box"], dtype=np.float64), np.nan)
        box_flag = ok & (np.nan_to_num(outside) > MAX_OUTSIDE_BOX)
        flagged = flagged | box_flag
        score = np.maximum(score, np.where(box_flag, outside, -np.inf))
        rule += f"; or energy outside the box > {MAX_OUTSIDE_BOX}"
    return Flags(np.asarray(rows["id"]), score, flagged, rule)
