"""Map statistics (fastfem.kernels.map_stats) against a NumPy reference and hand cases."""

import jax
import numpy as np
import pytest

from fastfem.kernels.map_stats import band_cells, map_stats


def numpy_stats(m: np.ndarray, band=0.125, threshold=0.5) -> dict:
    h, w = m.shape
    p = np.maximum(m.astype(np.float64), 0)
    q = p / p.sum() if p.sum() > 0 else np.full_like(p, 1 / p.size)
    b = max(1, round(band * min(h, w)))
    inner = np.zeros_like(q, bool)
    inner[b : h - b, b : w - b] = True
    y, x = np.unravel_index(np.argmax(m), m.shape)
    nz = q[q > 0]
    dy, dx = numpy_refinement(m, y, x)
    return {
        "peak_y": (y + 0.5 + dy) / h,
        "peak_x": (x + 0.5 + dx) / w,
        "border_energy": q[~inner].sum(),
        "corner_energy": max(
            q[:b, :b].sum(), q[:b, -b:].sum(), q[-b:, :b].sum(), q[-b:, -b:].sum()
        ),
        "entropy": -(nz * np.log(nz)).sum() / np.log(h * w),
        "frac_above": (m >= threshold * m.max()).mean() if m.max() > 0 else 0.0,
    }


def numpy_refinement(m: np.ndarray, y: int, x: int) -> tuple[float, float]:
    """The centroid of the 3 x 3 cells around (y, x) inside the map, weighted by each cell's
    value above the block's minimum, written as loops."""
    cells = [
        (a, b, float(m[y + a, x + b]))
        for a in (-1, 0, 1)
        for b in (-1, 0, 1)
        if 0 <= y + a < m.shape[0] and 0 <= x + b < m.shape[1]
    ]
    floor = min(v for *_, v in cells)
    total = sum(v - floor for *_, v in cells)
    if total <= 0:
        return 0.0, 0.0
    return (
        sum(a * (v - floor) for a, _, v in cells) / total,
        sum(b * (v - floor) for _, b, v in cells) / total,
    )


@pytest.mark.parametrize("shape", [(16, 16), (7, 9), (2, 2), (1, 5)])
def test_against_numpy(shape):
    rng = np.random.default_rng(sum(shape))
    maps = rng.normal(size=(5, *shape)).astype(np.float32)
    got = jax.jit(jax.vmap(map_stats))(maps)
    for i, m in enumerate(maps):
        for name, want in numpy_stats(m).items():
            assert float(getattr(got, name)[i]) == pytest.approx(want, abs=1e-5), name


def test_hand_cases():
    corner = np.zeros((16, 16), np.float32)
    corner[15, 15] = 3.0
    s = map_stats(corner)
    assert float(s.corner_energy) == 1.0 and float(s.border_energy) == 1.0
    assert float(s.entropy) == 0.0 and float(s.peak_y) == float(s.peak_x) == 15.5 / 16
    assert band_cells(16, 16) == 2
    centre = np.zeros((16, 16), np.float32)
    centre[6:10, 6:10] = 1.0
    s = map_stats(centre)
    assert float(s.border_energy) == 0.0 and float(s.frac_above) == 16 / 256
    # the argmax is the block's first cell (6, 6); its 3 x 3 neighbours hold the block's
    # cells (6..7, 6..7) above a floor of 0: the peak moves half a cell to (7, 7) / 16
    assert float(s.peak_y) == float(s.peak_x) == pytest.approx(7.0 / 16)


def test_the_peak_lies_between_two_equal_cells_and_leans_to_the_higher():
    m = np.zeros((8, 8), np.float32)
    m[3, 4], m[3, 5] = 2.0, 2.0  # a mark across two cells
    s = map_stats(m)
    assert float(s.peak_y) == pytest.approx(3.5 / 8) and float(s.peak_x) == pytest.approx(5 / 8)
    m[3, 5] = 1.0  # the right one lower: a third of a cell to the right
    s = map_stats(m)
    assert float(s.peak_x) == pytest.approx((4.5 + 1 / 3) / 8)


@pytest.mark.parametrize("value", [0.0, -1.0, 2.0])
def test_constant_and_negative_maps_are_finite(value):
    s = map_stats(np.full((8, 8), value, np.float32))
    assert all(np.isfinite(float(v)) for v in s)
    assert float(s.entropy) == pytest.approx(1.0)  # no positive energy or flat: uniform
