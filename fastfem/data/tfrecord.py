"""TFRecord files read in pure Python: checked framing, record offsets, ``tf.train.Example``.

A TFRecord file is a sequence of records, each::

    uint64 length (little endian) | uint32 masked CRC-32C of the length bytes
    data[length]                  | uint32 masked CRC-32C of the data

`scan_records` walks a file once and yields one `Frame` per record: its offset, its data (CRC
checked, `fastfem.data.crc32c`) or the problem. A record whose data fails its checksum is a
frame with a problem and the walk goes on (the framing is intact); damaged framing — a length
whose checksum fails, or a file that ends inside a record — ends the walk with one last frame
that says where (``fatal``): every record before the damage is read, nothing after it is
trusted. Nothing is held but the current record.

`parse_example` reads a serialized ``tf.train.Example`` (``features.feature``: a map from names
to a ``bytes_list``, ``float_list`` or ``int64_list``) straight from the protobuf wire format,
without TensorFlow; bytes values come back as (start, end) positions in the record, so an image
is located in the file without being copied. Malformed messages raise `ExampleError`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np

from fastfem.data.crc32c import masked_crc32c

HEADER = 12  # uint64 length + uint32 masked CRC of the length
FOOTER = 4  # uint32 masked CRC of the data
#: The largest record accepted (bytes); a length beyond it is treated as damage.
MAX_RECORD = 1 << 31


@dataclass(frozen=True)
class Frame:
    """One record of a TFRecord file: where it starts, its data or the ``problem``; ``fatal``:
    the framing is damaged here and the file is not read further."""

    offset: int
    data: bytes | None = None
    problem: str | None = None
    fatal: bool = False


def _read_exact(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    return data if data is not None else b""


def scan_records(f: BinaryIO) -> Iterator[Frame]:
    """The records of an open TFRecord file, in order (module docstring)."""
    offset = 0
    while True:
        header = _read_exact(f, HEADER)
        if not header:
            return
        if len(header) < HEADER:
            yield Frame(
                offset,
                problem=f"truncated: the file ends inside a record header at byte {offset}",
                fatal=True,
            )
            return
        length, length_crc = struct.unpack("<QI", header)
        if masked_crc32c(header[:8]) != length_crc:
            yield Frame(
                offset,
                problem=f"damaged record header at byte {offset} (length checksum fails)",
                fatal=True,
            )
            return
        if length > MAX_RECORD:
            yield Frame(
                offset,
                problem=f"record at byte {offset} declares {length} bytes (over {MAX_RECORD})",
                fatal=True,
            )
            return
        body = _read_exact(f, length + FOOTER)
        if len(body) < length + FOOTER:
            yield Frame(
                offset,
                problem=f"truncated: the record at byte {offset} declares {length} bytes, the file "
                f"ends {len(body)} bytes after its header",
                fatal=True,
            )
            return
        data = body[:length]
        (data_crc,) = struct.unpack("<I", body[length:])
        if masked_crc32c(data) != data_crc:
            yield Frame(offset, problem=f"damaged record at byte {offset} (data checksum fails)")
        else:
            yield Frame(offset, data=data)
        offset += HEADER + length + FOOTER


# --------------------------------------------------------------------------- tf.train.Example


class ExampleError(ValueError):
    """A record that is not a well-formed ``tf.train.Example``."""


#: A feature's values: ("bytes", [(start, end), ...]) | ("int64", [...]) | ("float", [...]).
Feature = tuple[str, list]


def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end or shift > 63:
            raise ExampleError("malformed varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """``(field number, wire type, value or start, end)`` of a message in ``buf[start:end]``:
    varints as their value (end unused), length-delimited fields as their (start, end)."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos, end)
            yield number, wire, value, pos
        elif wire == 2:
            n, pos = _varint(buf, pos, end)
            if pos + n > end:
                raise ExampleError("a field runs past the end of its message")
            yield number, wire, pos, pos + n
            pos += n
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            if pos + size > end:
                raise ExampleError("a field runs past the end of its message")
            yield number, wire, pos, pos + size
            pos += size
        else:
            raise ExampleError(f"unsupported protobuf wire type {wire}")


def _signed64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _int64_values(buf: bytes, start: int, end: int) -> list[int]:
    out = []
    for number, wire, a, b in _fields(buf, start, end):
        if number != 1:
            continue
        if wire == 0:
            out.append(_signed64(a))
        elif wire == 2:  # packed
            pos = a
            while pos < b:
                v, pos = _varint(buf, pos, b)
                out.append(_signed64(v))
    return out


def _float_values(buf: bytes, start: int, end: int) -> list[float]:
    out: list[float] = []
    for number, wire, a, b in _fields(buf, start, end):
        if number != 1:
            continue
        if wire == 5:
            out.append(float(np.frombuffer(buf, "<f4", 1, a)[0]))
        elif wire == 2:  # packed
            if (b - a) % 4:
                raise ExampleError("packed floats of a length not a multiple of 4")
            out.extend(np.frombuffer(buf, "<f4", (b - a) // 4, a).tolist())
    return out


def _feature(buf: bytes, start: int, end: int) -> Feature:
    kind: Feature = ("bytes", [])
    for number, wire, a, b in _fields(buf, start, end):
        if wire != 2:
            continue
        if number == 1:
            kind = ("bytes", [(s, e) for n, w, s, e in _fields(buf, a, b) if n == 1 and w == 2])
        elif number == 2:
            kind = ("float", _float_values(buf, a, b))
        elif number == 3:
            kind = ("int64", _int64_values(buf, a, b))
    return kind


def parse_example(buf: bytes) -> dict[str, Feature]:
    """The features of a serialized ``tf.train.Example`` (module docstring); the last entry of a
    repeated name wins, as in protobuf maps."""
    features: dict[str, Feature] = {}
    for number, wire, a, b in _fields(buf, 0, len(buf)):
        if number != 1 or wire != 2:
            continue
        for n, w, s, e in _fields(buf, a, b):
            if n != 1 or w != 2:
                continue
            name, value = None, ("bytes", [])
            for fn, fw, fs, fe in _fields(buf, s, e):
                if fn == 1 and fw == 2:
                    name = bytes(buf[fs:fe]).decode("utf-8", "surrogateescape")
                elif fn == 2 and fw == 2:
                    value = _feature(buf, fs, fe)
            if name is not None:
                features[name] = value
    return features
