"""`fastfem.data.decode` and `fastfem.data.fit`: the allowlist, the bomb and the pixel budget,
every Pillow
mode a photo collection holds, 16-bit and float by their true range, EXIF orientation, alpha,
the fit modes' geometry and JPEG draft decoding."""

from __future__ import annotations

import io
import subprocess

import numpy as np
import pytest
from hostile_files import EPS, bomb_png, huge_gray_png
from PIL import EpsImagePlugin, Image, ImageOps

from fastfem.data.decode import (
    ALLOWED_FORMATS,
    DecodeError,
    DecodeOptions,
    array_pixels,
    decode_image,
    unit_float,
)
from fastfem.data.fit import crop_box, fit_array, fit_image, scaled_size

RNG = np.random.default_rng(0)
RGB = (RNG.random((48, 80, 3)) * 255).astype(np.uint8)


def encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def opts(**kw) -> DecodeOptions:
    return DecodeOptions(**{"size": (64, 64), "channels": 3, **kw})


@pytest.mark.parametrize("fmt", ALLOWED_FORMATS)
@pytest.mark.parametrize("fit", ["squash", "crop", "pad"])
def test_every_allowed_format_decodes_and_fits(fmt, fit):
    x = decode_image(encode(Image.fromarray(RGB), fmt), opts(fit=fit))
    assert x.shape == (64, 64, 3) and x.dtype == np.uint8


def test_lossless_formats_give_the_stored_pixels():
    for fmt in ("PNG", "BMP", "TIFF", "WEBP"):
        kw = {"lossless": True} if fmt == "WEBP" else {}
        x = decode_image(encode(Image.fromarray(RGB), fmt, **kw), DecodeOptions())
        np.testing.assert_array_equal(x, RGB, err_msg=fmt)


def test_bomb_png_is_refused_with_pillows_reason():
    with pytest.raises(DecodeError, match="decompression bomb refused: Image size \\(2500000000"):
        decode_image(bomb_png(), opts(fit="squash"))


def test_pixel_budget_refuses_before_decoding(monkeypatch):
    # 10000 x 10000 grayscale, 100 MB of zero rows compressed to ~100 kB: under Pillow's bomb
    # limit, over the default budget of 50 M pixels -> refused from the header alone
    data = huge_gray_png()
    assert len(data) < 200_000
    loads = []
    monkeypatch.setattr(Image.Image, "load", lambda self: loads.append(1))
    with pytest.raises(
        DecodeError, match="10000x10000 = 100,000,000 pixels .* budget of 50,000,000"
    ):
        decode_image(data, opts(fit="squash"))
    assert not loads  # nothing decoded
    monkeypatch.undo()
    small = encode(Image.fromarray(RGB), "PNG")
    with pytest.raises(DecodeError, match="48x80|80x48"):
        decode_image(small, opts(fit="squash", max_pixels=1000))


def test_jpeg_counts_against_the_budget_after_draft():
    big = Image.fromarray((RNG.random((1500, 2000, 3)) * 255).astype(np.uint8))
    data = encode(big, "JPEG")
    # 3 M pixels stored; drafted at 1/8 for a 64x64 crop: 250 x 188
    x = decode_image(data, opts(fit="crop", max_pixels=100_000))
    assert x.shape == (64, 64, 3)
    with pytest.raises(DecodeError, match="pixel budget"):
        decode_image(data, opts(fit="crop", max_pixels=100_000, draft=False))


def test_draft_decodes_close_to_the_full_decode():
    smooth = np.clip(
        np.linspace(0, 255, 2000)[None, :, None] * np.ones((1500, 1, 3))
        + np.linspace(0, 60, 1500)[:, None, None],
        0,
        255,
    ).astype(np.uint8)
    data = encode(Image.fromarray(smooth), "JPEG", quality=95)
    for fit in ("squash", "crop", "pad"):
        a = decode_image(data, opts(fit=fit, size=(224, 224))).astype(float)
        b = decode_image(data, opts(fit=fit, size=(224, 224), draft=False)).astype(float)
        assert np.abs(a - b).mean() < 1.5, fit


def test_postscript_named_png_never_reaches_ghostscript(tmp_path, monkeypatch):
    path = tmp_path / "photo.png"
    path.write_bytes(EPS)
    started, eps_opened = [], []

    def no_process(*args, **kwargs):
        started.append(args)
        raise AssertionError("a subprocess was started")

    monkeypatch.setattr(subprocess, "Popen", no_process)
    monkeypatch.setattr(subprocess, "check_call", no_process)
    original = EpsImagePlugin.EpsImageFile._open

    def record_open(self):
        eps_opened.append(1)
        return original(self)

    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", record_open)
    with pytest.raises(DecodeError, match="not a readable PNG, JPEG"):
        decode_image(path, opts())
    assert not started and not eps_opened
    # Pillow on its own (no allowlist) would hand this file to its EPS plugin
    with Image.open(path):
        pass
    assert eps_opened


def test_sixteen_bit_png_keeps_its_true_range():
    v = (np.arange(128 * 128).reshape(128, 128) * 4).astype(np.uint16)  # 0 .. 65532
    data = encode(Image.fromarray(v), "PNG")
    x = decode_image(data, DecodeOptions(size=(128, 128), channels=1))
    assert x.dtype == np.float32
    np.testing.assert_array_equal(x[..., 0], v.astype(np.float32) / np.float32(65535))
    # squashed to 64x64 for an RGB model: resampled in float, nothing clipped
    y = decode_image(data, opts(fit="squash"))
    assert y.shape == (64, 64, 3) and y.dtype == np.float32
    assert np.mean(y >= 1.0) < 0.01 and abs(y.mean() - x.mean()) < 1e-3


def test_float_tiff_keeps_its_values():
    f = np.linspace(0, 1, 64 * 64, dtype=np.float32).reshape(64, 64)
    data = encode(Image.fromarray(f), "TIFF")
    x = decode_image(data, opts(fit="squash"))
    assert x.dtype == np.float32 and x.shape == (64, 64, 3)
    np.testing.assert_array_equal(x, np.repeat(f[..., None], 3, axis=2))
    with pytest.raises(
        DecodeError, match="float grayscale \\(F\\) image where the model expects 3"
    ):
        decode_image(data, opts())  # fit="error": the channels differ


def test_every_mode_of_a_photo_collection(tmp_path):
    base = Image.fromarray(RGB)
    cases = {
        "cmyk.jpg": encode(base.convert("CMYK"), "JPEG"),
        "cmyk.tif": encode(base.convert("CMYK"), "TIFF"),
        "gray.jpg": encode(base.convert("L"), "JPEG"),
        "bilevel.png": encode(base.convert("1"), "PNG"),
        "palette.png": encode(base.convert("P"), "PNG"),
        "palette.gif": encode(base.convert("P"), "GIF"),
        "la.png": encode(base.convert("LA"), "PNG"),
        "rgba.webp": encode(base.convert("RGBA"), "WEBP"),
        "ycbcr.tif": encode(base.convert("YCbCr"), "TIFF"),
    }
    for name, data in cases.items():
        for channels in (1, 3, 4):
            x = decode_image(data, DecodeOptions(size=(64, 64), channels=channels, fit="crop"))
            assert x.shape == (64, 64, channels) and x.dtype == np.uint8, name
    # CMYK as RGB: Pillow's conversion of the stored pixels
    got = decode_image(cases["cmyk.tif"], DecodeOptions(channels=3, fit="squash"))
    ref = np.asarray(Image.open(io.BytesIO(cases["cmyk.tif"])).convert("RGB"))
    np.testing.assert_array_equal(got, ref)
    # grayscale for an RGB model: replicated; RGB for a gray model: Pillow's luma
    gray = np.asarray(base.convert("L"))
    got = decode_image(encode(base.convert("L"), "PNG"), DecodeOptions(channels=3, fit="squash"))
    np.testing.assert_array_equal(got, np.repeat(gray[..., None], 3, axis=2))
    got = decode_image(encode(base, "PNG"), DecodeOptions(channels=1, fit="squash"))
    np.testing.assert_array_equal(got[..., 0], gray)


def test_fit_error_names_size_and_mode():
    msgs = {}
    for name, img in {
        "wide": Image.fromarray(RGB),
        "cmyk": Image.fromarray(RGB[:, :64]).resize((64, 64)).convert("CMYK"),
        "gray": Image.fromarray(RGB).convert("L"),
    }.items():
        with pytest.raises(DecodeError) as err:
            decode_image(encode(img, "TIFF"), opts())
        msgs[name] = str(err.value)
    assert "image is 48x80 (HxW), the model expects 64x64" in msgs["wide"]
    assert "CMYK image where the model expects 3 channels (RGB)" in msgs["cmyk"]
    assert "grayscale (L)" in msgs["gray"] and "48x80" in msgs["gray"]
    assert all("fit='squash', 'crop' or 'pad'" in m for m in msgs.values())
    # the same-size palette and RGBA images are what the model takes (lossless / composited)
    same = Image.fromarray(RGB[:, :48]).resize((64, 64))
    for mode in ("P", "RGBA"):
        assert decode_image(encode(same.convert(mode), "PNG"), opts()).shape == (64, 64, 3)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillows_exif_transpose(orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(Image.fromarray(RGB), "JPEG", exif=exif.tobytes(), quality=95)
    got = decode_image(data, DecodeOptions(channels=3))
    ref = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB"))
    np.testing.assert_array_equal(got, ref)
    # the model's size is judged after orientation (5-8 swap the sides)
    want = (80, 48) if orientation >= 5 else (48, 80)
    assert decode_image(data, DecodeOptions(size=want)).shape == (*want, 3)


def test_alpha_is_composited_on_the_chosen_background():
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:32, :, 3] = 255  # top half opaque red, bottom half transparent
    data = encode(Image.fromarray(rgba), "PNG")
    black = decode_image(data, opts())
    white = decode_image(data, opts(alpha="white"))
    np.testing.assert_array_equal(black[:32], white[:32])
    assert (black[:32, :, 0] == 200).all() and (black[32:] == 0).all() and (white[32:] == 255).all()
    assert decode_image(data, opts(channels=4)).shape == (64, 64, 4)  # an RGBA model keeps it


def test_animated_gif_gives_its_first_frame():
    frames = [Image.fromarray(np.full((64, 64, 3), v, np.uint8)) for v in (30, 220)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    x = decode_image(buf.getvalue(), opts())
    assert np.abs(x.astype(int) - 30).max() <= 2


def test_empty_and_unknown_files():
    with pytest.raises(DecodeError, match="empty file"):
        decode_image(b"", opts())
    with pytest.raises(DecodeError, match="not a readable"):
        decode_image(b"GIF87a" + b"\0" * 3, opts())
    with pytest.raises(DecodeError, match="not a readable"):  # JPEG 2000: not allowed
        decode_image(b"\0\0\0\x0cjP  \r\n\x87\n" + b"\0" * 64, opts())


# --------------------------------------------------------------------------------- fit


def test_crop_equals_resizing_the_whole_image_then_cropping():
    img = Image.fromarray((RNG.random((96, 128, 3)) * 255).astype(np.uint8))
    got = np.asarray(fit_image(img, (48, 48), "crop"))
    whole = img.resize(scaled_size(img.size, (48, 48), "crop"), Image.BILINEAR)  # 64 x 48
    assert whole.size == (64, 48)
    np.testing.assert_array_equal(got, np.asarray(whole)[:, 8:56])
    assert crop_box((128, 96), (48, 48)) == (16.0, 0.0, 112.0, 96.0)


def test_pad_centres_the_image_on_zeros():
    img = Image.fromarray(np.full((30, 60, 3), 255, np.uint8))  # 60 wide, 30 tall
    got = np.asarray(fit_image(img, (64, 64), "pad"))
    rows = np.flatnonzero(got[:, :, 0].max(axis=1))
    assert (rows[0], rows[-1]) == (16, 47)  # 32 rows, centred
    assert (got[16:48] == 255).all() and (got[:16] == 0).all() and (got[48:] == 0).all()


def test_squash_fits_any_aspect():
    img = Image.fromarray(RGB)
    assert np.asarray(fit_image(img, (64, 64), "squash")).shape == (64, 64, 3)
    assert fit_image(img, (48, 80), "crop") is img  # already the size


def test_fit_array_resamples_like_files():
    f = (RNG.random((48, 80, 3)) * 255).astype(np.uint8)
    ref = np.asarray(fit_image(Image.fromarray(f), (64, 64), "crop"))
    np.testing.assert_array_equal(fit_array(f, (64, 64), "crop"), ref)
    g = fit_array(f.astype(np.float32) / 255, (64, 64), "pad")
    assert g.dtype == np.float32 and g.shape == (64, 64, 3)


def test_array_pixels_follow_the_file_rule():
    u8 = RGB
    assert array_pixels(u8) is u8
    np.testing.assert_array_equal(unit_float(u8), u8.astype(np.float32) / np.float32(255))
    u16 = RGB.astype(np.uint16) * 257
    np.testing.assert_allclose(array_pixels(u16), RGB / 255.0, atol=1e-7)
    with pytest.raises(ValueError, match="dtype int64"):
        array_pixels(RGB.astype(np.int64))


def test_options_are_checked():
    with pytest.raises(ValueError, match="unknown fit 'stretch'"):
        DecodeOptions(fit="stretch")
    with pytest.raises(ValueError, match="unknown alpha background 'grey'"):
        DecodeOptions(alpha="grey")
    with pytest.raises(ValueError, match="max_pixels must be a positive integer"):
        DecodeOptions(max_pixels=0)
