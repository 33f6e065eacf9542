"""`fastfem.data.fit`'s exact geometry: every image size up to 4096 x 4096, and long sides up to 8x
a
short side of 1-4096, for crop and pad at 64, 128, 224 and 299, through the JPEG draft decode
too; the real resampling on sizes the float geometry refused; a JPEG and the same pixels as PNG
fitted alike."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from fastfem.data.decode import DecodeOptions, decode_image, unit_float
from fastfem.data.fit import (
    covering_size,
    crop_fractions,
    fit_array,
    fit_geometry,
    fit_image,
    pad_sizes,
    scaled_size,
)

MODEL_SIDES = (64, 128, 224, 299)
SHORT_MAX = 4096


def every_size() -> tuple[np.ndarray, np.ndarray]:
    """(w, h) of every short side 1-4096 with long sides: equal, +1, +2, +3, 5:4, 4:3, 3:2, 16:9
    (each rounded down and up), 2:1, 3:1 and 8:1 + 1, in both orientations."""
    s = np.arange(1, SHORT_MAX + 1, dtype=np.int64)
    longs = [s, s + 1, s + 2, s + 3, 2 * s, 3 * s, 8 * s + 1]
    for num, den in ((5, 4), (4, 3), (3, 2), (16, 9)):
        longs += [(s * num) // den, -((-s * num) // den)]
    long = np.concatenate(longs)
    short = np.tile(s, len(longs))
    return np.concatenate([long, short]), np.concatenate([short, long])


def size_chunks(rows: int = 256):
    """Every (w, h) with both sides in 1-4096 (16.8 M sizes, ``rows`` heights at a time), then
    `every_size` (long sides up to 8 x 4096 + 1)."""
    w = np.arange(1, SHORT_MAX + 1, dtype=np.int64)
    for h0 in range(1, SHORT_MAX + 1, rows):
        h = np.arange(h0, min(h0 + rows, SHORT_MAX + 1), dtype=np.int64)
        yield np.tile(w, len(h)), np.repeat(h, len(w))
    yield every_size()


def draft_reduction(w: np.ndarray, h: np.ndarray, cw: np.ndarray, ch: np.ndarray) -> np.ndarray:
    """Pillow's JPEG draft rule: the largest of 8, 4, 2, 1 within min(w // cw, h // ch)."""
    r = np.minimum(w // cw, h // ch)
    return np.select([r >= 8, r >= 4, r >= 2], [8, 4, 2], 1)


@pytest.mark.slow  # 16.8 M sizes: ~1.5 s of CPU per model size
@pytest.mark.parametrize("side", MODEL_SIDES)
def test_crop_geometry_is_exact_for_every_size(side):
    for w, h in size_chunks():
        check_crop(w, h, side)


def check_crop(w: np.ndarray, h: np.ndarray, side: int) -> None:
    """The crop box of ``w x h`` images for a ``side`` model, by its defining properties, also
    as the floats handed to Pillow after a JPEG draft decode."""
    W = H = side
    x0, y0, x1, y1, d = crop_fractions(w, h, W, H)
    assert ((x0 >= 0) & (y0 >= 0) & (x1 <= w * d) & (y1 <= h * d)).all()  # inside
    assert ((x0 + x1 == w * d) & (y0 + y1 == h * d)).all()  # centred
    assert ((x1 - x0) * H == (y1 - y0) * W).all()  # the model's aspect
    assert ((x1 - x0 == w * d) | (y1 - y0 == h * d)).all()  # the short side kept whole
    # the whole image scaled to cover the model: ceil(w s), ceil(h s), s = max(W/w, H/h)
    cw, ch = covering_size(w, h, W, H)
    by_w = W * h >= H * w
    assert ((cw >= W) & (ch >= H)).all()
    assert np.where(by_w, (cw == W) & (ch * w >= h * W) & ((ch - 1) * w < h * W), True).all()
    assert np.where(by_w, True, (ch == H) & (cw * h >= w * H) & ((cw - 1) * h < w * H)).all()
    # the JPEG draft path: the box divided by the reduction, as the floats Pillow is handed
    for k in (np.ones_like(w), draft_reduction(w, h, cw, ch)):
        dw, dh = -(-w // k), -(-h // k)  # the reduced decode's size
        fx0, fy0 = x0 / (d * k), y0 / (d * k)
        fx1, fy1 = x1 / (d * k), y1 / (d * k)
        assert ((fx0 >= 0) & (fy0 >= 0) & (fx1 <= dw) & (fy1 <= dh)).all()
        assert ((fx1 > fx0) & (fy1 > fy0)).all()
        kept = (x1 - x0 >= W * d * k) & (y1 - y0 >= H * d * k)
        assert ((k == 1) | kept).all()  # a draft decode is never enlarged


@pytest.mark.slow
@pytest.mark.parametrize("side", MODEL_SIDES)
def test_pad_geometry_is_exact_for_every_size(side):
    for w, h in size_chunks():
        check_pad(w, h, side)


def check_pad(w: np.ndarray, h: np.ndarray, side: int) -> None:
    """The placed size of ``w x h`` images in a ``side`` model, by its defining properties."""
    W = H = side
    iw, ih = pad_sizes(w, h, W, H)
    assert ((iw >= 1) & (iw <= W) & (ih >= 1) & (ih <= H)).all()
    by_w = W * h <= H * w  # s = W / w: the width is the model's, the height rounded
    assert np.where(by_w, iw == W, ih == H).all()
    # the other side is w s or h s to the nearest pixel (halves up), or 1 below half a pixel
    other = np.where(by_w, ih, iw)
    exact_num, den = np.where(by_w, h * W, w * H), np.where(by_w, w, h)
    nearest = (2 * other * den - 2 * exact_num <= den) & (2 * exact_num - 2 * other * den < den)
    assert (nearest | ((other == 1) & (2 * exact_num < den))).all()
    k = draft_reduction(w, h, iw, ih)
    assert ((k == 1) | ((w >= k * iw) & (h >= k * ih))).all()  # a draft is never enlarged


def test_the_scalar_geometry_is_the_array_geometry():
    w, h = every_size()
    pick = np.random.default_rng(0).choice(len(w), 300, replace=False)
    for a, b in zip(w[pick].tolist(), h[pick].tolist(), strict=True):
        for side in MODEL_SIDES:
            g = fit_geometry((a, b), (side, side), "crop")
            exact = tuple(int(v) for v in crop_fractions(a, b, side, side))
            assert (*g.box, g.denominator) == exact
            assert scaled_size((a, b), (side, side), "crop") == tuple(
                int(v) for v in covering_size(a, b, side, side)
            )
            p = fit_geometry((a, b), (side, side), "pad")
            assert p.inner == tuple(int(v) for v in pad_sizes(a, b, side, side))
            assert p.offset == ((side - p.inner[0]) // 2, (side - p.inner[1]) // 2)


def old_float_crop_fails(w: np.ndarray, h: np.ndarray, side: int) -> np.ndarray:
    """Sizes the earlier float crop box (``(h - side / s) / 2``) put outside the image."""
    s = np.maximum(side / w, side / h)
    x0, y0 = (w - side / s) / 2, (h - side / s) / 2
    return (x0 < 0) | (y0 < 0) | (x0 + side / s > w) | (y0 + side / s > h)


def test_real_resampling_on_sizes_the_float_box_refused():
    w, h = every_size()
    small = (w <= 700) & (h <= 700)
    for side in MODEL_SIDES:
        bad = np.flatnonzero(small & old_float_crop_fails(w, h, side))
        assert bad.size  # the cases exist
        for i in bad[:: max(1, bad.size // 8)]:
            x = np.full((int(h[i]), int(w[i]), 3), 200, np.uint8)
            for fit in ("crop", "pad", "squash"):
                out = fit_array(x, (side, side), fit)
                assert out.shape == (side, side, 3)
                if fit != "pad":
                    assert (out == 200).all()  # a flat image stays flat: no edge outside


def test_crop_is_resizing_the_whole_image_then_cropping_when_whole():
    rng = np.random.default_rng(3)
    checked = 0
    for w, h, side in ((128, 96, 48), (100, 60, 30), (90, 150, 30), (64, 80, 32), (50, 70, 10)):
        cw, ch = scaled_size((w, h), (side, side), "crop")
        if w * side % min(w, h) or h * side % min(w, h) or (cw - side) % 2 or (ch - side) % 2:
            continue  # w s or h s not whole, or an odd margin: no whole-pixel crop to compare
        img = Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8))
        whole = np.asarray(img.resize((cw, ch), Image.BILINEAR))
        top, left = (ch - side) // 2, (cw - side) // 2
        got = np.asarray(fit_image(img, (side, side), "crop"))
        np.testing.assert_array_equal(got, whole[top : top + side, left : left + side])
        checked += 1
    assert checked >= 4


# ----------------------------------------------------- a JPEG and the same pixels as PNG


def photo(w: int, h: int) -> np.ndarray:
    """A photo-like RGB image: gradients, a bright disc off centre, mild noise."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([90 + 80 * xx / w, 60 + 120 * yy / h, 140 - 60 * xx / w], -1)
    disc = (xx - 0.62 * w) ** 2 + (yy - 0.4 * h) ** 2 < (0.12 * min(w, h)) ** 2
    img[disc] = (240, 220, 60)
    img += np.random.default_rng(0).normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def jpeg_and_png(w: int, h: int) -> tuple[bytes, bytes]:
    """A JPEG of ``w x h`` and a PNG of exactly the pixels it decodes to at full scale."""
    jpg = io.BytesIO()
    Image.fromarray(photo(w, h)).save(jpg, format="JPEG", quality=92)
    png = io.BytesIO()
    Image.open(io.BytesIO(jpg.getvalue())).convert("RGB").save(png, format="PNG")
    return jpg.getvalue(), png.getvalue()


def padding(x: np.ndarray) -> np.ndarray:
    """Rows and columns of a padded image that are all zeros."""
    return np.concatenate([(x == 0).all(axis=(1, 2)), (x == 0).all(axis=(0, 2))])


@pytest.mark.parametrize("fit", ["squash", "crop", "pad"])
def test_a_jpeg_and_its_pixels_as_png_fit_alike(fit):
    jpg, png = jpeg_and_png(640, 427)  # 1/4 draft for 128: 160 x 107, 85.4 rows when padded
    full = DecodeOptions(size=(128, 128), fit=fit, draft=False)
    np.testing.assert_array_equal(decode_image(jpg, full), decode_image(png, full))
    drafted = decode_image(jpg, DecodeOptions(size=(128, 128), fit=fit))
    from_png = decode_image(png, DecodeOptions(size=(128, 128), fit=fit))
    np.testing.assert_array_equal(padding(drafted), padding(from_png))
    if fit == "pad":
        assert padding(from_png)[:128].sum() == 128 - 85  # 85 image rows (85.4), 43 padded
    diff = np.abs(drafted.astype(int) - from_png.astype(int))
    assert diff.mean() < 2.0, diff.mean()


@pytest.mark.slow
def test_a_jpeg_and_its_pixels_as_png_give_the_same_maps():
    """Full decodes: the same maps bit for bit. Draft decodes (1/8 scale here): the same
    geometry, so maps within 1% of their range on average (the earlier geometry, taken from the
    reduced decode's size, moved them by 1-3%: 600x401 is 75x51 at 1/8, not 75x50.1)."""
    from fastfem import FEM
    from fastfem.sample import MODEL_PATH

    jpg, png = jpeg_and_png(600, 401)
    fem = FEM(str(MODEL_PATH))
    for fit in ("squash", "crop", "pad"):
        x = [
            unit_float(decode_image(f, DecodeOptions(size=(64, 64), fit=fit, draft=draft)))
            for draft in (False, True)
            for f in (jpg, png)
        ]
        maps = fem.explain(np.stack(x))
        np.testing.assert_array_equal(maps[0], maps[1])
        span = float(maps[3].max() - maps[3].min())
        assert np.abs(maps[2] - maps[3]).mean() <= 0.01 * span, fit
        assert np.corrcoef(maps[2].ravel(), maps[3].ravel())[0, 1] >= 0.98, fit


@pytest.mark.parametrize("orientation", [6, 8])
def test_a_rotated_jpeg_is_fitted_on_its_upright_size(orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation  # stored 640 x 427, shown 427 x 640
    jpg = io.BytesIO()
    Image.fromarray(photo(640, 427)).save(jpg, format="JPEG", quality=92, exif=exif.tobytes())
    upright = ImageOps.exif_transpose(Image.open(io.BytesIO(jpg.getvalue()))).convert("RGB")
    assert upright.size == (427, 640)
    png = io.BytesIO()
    upright.save(png, format="PNG")
    for fit in ("crop", "pad"):
        opts = DecodeOptions(size=(128, 128), fit=fit)  # a 1/4 draft: 107 x 160 shown
        drafted, from_png = decode_image(jpg.getvalue(), opts), decode_image(png.getvalue(), opts)
        np.testing.assert_array_equal(padding(drafted), padding(from_png))
        assert np.abs(drafted.astype(int) - from_png.astype(int)).mean() < 2.0
    cols = padding(from_png)[128:]
    assert cols.sum() == 128 - 85  # 85 image columns (85.4), on the upright size
