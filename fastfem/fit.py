"""Fit an image to a model's input size (H, W): ``squash``, ``crop`` or ``pad``.

With the image of width ``w`` and height ``h`` and the model's ``W`` x ``H``:

* ``squash``: resize to ``W x H`` (the aspect ratio changes);
* ``crop``: scale by ``s = max(W / w, H / h)`` (the shorter side, relative to the model's, to
  its size) and keep the central ``W x H``. Done in one resampling of the central source
  region ``W/s x H/s`` (`PIL.Image.Image.resize` with a ``box``): the same pixels as resizing
  the whole image and cropping, without resampling what is cropped away;
* ``pad``: scale by ``s = min(W / w, H / h)`` (the longer side to its size), the result
  ``round(w s) x round(h s)`` centred (left/top offset ``(W - w') // 2``) on zeros.

Resampling is Pillow's bilinear: plain bilinear when enlarging, antialiased (the triangle filter
widened by the scale) when shrinking. Maps and boxes of an audit are in these model-input pixels.
``error`` (no fitting) is decided by the decoder (`fastfem.decode`), before any pixel is read.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

FITS: tuple[str, ...] = ("error", "squash", "crop", "pad")
Size = tuple[int, int]  # (H, W)


def check_fit(fit: Any) -> str:
    """``fit`` if it is one of `FITS`; a ValueError naming it otherwise."""
    if fit not in FITS:
        raise ValueError(f"unknown fit {fit!r}; expected one of {FITS}")
    return fit


def scaled_size(image_wh: tuple[int, int], size: Size, fit: str) -> tuple[int, int]:
    """(width, height) the WHOLE image is scaled to by ``fit`` (crop: before cropping)."""
    w, h = image_wh
    height, width = size
    if fit == "squash":
        return width, height
    s = max(width / w, height / h) if fit == "crop" else min(width / w, height / h)
    if fit == "crop":
        return max(width, math.ceil(w * s)), max(height, math.ceil(h * s))
    return max(1, min(width, round(w * s))), max(1, min(height, round(h * s)))


def crop_box(image_wh: tuple[int, int], size: Size) -> tuple[float, float, float, float]:
    """The central source region (x0, y0, x1, y1) that ``crop`` scales to the model's size."""
    w, h = image_wh
    height, width = size
    s = max(width / w, height / h)
    cw, ch = width / s, height / s
    x0, y0 = (w - cw) / 2, (h - ch) / 2
    return x0, y0, x0 + cw, y0 + ch


def fit_image(img: Any, size: Size, fit: str) -> Any:
    """A PIL image fitted to ``size`` = (H, W) by ``fit`` (squash/crop/pad; module docstring);
    unchanged when it already has that size."""
    from PIL import Image

    height, width = size
    if img.size == (width, height):
        return img
    if fit == "squash":
        return img.resize((width, height), Image.BILINEAR)
    if fit == "crop":
        return img.resize((width, height), Image.BILINEAR, box=crop_box(img.size, size))
    if fit == "pad":
        inner = scaled_size(img.size, size, "pad")
        canvas = Image.new(img.mode, (width, height), 0)
        canvas.paste(
            img.resize(inner, Image.BILINEAR), ((width - inner[0]) // 2, (height - inner[1]) // 2)
        )
        return canvas
    raise ValueError(f"fit {fit!r} does not resize; expected squash, crop or pad")


def fit_array(x: np.ndarray, size: Size, fit: str) -> np.ndarray:
    """An array image (h, w, C), uint8 or float32, fitted to ``size`` channel by channel with
    the same resampling as files (`fit_image`); the dtype is kept."""
    from PIL import Image

    if x.shape[:2] == tuple(size):
        return x
    planes = x if x.dtype == np.uint8 else x.astype(np.float32, copy=False)
    fitted = [
        np.asarray(fit_image(Image.fromarray(np.ascontiguousarray(planes[..., c])), size, fit))
        for c in range(x.shape[2])
    ]
    return np.stack(fitted, axis=-1)
