"""Image files -> pixels for a model input: fastfem's one image decoder.

Every image file fastfem reads goes through `decode_image`: the folders of ``fastfem explain``
and ``evaluate`` (`fastfem.data.folders`) and every source (`fastfem.data.records.read_record`).

**Fixed surface.** Pillow opens only ``ALLOWED_FORMATS`` — PNG, JPEG (with MPO, the camera
multi-picture JPEG), WebP, BMP, TIFF, GIF — recognised by content, whatever the file's name
(``Image.open(fp, formats=...)``). PostScript, EPS, PDF and every other format are refused as
"not a readable PNG, JPEG, ... file": no external program (Ghostscript) is ever started.

**Order of work** (each refusal raises `DecodeError` with the reason; the audit stores it as the
record's error row):

1. header only: format, size and mode; Pillow's decompression-bomb limit
   (``PIL.Image.MAX_IMAGE_PIXELS``, twice that refused at open) stops absurd headers;
2. EXIF orientation (JPEG/MPO, TIFF, WebP; PNG's eXIf chunk when it precedes the pixels);
3. ``fit="error"``: the size after orientation and the colour channels must already be the
   model's (module `fastfem.data.fit`); refused here, before any pixel is decoded;
4. JPEG draft: a JPEG at least twice its fitted size on both sides is decoded at 1/2, 1/4 or
   1/8 scale by the JPEG decoder's DCT scaling (``draft``; the result stays >= the fitted size,
   then resampled like any image, with the geometry of the image's own size: step 8);
5. pixel budget: width x height to decode must be <= ``max_pixels`` (default 50 M: a 50-megapixel
   non-JPEG photo; JPEGs count after the draft);
6. decode the first frame (animated GIF/WebP/PNG, multi-page TIFF), apply the orientation;
7. mode -> pixels (`PIXELS`); alpha composited on black (``alpha="black"``) or white;
8. fit to the model's (H, W) (`fastfem.data.fit.fit_image`): the geometry is computed exactly on the
   image's own size after orientation (`fastfem.data.fit.fit_geometry`), a draft decode taking the
   same box divided by its reduction, so a JPEG and the same pixels as PNG are fitted alike.

**Pixels** (`PIXELS`): 8-bit data comes out as uint8 ``v`` (the model's preprocessing,
`fastfem.data.preprocess`, reads it as ``v / 255``, the same as a uint8 array); 16-bit data as
float32
``v / 65535``; float images (TIFF ``F``) as float32 unchanged (fastfem's float convention:
[0, 1]). Colour channels: 3 -> RGB (grayscale replicated, CMYK/LAB/HSV converted by Pillow), 1
-> grayscale (Pillow's ITU-R 601-2 luma ``L = 0.299 R + 0.587 G + 0.114 B``), 4 -> RGBA.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fastfem.data.fit import check_fit, fit_image, scaled_size

ALLOWED_FORMATS: tuple[str, ...] = ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF")
#: File name suffixes of image folders (lower case; matched case-insensitively).
IMAGE_SUFFIXES: tuple[str, ...] = (
    ".png",
    ".jpg",
    ".jpeg",
    ".jpe",
    ".jfif",
    ".webp",
    ".bmp",
    ".tif",
    ".tiff",
    ".gif",
)
DEFAULT_MAX_PIXELS = 50_000_000
READ_WHOLE = 4 << 20  # files up to this size are read in one call
#: Background of alpha compositing -> its 8-bit value.
BACKGROUNDS: dict[str, int] = {"black": 0, "white": 255}
ORIENTATION_TAG = 0x0112
#: Stored Pillow mode -> (its pixels before the channel conversion, the colour model).
PIXELS: dict[str, tuple[str, str]] = {
    "1": ("L", "gray"),
    "L": ("L", "gray"),
    "P": ("RGB", "rgb"),  # RGBA when the palette has a transparent entry
    "PA": ("RGBA", "rgb"),
    "LA": ("LA", "gray"),
    "La": ("LA", "gray"),
    "RGB": ("RGB", "rgb"),
    "RGBX": ("RGB", "rgb"),
    "YCbCr": ("RGB", "rgb"),
    "RGBA": ("RGBA", "rgb"),
    "RGBa": ("RGBA", "rgb"),
    "CMYK": ("RGB", "cmyk"),
    "LAB": ("RGB", "lab"),
    "HSV": ("RGB", "hsv"),
    "I;16": ("F16", "gray"),
    "I;16L": ("F16", "gray"),
    "I;16B": ("F16", "gray"),
    "I;16N": ("F16", "gray"),
    "I": ("F16", "gray"),
    "F": ("F", "gray"),
}
DESCRIBE: dict[str, str] = {
    "1": "1-bit",
    "L": "grayscale (L)",
    "LA": "grayscale+alpha (LA)",
    "I;16": "16-bit grayscale (I;16)",
    "I": "32-bit integer grayscale (I)",
    "F": "float grayscale (F)",
    "P": "palette (P)",
}
MODE_OF_CHANNELS = {1: "L", 3: "RGB", 4: "RGBA"}


class DecodeError(ValueError):
    """Why an image file cannot become the model's pixels (the message is the reason)."""


@dataclass(frozen=True)
class DecodeOptions:
    """What the pixels must become.

    ``size``: the model's (H, W), None to keep the image's; ``channels``: 1, 3 or 4 (None: the
    image's own, gray or RGB); ``fit``: `fastfem.data.fit.FITS`; ``max_pixels``: the pixel budget;
    ``alpha``: the compositing background (`BACKGROUNDS`); ``draft``: allow JPEG draft decoding.
    """

    size: tuple[int, int] | None = None
    channels: int | None = 3
    fit: str = "error"
    max_pixels: int = DEFAULT_MAX_PIXELS
    alpha: str = "black"
    draft: bool = True

    def __post_init__(self) -> None:
        check_fit(self.fit)
        check_alpha(self.alpha)
        check_max_pixels(self.max_pixels)
        if self.channels not in (None, 1, 3, 4):
            raise ValueError(f"images have 1, 3 or 4 channels; the model expects {self.channels}")


def check_alpha(alpha: Any) -> str:
    """``alpha`` if it names a background of `BACKGROUNDS`; a ValueError otherwise."""
    if alpha not in BACKGROUNDS:
        raise ValueError(
            f"unknown alpha background {alpha!r}; expected one of {tuple(BACKGROUNDS)}"
        )
    return alpha


def check_max_pixels(max_pixels: Any) -> int:
    """A positive integer pixel budget; a ValueError naming the value otherwise."""
    if (
        isinstance(max_pixels, bool)
        or not isinstance(max_pixels, (int, np.integer))
        or max_pixels < 1
    ):
        raise ValueError(f"max_pixels must be a positive integer; got {max_pixels!r}")
    return int(max_pixels)


def describe(mode: str) -> str:
    """A mode in words for error messages (``grayscale (L)``, ``CMYK``)."""
    if mode.startswith("I;16"):
        return DESCRIBE["I;16"]
    return DESCRIBE.get(mode, mode)


# ------------------------------------------------------------------------------- the header


def open_image(file: bytes | str | os.PathLike) -> Any:
    """The file opened by Pillow with `ALLOWED_FORMATS` only (header read, no pixels)."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(file, (bytes, bytearray, memoryview)):
        if not len(file):
            raise DecodeError("empty file")
        fp: Any = io.BytesIO(file)
    else:
        size = os.stat(file).st_size
        if size == 0:
            raise DecodeError("empty file")
        # small files in one read; a large one is opened, so a bad header costs no full read
        fp = io.BytesIO(Path(file).read_bytes()) if size <= READ_WHOLE else file
    try:
        return Image.open(fp, formats=list(ALLOWED_FORMATS))
    except Image.DecompressionBombError as err:
        raise DecodeError(f"decompression bomb refused: {err}") from err
    except UnidentifiedImageError as err:
        raise DecodeError(
            f"cannot decode image: not a readable {', '.join(ALLOWED_FORMATS[:-1])} or "
            f"{ALLOWED_FORMATS[-1]} file"
        ) from err


#: Where Pillow finds an orientation besides the ``exif`` info (TIFF tags, XMP packets).
ORIENTATION_SOURCES = ("exif", "Raw profile type exif", "XML:com.adobe.xmp", "xmp")


def orientation(img: Any) -> int:
    """The EXIF orientation (1-8; 1 = as stored), from what ``img.info`` holds now: before
    decoding, a PNG's eXIf chunk counts only when it precedes the pixels (reading a later one
    would decode them); after decoding, a later chunk is there too."""
    if img.format != "TIFF" and not any(key in img.info for key in ORIENTATION_SOURCES):
        return 1  # nothing to read it from (and a PNG would decode its pixels to look)
    value = img.getexif().get(ORIENTATION_TAG, 1)
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def shown_size(size: tuple[int, int], orient: int) -> tuple[int, int]:
    """(width, height) after the orientation (5-8 swap the sides)."""
    return (size[1], size[0]) if orient >= 5 else size


def pixel_kind(img: Any) -> tuple[str, str]:
    """(the image's pixels before the channel conversion, its colour model): `PIXELS`."""
    if img.mode not in PIXELS:
        raise DecodeError(f"unsupported image mode {img.mode}")
    kind, colour = PIXELS[img.mode]
    if img.mode == "P" and "transparency" in img.info:
        kind = "RGBA"
    return kind, colour


def strict_problems(img: Any, orient: int, options: DecodeOptions) -> list[str]:
    """``fit="error"``: what differs from the model's input — the size after orientation,
    the colour channels (gray vs RGB, CMYK/LAB/HSV) — before any pixel is decoded."""
    problems = []
    kind, colour = pixel_kind(img)
    c = options.channels
    gray = colour == "gray"
    if (
        (c == 3 and (gray or colour != "rgb"))
        or (c == 1 and not gray)
        or (c == 4 and colour != "rgb")
    ):
        what = describe(img.mode)
        problems.append(
            f"{what} image where the model expects {c} channels ({MODE_OF_CHANNELS[c]})"
        )
    if options.size is not None:
        w, h = shown_size(img.size, orient)
        if (h, w) != tuple(options.size):
            problems.append(
                f"image is {h}x{w} (HxW), the model expects {options.size[0]}x{options.size[1]}"
            )
    return problems


def draft_jpeg(img: Any, orient: int, options: DecodeOptions) -> int:
    """Let a JPEG decode at 1/2, 1/4 or 1/8 scale when its fitted size allows; the reduction
    ``k`` (1: none, and for every other format). The decode stays at least the whole image's
    fitted size (`fastfem.data.fit.scaled_size`): Pillow picks the largest ``k`` with ``k`` times
    that size within the image's own."""
    if img.format not in ("JPEG", "MPO") or options.size is None:
        return 1
    w, h = scaled_size(shown_size(img.size, orient), options.size, options.fit)
    stored_w = img.size[0]
    drafted = img.draft(None, shown_size((w, h), orient))
    return 1 if drafted is None else round(stored_w / drafted[1][2])


def check_budget(size: tuple[int, int], max_pixels: int) -> None:
    """Refuse decoding more than ``max_pixels`` pixels (named in the error)."""
    w, h = size
    if w * h > max_pixels:
        raise DecodeError(
            f"image is {w}x{h} = {w * h:,} pixels to decode, over the pixel budget of "
            f"{max_pixels:,} (max_pixels / --max-pixels)"
        )


# ------------------------------------------------------------------------------- the pixels


#: EXIF orientation -> the `PIL.Image.Transpose` that shows the image upright.
TRANSPOSE_OF_ORIENTATION = {
    2: "FLIP_LEFT_RIGHT",
    3: "ROTATE_180",
    4: "FLIP_TOP_BOTTOM",
    5: "TRANSPOSE",
    6: "ROTATE_270",
    7: "TRANSVERSE",
    8: "ROTATE_90",
}


def oriented(img: Any, orient: int) -> Any:
    """The decoded image as it is meant to be shown (EXIF orientation 2-8 applied)."""
    from PIL import Image

    if orient in TRANSPOSE_OF_ORIENTATION:
        return img.transpose(Image.Transpose[TRANSPOSE_OF_ORIENTATION[orient]])
    return img


def high_bit_depth(img: Any) -> Any:
    """A 16-bit (or 32-bit integer holding 16-bit data) image as float ``v / 65535`` (mode F)."""
    from PIL import Image

    arr = np.asarray(img)
    if img.mode == "I":
        lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
        if lo < 0 or hi > 65535:
            raise DecodeError(
                f"32-bit integer pixels from {lo} to {hi}: fastfem reads 8-bit, 16-bit and "
                "float images"
            )
    return Image.fromarray(arr.astype(np.float32) / np.float32(65535.0))


def composite(img: Any, background: str) -> Any:
    """An LA/RGBA image over an opaque ``background`` (`BACKGROUNDS`): L or RGB."""
    from PIL import Image

    v = BACKGROUNDS[background]
    back = Image.new("RGBA", img.size, (v, v, v, 255))
    out = Image.alpha_composite(back, img.convert("RGBA")).convert("RGB")
    return out.convert("L") if img.mode == "LA" else out


def to_channels(img: Any, kind: str, channels: int | None, alpha: str) -> Any:
    """The decoded image in the model's channels: L, RGB or RGBA (8-bit) or F (high bit depth
    and float grayscale, replicated to 3 channels by `as_pixels`)."""
    if kind in ("F16", "F"):
        if channels == 4:
            raise DecodeError(f"{describe(img.mode)} image where the model expects 4 channels")
        return high_bit_depth(img) if kind == "F16" else img
    if img.mode != kind:
        img = img.convert(kind)
    if kind in ("LA", "RGBA") and channels != 4:
        img = composite(img, alpha)
    target = MODE_OF_CHANNELS.get(channels, img.mode) if channels else img.mode
    return img.convert(target) if img.mode != target else img


def as_pixels(img: Any, channels: int | None) -> np.ndarray:
    """(H, W, C) uint8 (8-bit modes) or float32 (F; replicated when 3 channels are wanted)."""
    arr = np.asarray(img)
    if arr.ndim == 2:
        arr = arr[..., None]
    if channels == 3 and arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    return arr


def decode_open(img: Any, options: DecodeOptions) -> np.ndarray:
    """Steps 2-8 of the module docstring on an opened image."""
    orient = orientation(img)  # before decoding: for the size checks
    if options.fit == "error":
        problems = strict_problems(img, orient, options)
        if problems:
            raise DecodeError(
                "; ".join(problems) + " (fit='error' takes images as they are; fit='squash', "
                "'crop' or 'pad' (--fit) converts them)"
            )
    stored = img.size  # the image's own size, whatever the decode's (draft)
    reduction = draft_jpeg(img, orient, options) if options.fit != "error" and options.draft else 1
    check_budget(img.size, options.max_pixels)
    img.load()
    kind, _ = pixel_kind(img)
    orient = orientation(img)  # after: img.info has every chunk
    pixels = oriented(img, orient)
    pixels = to_channels(pixels, kind, options.channels, options.alpha)
    if options.size is not None and options.fit != "error":
        own = shown_size(stored, orient)
        pixels = fit_image(pixels, options.size, options.fit, own, reduction)
    return as_pixels(pixels, options.channels)


def decode_image(file: bytes | str | os.PathLike, options: DecodeOptions) -> np.ndarray:
    """One image file (a path, or its bytes) as the model's pixels (H, W, C): uint8 for 8-bit
    data, float32 for 16-bit (``v / 65535``) and float data (module docstring).

    Raises `DecodeError` (a ValueError) with the reason for refused files; Pillow's own errors
    on damaged data (any exception type) propagate: callers that must go on catch them
    (`fastfem.data.records.read_record` turns each into the record's error row).
    """
    with open_image(file) as img:
        return decode_open(img, options)


def array_pixels(x: np.ndarray, what: str = "array") -> np.ndarray:
    """Array pixels by the same rule as files: uint8 as is (``v / 255`` on the device), uint16
    as float32 ``v / 65535``, floats as float32 (taken to be in [0, 1]), big- or little-endian
    alike; other dtypes refused."""
    if x.dtype.kind == "u" and x.dtype.itemsize == 1:
        return x
    if x.dtype.kind == "u" and x.dtype.itemsize == 2:  # either byte order
        return x.astype(np.float32) / np.float32(65535.0)
    if x.dtype.kind == "f":  # either byte order: float32 in the machine's
        return x.astype(np.float32, copy=False)
    raise ValueError(
        f"{what}: pixels of dtype {x.dtype}; fastfem reads uint8 (0-255), uint16 (0-65535) or "
        "float images (in [0, 1])"
    )


def unit_float(x: np.ndarray) -> np.ndarray:
    """Pixels as float32 in [0, 1] on the host: uint8 ``v -> v / 255`` (the device's ``unit``
    preprocessing, bit for bit), floats unchanged."""
    if x.dtype == np.uint8:
        return np.asarray(x, dtype=np.float32) / np.float32(255.0)
    return np.asarray(x, dtype=np.float32)
