"""FEM in NumPy, float64, written from the formula (`fastfem.kernels.fem`'s docstring): the
tests' reference, at feature resolution (`numpy_fem`) and at the input size (`numpy_fem_resized`,
with OpenCV's bilinear resize, as pytorch-grad-cam)."""

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
    return scale_cam(np.maximum((a * w).sum(-1), 0))


def scale_cam(m: np.ndarray) -> np.ndarray:
    """pytorch-grad-cam's min-max: ``(m - min m) / (max(m - min m) + 1e-7)``."""
    m = m - m.min()
    return m / (m.max() + 1e-7)


def numpy_fem_resized(a: np.ndarray, k: float, variant: str, out_hw: tuple[int, int]):
    """ONE sample's map at ``out_hw`` for the bilinear variants (``original``, ``gradcam``):
    `numpy_fem`, ``cv2.resize`` (INTER_LINEAR, float32), then for ``gradcam`` ``max(., 0)`` and
    `scale_cam` again (pytorch-grad-cam's ``aggregate_multi_layers`` for one layer)."""
    import cv2

    if variant == "xplique":
        raise ValueError("the xplique variant resizes bicubically (TF-exact); not done here")
    low = numpy_fem(a, k, variant).astype(np.float32)
    big = cv2.resize(low, (out_hw[1], out_hw[0]), interpolation=cv2.INTER_LINEAR)
    if variant == "gradcam":
        big = scale_cam(np.maximum(big.astype(np.float64), 0))
    return big
