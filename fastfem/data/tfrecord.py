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

`tfrecord_source` reads one or several shards as a `fastfem.data.records.Source` (checksums
verified; records up to a damage are read, the damage is one error row naming the file and byte
offset). Each record a ``tf.train.Example`` with the encoded image under ``image`` (or
``image/encoded``), optional ``id`` (bytes) and ``label`` (or ``image/class/label``; bytes or
int64). Without an ``id``, a record's id is its index in the file (one file) or
``<file>:<index>`` (several) — unless other records of the source have ids: then it is the
reserved ``\\!<file>:<index>`` (`fastfem.data.ids.reserved_id`), which no real id can equal. A
damaged record is always a reserved id (``\\!<file>:<index>``, ``\\!<file>:damaged-at-<offset>``),
so it never collides with a real one.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from fastfem.data.crc32c import masked_crc32c
from fastfem.data.ids import id_and_raw, is_reserved, printable, readable_id, reserved_id
from fastfem.data.records import (
    ReadOptions,
    Record,
    Select,
    Shape,
    Source,
    check_unique,
    list_shards,
    read_record,
    selected,
    shard_names,
    threaded_map,
)

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


# ------------------------------------------------------------------------------ the source

IMAGE_KEYS = ("image", "image/encoded")
LABEL_KEYS = ("label", "image/class/label")


def is_tfrecord(p: Path) -> bool:
    return p.suffix in (".tfrecord", ".tfrecords") or ".tfrecord" in p.name


@dataclass(frozen=True)
class _TFRecordEntry:
    id: str
    raw_id: bytes | None
    label: str | None
    path: Path
    span: tuple[int, int] | None  # the image bytes in the file
    problem: str | None = None
    unnamed: str | None = None  # a record without an id: its reserved id (`fastfem.data.ids`)


def _label_of(buf: bytes, features: dict) -> str | None:
    for key in LABEL_KEYS:
        if key in features and features[key][1]:
            kind, values = features[key]
            if kind == "bytes":
                s, e = values[0]
                return readable_id(buf[s:e].decode("utf-8", "surrogateescape"))
            return str(values[0])
    return None


def _example_entry(
    path: Path, offset: int, data: bytes, default_id: str, unnamed: str
) -> _TFRecordEntry:
    """The entry of one checked record: its id (``default_id`` without one, ``unnamed`` — a
    reserved id — when it cannot be parsed), label and where its image is."""
    try:
        features = parse_example(data)
        rid, raw, nameless = default_id, None, unnamed
        if "id" in features and features["id"][0] == "bytes" and features["id"][1]:
            s, e = features["id"][1][0]
            if e > s:
                rid, raw = id_and_raw(data[s:e].decode("utf-8", "surrogateescape"), data[s:e])
                nameless = None
        label = _label_of(data, features)
        for key in IMAGE_KEYS:
            if key in features and features[key][0] == "bytes" and features[key][1]:
                s, e = features[key][1][0]
                start = offset + HEADER
                return _TFRecordEntry(rid, raw, label, path, (start + s, start + e), None, nameless)
        problem = f"record at byte {offset} has no {' or '.join(IMAGE_KEYS)} bytes feature"
        return _TFRecordEntry(rid, raw, label, path, None, problem, nameless)
    except Exception as err:  # any malformed record is that record's error row
        problem = f"unparsable tf.train.Example at byte {offset}: {type(err).__name__}: {err}"
        return _TFRecordEntry(unnamed, None, None, path, None, printable(problem))


def list_tfrecord(path: Path, name: str, several: bool) -> list[_TFRecordEntry]:
    """One TFRecord file's entries, records up to a damage and then the damage (module
    docstring of `fastfem.data.tfrecord`)."""
    entries: list[_TFRecordEntry] = []
    try:
        with open(path, "rb") as f:
            for n, frame in enumerate(scan_records(f)):
                default_id = f"{name}:{n}" if several else str(n)
                unnamed = reserved_id(name, n)
                if frame.fatal:
                    problem = f"TFRecord {name}: {frame.problem}; the rest of the file is not read"
                    rid = reserved_id(name, f"damaged-at-{frame.offset}")
                    entries.append(_TFRecordEntry(rid, None, None, path, None, problem))
                elif frame.problem is not None:
                    entries.append(_TFRecordEntry(unnamed, None, None, path, None, frame.problem))
                else:
                    entries.append(
                        _example_entry(path, frame.offset, frame.data, default_id, unnamed)
                    )
    except OSError as err:
        problem = printable(f"cannot read TFRecord {name}: {err}")
        rid = reserved_id(name, "unreadable")
        entries.append(_TFRecordEntry(rid, None, None, path, None, problem))
    return entries


def name_unnamed(entries: list[_TFRecordEntry]) -> list[_TFRecordEntry]:
    """When some records of a source have ids, the records without one take their reserved
    id (an index could equal a real id); otherwise every id is an index and stays one."""
    if not any(e.unnamed is None and not is_reserved(e.id) for e in entries):
        return entries
    return [e if e.unnamed is None else dataclasses.replace(e, id=e.unnamed) for e in entries]


def _read_span(path: Path, span: tuple[int, int]) -> bytes:
    with open(path, "rb") as f:
        f.seek(span[0])
        return f.read(span[1] - span[0])


def tfrecord_source(paths: Sequence[Path], expected: Shape, options: ReadOptions) -> Source:
    """TFRecord shards (module docstring), listed in parallel; shards = files."""
    names = [readable_id(n) for n in shard_names(paths)]
    several = len(paths) > 1
    pairs = list(zip(paths, names, strict=True))
    listed = list_shards(lambda a: list_tfrecord(*a, several), pairs, options.threads)
    entries = name_unnamed([e for found in listed for e in found])
    shards = [k for k, found in enumerate(listed) for _ in found]
    where = names[0] if not several else f"{len(paths)} files"
    if not entries:
        raise ValueError(f"no records in TFRecord {where}")
    ids = [e.id for e in entries]
    check_unique(ids, f"TFRecord {where}")
    decoding = options.decode_options(expected)

    def one(i: int) -> Record:
        e = entries[i]
        if e.span is None:
            return Record(e.id, e.label, error=e.problem, raw_id=e.raw_id)
        return read_record(
            e.id, e.raw_id, e.label, lambda: _read_span(e.path, e.span), decoding, expected
        )

    def read(select: Select) -> Iterator[Record]:
        return threaded_map(selected(ids, select), one, options.threads)

    return Source(ids, read, f"TFRecord {where} ({len(ids)} records)", shards)
