"""Object-relative detector (audits with ground-truth boxes): energy outside the object.

``outside_i = 1 - energy_pointing_game_i``, the share of row i's map energy (at the input
size, as `fastfem.evaluate` scores it) that falls outside the union of its boxes. A row with a
box fires when ``outside_i > MAX_OUTSIDE_BOX``; score ``outside_i / MAX_OUTSIDE_BOX``. Rows
without a box (null ``energy_pointing_game``) and error rows never fire.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

MAX_OUTSIDE_BOX = 0.8


def float_column(values: np.ndarray) -> np.ndarray:
    """A column as float64 with nulls (None) as NaN (an all-null Parquet column reads back as
    objects)."""
    values = np.asarray(values)
    if values.dtype == object:
        return np.asarray([np.nan if v is None else float(v) for v in values], np.float64)
    return values.astype(np.float64)


def outside_box(rows: Mapping[str, np.ndarray]) -> np.ndarray:
    """``1 - energy_pointing_game`` per row (NaN for error rows and rows without a box)."""
    epg = float_column(rows["energy_pointing_game"])
    ok = np.asarray(rows["status"]) == "ok"
    return np.where(ok, 1.0 - epg, np.nan)


def box_scores(rows: Mapping[str, np.ndarray]) -> np.ndarray | None:
    """(N,) ``outside / MAX_OUTSIDE_BOX`` where the rule fires, 0 elsewhere; None when the
    audit had no boxes."""
    if "energy_pointing_game" not in rows:
        return None
    outside = outside_box(rows)
    fired = np.nan_to_num(outside, nan=0.0) > MAX_OUTSIDE_BOX
    return np.where(fired, outside / MAX_OUTSIDE_BOX, 0.0)
