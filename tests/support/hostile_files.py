"""Hostile inputs of the audit's reliability tests, built byte by byte."""

from __future__ import annotations

import functools
import struct
import zlib

#: A PostScript program (EPS header): Pillow alone would hand it to Ghostscript.
EPS = (
    b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\n"
    b"newpath 0 0 moveto 64 64 lineto stroke\nshowpage\n"
)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_header_only(width: int, height: int, color_type: int = 0, idat: bytes = b"") -> bytes:
    """A PNG whose header declares ``width x height`` (8-bit), with ``idat`` as its data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def bomb_png() -> bytes:
    """The decompression bomb: a PNG declaring 50000x50000 pixels in 69 bytes."""
    data = png_header_only(50_000, 50_000, idat=zlib.compress(b"\0" * 4))
    assert len(data) == 69
    return data


@functools.cache
def huge_gray_png() -> bytes:
    """A valid 10000x10000 grayscale PNG of zeros in ~100 kB: under Pillow's bomb limit, 100 M
    pixels (~1 GB to decode and convert)."""
    return png_header_only(10_000, 10_000, idat=zlib.compress(b"\0" * (10_001 * 10_000), 9))
