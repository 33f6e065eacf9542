"""Small embedded pictures for the audit report: maps and overlays as base64 PNG data URIs.

Pictures are composed in NumPy and encoded by Pillow at thumbnail size (at most ``SIZE`` px a
side) as palette PNGs of at most ``COLOURS`` colours, so a report with dozens of them stays a
few hundred kilobytes. A map is shown clipped to
its 0.1-99.9 percentiles (`fastfem.integrations.overlay.normalize_for_display`) through the ``jet``
colour
map; over an image it is resized bilinearly to the image and blended with weight ``ALPHA``.
"""

from __future__ import annotations

import base64
import io

import numpy as np

from fastfem.integrations.overlay import normalize_for_display

SIZE = 128
ALPHA = 0.45
COLOURS = 128


def _data_uri(rgb: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    img = Image.fromarray(rgb).quantize(colors=COLOURS, method=Image.Quantize.MEDIANCUT)
    img.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def colour_map(m: np.ndarray) -> np.ndarray:
    """(h, w) map -> (h, w, 3) float RGB in [0, 1] through ``jet`` (NaN -> grey)."""
    import matplotlib

    lut = matplotlib.colormaps["jet"]
    shown = normalize_for_display(np.nan_to_num(m, nan=0.0))
    rgb = lut(shown)[..., :3]
    return np.where(np.isnan(m)[..., None], 0.5, rgb)


def _resize(a: np.ndarray, hw: tuple[int, int], nearest: bool) -> np.ndarray:
    """Resize a float (h, w) or (h, w, 3) array in [0, 1] with Pillow."""
    from PIL import Image

    mode = Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR
    if a.ndim == 2:
        img = Image.fromarray(a.astype(np.float32), mode="F").resize((hw[1], hw[0]), mode)
        return np.asarray(img, np.float32)
    chans = [_resize(a[..., c], hw, nearest) for c in range(a.shape[-1])]
    return np.stack(chans, axis=-1)


def _fit(h: int, w: int, size: int) -> tuple[int, int]:
    scale = size / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)


def map_thumbnail(m: np.ndarray, size: int = SIZE) -> str:
    """A map alone, cells enlarged (nearest) to ``size`` px on its longer side."""
    hw = _fit(m.shape[0], m.shape[1], size)
    return _data_uri(to_uint8(_resize(colour_map(m), hw, nearest=True)))


def overlay_thumbnail(image: np.ndarray | None, m: np.ndarray, size: int = SIZE) -> str:
    """The map over the image (both fitted to ``size`` px), or the map alone without image."""
    if image is None:
        return map_thumbnail(m, size)
    img = np.asarray(image, np.float32)
    if img.ndim == 2:
        img = img[..., None]
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=-1)
    hw = _fit(img.shape[0], img.shape[1], size)
    base = _resize(np.clip(img[..., :3], 0.0, 1.0), hw, nearest=False)
    heat = colour_map(_resize(np.nan_to_num(m, nan=0.0), hw, nearest=False))
    return _data_uri(to_uint8((1.0 - ALPHA) * base + ALPHA * heat))
