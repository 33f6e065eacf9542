r"""WebDataset ``.tar`` shards as audit sources, read with the standard library's `tarfile`.

A shard's members are grouped into samples by key, as WebDataset groups them: the member's
path up to the first dot of its file name (``train/0001.seg.png``: key ``train/0001``,
extension ``seg.png``). A sample's image is its one member with an image extension (``jpg``,
``png``, ``webp``, ... `fastfem.data.decode.IMAGE_SUFFIXES`), or the extension
`ReadOptions` ``image_column`` names; its label is the text of its ``.cls`` member, else of
its ``.txt``, else the ``label`` field (``label_field``) of its ``.json`` — or the member
``label_column`` names (``label_field`` given alone: the JSON's field).

**Ids** say where a sample lies: ``<shard>:<key>`` (the shard's name, several shards: its path
relative to their common parent). Shards are files, so several processes read whole files
(`fastfem.data.records.process_of`).

**Streaming.** Listing reads the member headers once through each file (`tarfile` seeks past
the data); reading then takes each selected sample's image and label members by their offsets,
on host threads. A sample without an image (or with several), a label that cannot be read,
bytes that do not decode, a member cut short are error rows; a shard that cannot be opened
is one error row ``\!<shard>:unreadable``, and one damaged after some members (a broken header,
a cut) is read up to the damage, then one error row ``\!<shard>:damaged-at-<offset>``
(reserved ids, `fastfem.data.ids.reserved_id`) — where `tarfile` alone would stop quietly.
"""

from __future__ import annotations

import json
import re
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from fastfem.data.decode import IMAGE_SUFFIXES
from fastfem.data.ids import id_and_raw, printable, readable_id, reserved_id
from fastfem.data.records import (
    ReadOptions,
    Record,
    Select,
    Shape,
    Source,
    check_unique,
    list_shards,
    read_record,
    shard_names,
    threaded_map,
)

IMAGE_EXTENSIONS = frozenset(s[1:] for s in IMAGE_SUFFIXES)
LABEL_EXTENSIONS = ("cls", "txt", "json")
DEFAULT_LABEL_FIELD = "label"
BLOCK = tarfile.BLOCKSIZE
#: A member's file name: key (the path up to the first dot of the name) and extension.
KEY_EXT = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")

#: A member's data in the file: (offset, size); a str: why it cannot be read (not a file).
Span = tuple[int, int] | str


@dataclass
class Sample:
    """One key of a shard: its members' spans by extension (``problem``: set at listing)."""

    id: str
    raw_id: bytes | None
    path: Path
    members: dict[str, Span] = field(default_factory=dict)
    problem: str | None = None


def split_name(name: str) -> tuple[str, str]:
    """``(key, extension)`` of a member name (module docstring); no dot: ``(name, "")``."""
    m = KEY_EXT.match(name)
    return (m.group(1), m.group(2)) if m else (name, "")


def _add_member(samples: dict[str, Sample], info: tarfile.TarInfo, path: Path, shard: str) -> None:
    key, ext = split_name(info.name)
    if key not in samples:
        rid, raw = id_and_raw(f"{shard}:{key}", file_name=True)
        samples[key] = Sample(rid, raw, path)
    sample = samples[key]
    if ext in sample.members:
        sample.problem = printable(f"member {info.name} appears twice in {shard}")
    kind = "file" if info.isreg() else "link" if info.issym() or info.islnk() else "special file"
    sample.members[ext] = (info.offset_data, info.size) if info.isreg() else f"a {kind}"


def _end_problem(f: BinaryIO, offset: int) -> str | None:
    """Why the archive does not end properly at ``offset`` (where `tarfile` stopped): a block
    that is not the zero block of the end-of-archive marker, or none (cut)."""
    f.seek(offset)
    block = f.read(BLOCK)
    if len(block) == BLOCK and not any(block):
        return None
    if not block:
        return "ends without the end-of-archive marker (cut short?)"
    return "has a damaged member header"


def list_tar(path: Path, shard: str) -> list[Sample]:
    """One shard's samples in order of first appearance, then its damage if any (module
    docstring). Directory members hold no data and are passed over."""
    samples: dict[str, Sample] = {}
    try:
        with open(path, "rb") as f, tarfile.open(fileobj=f, mode="r:") as tar:
            try:
                for info in tar:
                    if not info.isdir():
                        _add_member(samples, info, path, shard)
                problem = _end_problem(f, tar.offset)
            except (tarfile.TarError, OSError) as err:
                problem = f"{type(err).__name__}: {err}"
            offset = tar.offset  # where the next header was due
    except (tarfile.TarError, OSError) as err:
        why = printable(f"cannot read tar {shard}: {type(err).__name__}: {err}")
        return [Sample(reserved_id(shard, "unreadable"), None, path, problem=why)]
    found = list(samples.values())
    if problem is not None:
        why = printable(f"tar {shard} {problem} at byte {offset}; the rest is not read")
        found.append(Sample(reserved_id(shard, f"damaged-at-{offset}"), None, path, problem=why))
    return found


def image_extension(members: dict[str, Span], options: ReadOptions) -> str:
    """The extension of a sample's image member; a ValueError when there is none or several."""
    have = ", ".join(f".{e}" if e else "(no extension)" for e in members)
    if options.image_column is not None:
        if options.image_column not in members:
            raise ValueError(f"no .{options.image_column} member (members: {have})")
        return options.image_column
    found = [e for e in members if e.lower() in IMAGE_EXTENSIONS]
    if len(found) != 1:
        what = "no image member" if not found else "several image members"
        raise ValueError(f"{what} (members: {have}); name its extension with --image-column")
    return found[0]


def label_extension(members: dict[str, Span], options: ReadOptions) -> str | None:
    """The member the label comes from (module docstring); None: no label."""
    if options.label_column is not None:
        return options.label_column if options.label_column in members else None
    if options.label_field is not None:
        return "json" if "json" in members else None
    return next((e for e in LABEL_EXTENSIONS if e in members), None)


def read_span(path: Path, span: Span) -> bytes:
    """A member's data; a ValueError when it is not a file or the shard ends inside it."""
    if isinstance(span, str):
        raise ValueError(f"the member is {span}, not a file")
    with open(path, "rb") as f:
        f.seek(span[0])
        data = f.read(span[1])
    if len(data) != span[1]:
        raise ValueError(f"member cut short: {len(data)} of {span[1]} bytes")
    return data


def parse_label(data: bytes, ext: str, json_field: str) -> str | None:
    """A label member's text (``.json``: its ``json_field``, a number or text, missing or null
    for no label); a ValueError for a JSON label of another kind."""
    text = data.decode("utf-8").strip()
    if ext != "json":
        return readable_id(text)
    value = json.loads(text).get(json_field) if text else None
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"JSON field {json_field!r} is {type(value).__name__}, not a label")
    return readable_id(str(value))


def is_tar(p: Path) -> bool:
    """A ``.tar`` file name (WebDataset shards are uncompressed tar files)."""
    return p.suffix == ".tar"


def webdataset_source(paths: Sequence[Path], expected: Shape, options: ReadOptions) -> Source:
    """WebDataset tar shards (module docstring); shards = files."""
    names = shard_names(paths)
    pairs = [(p, readable_id(n)) for p, n in zip(paths, names, strict=True)]
    listed = list_shards(lambda a: list_tar(*a), pairs, options.threads)
    samples = [s for found in listed for s in found]
    where = printable(names[0]) if len(paths) == 1 else f"{len(paths)} files"
    if not samples:
        raise ValueError(f"no samples in WebDataset {where}")
    ids = [s.id for s in samples]
    check_unique(ids, f"WebDataset {where}")
    decoding = options.decode_options(expected)
    json_field = options.label_field or DEFAULT_LABEL_FIELD

    def one(i: int) -> Record:
        s = samples[i]
        label = None
        try:
            if s.problem is not None:
                raise ValueError(s.problem)
            ext = label_extension(s.members, options)
            if ext is not None:
                label = parse_label(read_span(s.path, s.members[ext]), ext, json_field)
            data = read_span(s.path, s.members[image_extension(s.members, options)])
        except Exception as err:  # any failure of one sample is that sample's error row
            return Record(s.id, label, error=printable(str(err)), raw_id=s.raw_id)
        return read_record(s.id, s.raw_id, label, lambda: data, decoding, expected)

    def read(select: Select) -> Iterator[Record]:
        chosen = [i for i, rid in enumerate(ids) if select(i, rid)]
        return threaded_map(chosen, one, options.threads)

    shards = [k for k, found in enumerate(listed) for _ in found]
    return Source(ids, read, f"WebDataset {where} ({len(ids)} samples)", shards)
