"""Fit an image to a model's input size (H, W): ``squash``, ``crop`` or ``pad``.

With the image of width ``w`` and height ``h`` (its own, full-resolution size after EXIF
orientation) and the model's ``W`` x ``H``:

* ``squash``: resample the whole image to ``W x H`` (the aspect ratio changes);
* ``crop``: scale by ``s = max(W / w, H / h)`` and keep the central ``W x H``. One resampling
  of the central source region ``W/s x H/s`` (`PIL.Image.Image.resize` with a ``box``): model
  pixel ``(i, j)`` is centred on source point ``(x0 + (j + 1/2) / s, y0 + (i + 1/2) / s)``, the
  filter widened by ``1 / s`` when shrinking, with ``x0 = (w - W/s) / 2`` and ``y0 = (h - H/s)
  / 2`` exact. That is scaling the whole image by ``s`` and cutting out its centre, without
  resampling what is cut away; when ``w s`` and ``h s`` are whole numbers and the margins
  ``w s - W``, ``h s - H`` even, it is exactly Pillow's resize of the whole image to ``w s x h
  s`` followed by the central crop (a test);
* ``pad``: scale by ``s = min(W / w, H / h)``: the whole image resampled to ``w' x h'`` (the
  limiting side equal to the model's, the other ``round(side * s)``, halves rounded up, at
  least 1) and placed at left/top ``((W - w') // 2, (H - h') // 2)`` on zeros.

**Exact geometry.** `fit_geometry` computes these from the integers ``w, h, W, H`` alone, in
integer arithmetic: the crop box is held as integer numerators over one integer denominator
(``2W`` or ``2H``), so it is never outside the image, exactly centred, of exactly the model's
aspect ratio, and its float form (one correctly rounded division per coordinate) stays within
``[0, w] x [0, h]``. Every decoder path takes its geometry from here, on the image's own size:
a JPEG decoded at ``1/k`` scale (``draft``) resamples the box divided by ``k`` of its reduced
pixels (``reduction``), so its geometry is that of the same pixels stored as a PNG; arrays go
through the same function (`fit_array`). `crop_fractions` and `pad_sizes` are the same
arithmetic on NumPy integer arrays (exhaustively tested over every size).

Resampling is Pillow's bilinear: plain bilinear when enlarging, antialiased (the triangle filter
widened by the scale) when shrinking. Maps and boxes of an audit are in these model-input pixels.
``error`` (no fitting) is decided by the decoder (`fastfem.data.decode`), before any pixel is read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

FITS: tuple[str, ...] = ("error", "squash", "crop", "pad")
Size = tuple[int, int]  # (H, W)


def check_fit(fit: Any) -> str:
    """``fit`` if it is one of `FITS`; a ValueError naming it otherwise."""
    if fit not in FITS:
        raise ValueError(f"unknown fit {fit!r}; expected one of {FITS}")
    return fit


@dataclass(frozen=True)
class Geometry:
    """Where a fit takes its pixels from and puts them.

    ``box``: the source region (x0, y0, x1, y1) in the image's own pixels, as integer
    numerators over ``denominator``; ``inner``: the (width, height) it is resampled to;
    ``offset``: the (left, top) of that on the model's canvas (zeros elsewhere); ``canvas``:
    the model's (width, height).
    """

    box: tuple[int, int, int, int]
    denominator: int
    inner: tuple[int, int]
    offset: tuple[int, int]
    canvas: tuple[int, int]

    def source_box(self, reduction: int = 1) -> tuple[float, float, float, float]:
        """The box as floats in the pixels of a decode reduced ``reduction`` times (JPEG
        draft; 1: the image itself): ``numerator / (denominator * reduction)`` each."""
        d = self.denominator * reduction
        x0, y0, x1, y1 = self.box
        return x0 / d, y0 / d, x1 / d, y1 / d


def crop_fractions(w: Any, h: Any, width: Any, height: Any) -> tuple[Any, ...]:
    """The crop box of images ``w x h`` for models ``width x height`` (ints or integer arrays,
    broadcast): ``(x0, y0, x1, y1, d)``, the box being ``(x0/d, y0/d, x1/d, y1/d)``.

    Width-limited (``W h >= H w``, so ``s = W / w``): ``d = 2W``, ``(0, hW - Hw, 2wW, hW +
    Hw)``; height-limited: ``d = 2H``, ``(wH - Wh, 0, wH + Wh, 2hH)``. Exact: the box is
    centred, inside the image, and ``(x1 - x0) H = (y1 - y0) W``.
    """
    w, h, width, height = (np.asarray(v, dtype=np.int64) for v in (w, h, width, height))
    by_width = width * h >= height * w
    d = np.where(by_width, 2 * width, 2 * height)
    x0 = np.where(by_width, 0, w * height - width * h)
    y0 = np.where(by_width, h * width - height * w, 0)
    x1 = np.where(by_width, 2 * w * width, w * height + width * h)
    y1 = np.where(by_width, h * width + height * w, 2 * h * height)
    return x0, y0, x1, y1, d


def pad_sizes(w: Any, h: Any, width: Any, height: Any) -> tuple[Any, Any]:
    """(w', h'): images ``w x h`` scaled by ``s = min(W / w, H / h)`` (ints or integer arrays,
    broadcast): the limiting side the model's, the other ``floor(side * s + 1/2)``, >= 1."""
    w, h, width, height = (np.asarray(v, dtype=np.int64) for v in (w, h, width, height))
    by_width = width * h <= height * w
    iw = np.where(by_width, width, np.maximum(1, (2 * w * height + h) // (2 * h)))
    ih = np.where(by_width, np.maximum(1, (2 * h * width + w) // (2 * w)), height)
    return iw, ih


def covering_size(w: Any, h: Any, width: Any, height: Any) -> tuple[Any, Any]:
    """(ceil(w s), ceil(h s)) with ``s = max(W / w, H / h)``: the smallest whole-image size
    whose centre covers the model's (ints or integer arrays, broadcast)."""
    w, h, width, height = (np.asarray(v, dtype=np.int64) for v in (w, h, width, height))
    by_width = width * h >= height * w
    cw = np.where(by_width, width, -((-w * height) // h))
    ch = np.where(by_width, -((-h * width) // w), height)
    return cw, ch


def _ints(*values: Any) -> tuple[int, ...]:
    return tuple(int(v) for v in values)


def _check_size(image_wh: tuple[int, int], size: Size) -> None:
    if min(image_wh) < 1 or min(size) < 1:
        raise ValueError(f"cannot fit an image of {image_wh} (w, h) to {size} (h, w)")


def fit_geometry(image_wh: tuple[int, int], size: Size, fit: str) -> Geometry:
    """The exact `Geometry` of fitting an image of its own ``image_wh`` = (w, h) to ``size``
    = (H, W) by ``fit`` (squash, crop or pad; module docstring)."""
    _check_size(image_wh, size)
    w, h = image_wh
    height, width = size
    canvas = (width, height)
    if fit == "squash":
        return Geometry((0, 0, w, h), 1, canvas, (0, 0), canvas)
    if fit == "crop":
        *box, d = _ints(*crop_fractions(w, h, width, height))
        return Geometry(tuple(box), d, canvas, (0, 0), canvas)  # type: ignore[arg-type]
    if fit == "pad":
        iw, ih = _ints(*pad_sizes(w, h, width, height))
        return Geometry((0, 0, w, h), 1, (iw, ih), ((width - iw) // 2, (height - ih) // 2), canvas)
    raise ValueError(f"fit {fit!r} does not resize; expected squash, crop or pad")


def scaled_size(image_wh: tuple[int, int], size: Size, fit: str) -> tuple[int, int]:
    """(width, height) the WHOLE image is scaled to by ``fit``, in whole pixels: squash the
    model's; crop ``(ceil(w s), ceil(h s))`` (`covering_size`; before cropping); pad the
    placed size (`pad_sizes`). What a reduced JPEG decode must not go below."""
    _check_size(image_wh, size)
    height, width = size
    if fit == "squash":
        return width, height
    if fit == "crop":
        return _ints(*covering_size(*image_wh, width, height))  # type: ignore[return-value]
    if fit == "pad":
        return _ints(*pad_sizes(*image_wh, width, height))  # type: ignore[return-value]
    raise ValueError(f"fit {fit!r} does not resize; expected squash, crop or pad")


def crop_box(image_wh: tuple[int, int], size: Size) -> tuple[float, float, float, float]:
    """The central source region (x0, y0, x1, y1) that ``crop`` scales to the model's size."""
    return fit_geometry(image_wh, size, "crop").source_box()


def check_reduction(decoded_wh: tuple[int, int], own_wh: tuple[int, int], reduction: int) -> None:
    """A decode reduced ``reduction`` times has ``ceil(own / reduction)`` pixels a side (the JPEG
    decoder's DCT scaling); a ValueError naming the sizes otherwise."""
    expected = tuple(-(-v // reduction) for v in own_wh)
    if reduction < 1 or tuple(decoded_wh) != expected:
        raise ValueError(
            f"decoded {decoded_wh} (w, h) is not a 1/{reduction} decode of an image of {own_wh}"
        )


def fit_image(
    img: Any, size: Size, fit: str, own_size: tuple[int, int] | None = None, reduction: int = 1
) -> Any:
    """A PIL image fitted to ``size`` = (H, W) by ``fit`` (squash/crop/pad; module docstring);
    unchanged when it already has that size.

    ``own_size``, ``reduction``: ``img`` is a decode reduced ``reduction`` times (JPEG draft)
    of an image whose own size is ``own_size`` (w, h); the geometry is that image's
    (`fit_geometry`), its box divided by ``reduction``. Default: ``img`` is the image itself.
    """
    from PIL import Image

    own = img.size if own_size is None else tuple(own_size)
    check_reduction(img.size, own, reduction)
    geom = fit_geometry(own, size, fit)
    box = geom.source_box(reduction)
    if img.size == geom.canvas and box == (0.0, 0.0, *map(float, img.size)):
        return img
    inner = img.resize(geom.inner, Image.BILINEAR, box=box)
    if geom.inner == geom.canvas:
        return inner
    canvas = Image.new(img.mode, geom.canvas, 0)
    canvas.paste(inner, geom.offset)
    return canvas


def fit_array(x: np.ndarray, size: Size, fit: str) -> np.ndarray:
    """An array image (h, w, C), uint8 or float32, fitted to ``size`` channel by channel with
    the same resampling and geometry as files (`fit_image`); the dtype is kept."""
    from PIL import Image

    if x.shape[:2] == tuple(size):
        return x
    planes = x if x.dtype == np.uint8 else x.astype(np.float32, copy=False)
    fitted = [
        np.asarray(fit_image(Image.fromarray(np.ascontiguousarray(planes[..., c])), size, fit))
        for c in range(x.shape[2])
    ]
    return np.stack(fitted, axis=-1)
