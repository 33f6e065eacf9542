"""The corner rule: the audit's first flag rule, kept here to compare the detectors with it.

The audit's flags come from the location-agnostic detectors (`fastfem.audit.detectors`); this
rule answers one question only — "is there outlying energy in a corner?" — and is timed
against them by `benchmarks.candidates.flag_rules_on_store`. Rules; a row is flagged when ANY
rule fires:

1. corner (always): an ``ok`` row whose map puts an outlying share of its energy in one
   corner, i.e. its robust z-score

       z = (corner_energy - median) / (1.4826 * MAD + 1e-6)      (median/MAD over the ok rows)

   is above ``Z_CORNER`` *and* ``corner_energy >= MIN_CORNER`` (a corner block holds at least
   that share of the map's energy).
2. outside the box (when the audit had ground-truth boxes): an ``ok`` row with a box whose
   map's energy is mostly outside the object, ``outside = 1 - energy_pointing_game`` above
   ``MAX_OUTSIDE_BOX``.

Score: each rule's statistic in units of its threshold, ``z / Z_CORNER`` and
``outside / MAX_OUTSIDE_BOX`` (both >= 1 when the rule fires); a row's score is the largest
over the rules that fire, so the two rules rank on one scale. ``reason`` names the rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from fastfem.audit.detectors.box import MAX_OUTSIDE_BOX, float_column, outside_box

Z_CORNER = 5.0
MIN_CORNER = 0.15


@dataclass(frozen=True)
class Flags:
    ids: np.ndarray
    score: np.ndarray
    flagged: np.ndarray
    rule: str
    reason: np.ndarray  # per row: "", "corner", "outside box" or "corner, outside box"

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
    """Apply the rules of the module docstring to the committed rows."""
    ok = np.asarray(rows["status"]) == "ok"
    corner = np.where(ok, float_column(rows["corner_energy"]), np.nan)
    z = robust_z(corner)
    corner_flag = ok & (np.nan_to_num(z) > Z_CORNER) & (np.nan_to_num(corner) >= MIN_CORNER)
    score = np.where(corner_flag, np.nan_to_num(z) / Z_CORNER, -np.inf)
    flagged = corner_flag
    reasons = [np.where(corner_flag, "corner", "")]
    rule = f"corner_energy robust z-score > {Z_CORNER} and corner_energy >= {MIN_CORNER}"
    if "energy_pointing_game" in rows:
        outside = outside_box(rows)
        box_flag = ok & (np.nan_to_num(outside, nan=0.0) > MAX_OUTSIDE_BOX)
        score = np.maximum(score, np.where(box_flag, outside / MAX_OUTSIDE_BOX, -np.inf))
        flagged = flagged | box_flag
        reasons.append(np.where(box_flag, "outside box", ""))
        rule += f"; or energy outside the object box (1 - energy_pointing_game) > {MAX_OUTSIDE_BOX}"
    rule += f"; score = z / {Z_CORNER}" + (
        f" or outside / {MAX_OUTSIDE_BOX}" if len(reasons) > 1 else ""
    )
    reason = np.asarray([", ".join(r for r in parts if r) for parts in zip(*reasons, strict=True)])
    return Flags(np.asarray(rows["id"]), score, flagged, rule, reason)
