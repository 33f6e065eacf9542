"""FEM in NumPy, float64, written from the formula of DESIGN.md §3: the tests' reference."""

import numpy as np


def numpy_fem(a: np.ndarray, k: float, variant: str) -> np.ndarray:
    """Reference for ONE sample (h, w, C) -> (h, w), in float64, straight from the formula."""
    a = a.astype(np.float64)
    mu = a.mean(axis=(0, 1))
    sigma = a.std(axis=(0, 1))  # ddof=0
    sigma = np.where(sigma <= 1e-6 * np.maximum(np.abs(mu), 1e-12), 0.0, sigma)
    t = mu + k * sigma
    if variant == "xplique":
        return ((a >= t) * mu).sum(-1)
    m = (a > t).astype(np.float64)
    if variant == "original":
        fem = (m * mu).sum(-1)
        return fem / fem.max() if fem.max() > 0 else fem
    w = m.mean(axis=(0, 1))
    cam = np.maximum((a * w).sum(-1), 0)
    cam = cam - cam.min()
    return cam / (cam.max() + 1e-7)
