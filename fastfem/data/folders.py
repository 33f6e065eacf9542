"""Image folders on disk: the image files they hold, walked safely.

`walk_images` lists the image files under a folder (recursive; suffixes
`fastfem.data.decode.IMAGE_SUFFIXES`, any case) as `FolderEntry` items sorted by their path
components, with ids that survive any file name (`fastfem.data.ids`: a relative POSIX path,
escaped where it is not UTF-8, the bytes on disk kept beside it). Symbolic links:

* a link to a file is listed under its own path (two links to one file are two entries);
* a linked folder is followed only when it leads to a folder not reached otherwise: every
  folder is walked once, under its path without links if it has one, else under the first
  link in sorted order that reaches it — so ``cls/up -> ..`` and other loops add nothing;
* a dangling link with an image suffix, a special file (FIFO, device, socket: never opened,
  reading one can block forever) and a sub-folder that cannot be listed are entries with a
  ``problem`` (the audit's error rows), never silently dropped.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from fastfem.data.decode import IMAGE_SUFFIXES
from fastfem.data.ids import id_and_raw, printable, readable_id
from fastfem.data.records import (
    ReadOptions,
    Record,
    Select,
    Shape,
    Source,
    check_unique,
    read_record,
    selected,
    shard_names,
    threaded_map,
)


@dataclass(frozen=True)
class FolderEntry:
    """One listed file: its ``id`` (relative path, readable), ``raw_id`` (the path's bytes when
    the id had to be escaped), ``path`` to open, ``label`` (first sub-folder) and ``problem``
    (why it cannot be read, or None)."""

    id: str
    raw_id: bytes | None
    path: str
    label: str | None
    problem: str | None = None


def is_image_name(name: str) -> bool:
    """True when ``name`` ends with one of `IMAGE_SUFFIXES` (any case)."""
    return os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def _folder_key(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


class _Walk:
    """The state of one `walk_images`: folders to scan, links to follow later, what is found."""

    def __init__(self, root: str):
        self.found: list[tuple[tuple[str, ...], str, str | None]] = []
        self.folders: list[tuple[tuple[str, ...], str]] = [((), root)]
        self.links: list[tuple[tuple[str, ...], str]] = []
        self.seen: set[tuple[int, int]] = set()

    def scan(self, parts: tuple[str, ...], folder: str) -> None:
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError as err:
            if not parts:
                raise
            self.found.append(((*parts, ""), folder, f"cannot list folder: {err.strerror or err}"))
            return
        for entry in entries:
            self.add(parts + (entry.name,), entry)

    def add(self, parts: tuple[str, ...], entry: os.DirEntry) -> None:
        try:
            if entry.is_symlink():
                if not os.path.exists(entry.path):
                    if is_image_name(entry.name):
                        target = os.readlink(entry.path)
                        self.found.append(
                            (parts, entry.path, f"dangling symbolic link to {target}")
                        )
                    return
                if entry.is_dir():
                    self.links.append((parts, entry.path))
                    return
            elif entry.is_dir(follow_symlinks=False):
                self.folders.append((parts, entry.path))
                return
            if not is_image_name(entry.name):
                return
            mode = entry.stat().st_mode
            problem = None if stat.S_ISREG(mode) else "not a regular file (FIFO, device or socket)"
            self.found.append((parts, entry.path, problem))
        except OSError as err:
            if is_image_name(entry.name):
                self.found.append((parts, entry.path, f"cannot stat: {err.strerror or err}"))

    def run(self) -> None:
        """Scan every folder reachable without links, then follow the links one at a time in
        sorted order (each may add folders and links); a folder already seen is skipped."""
        while self.folders or self.links:
            if not self.folders:
                self.links.sort()
                self.folders.append(self.links.pop(0))
                continue
            parts, folder = self.folders.pop()
            try:
                key = _folder_key(folder)
            except OSError as err:
                self.found.append(((*parts, ""), folder, f"cannot list folder: {err.strerror}"))
                continue
            if key not in self.seen:
                self.seen.add(key)
                self.scan(parts, folder)

    def entries(self) -> list[FolderEntry]:
        out = []
        for parts, path, problem in sorted(self.found):
            rid, raw = id_and_raw("/".join(parts), file_name=True)
            label = readable_id(parts[0]) if len(parts) > 1 else None
            out.append(
                FolderEntry(rid, raw, path, label, None if problem is None else printable(problem))
            )
        return out


def walk_images(root: str | os.PathLike) -> list[FolderEntry]:
    """The image files under ``root`` (module docstring), sorted by path components."""
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise NotADirectoryError(f"not a folder: {root}")
    walk = _Walk(root)
    walk.run()
    return walk.entries()


def _prefixed(entry: FolderEntry, prefix: str | None) -> FolderEntry:
    """The entry with its folder's name in front of its id (several folders)."""
    if prefix is None:
        return entry
    name = entry.id if entry.raw_id is None else os.fsdecode(entry.raw_id)
    rid, raw = id_and_raw(f"{prefix}/{name}", file_name=True)
    return FolderEntry(rid, raw, entry.path, entry.label, entry.problem)


def folder_source(roots: Sequence[Path], expected: Shape, options: ReadOptions) -> Source:
    """One or several image folders (module docstring); shards = folders."""
    names = shard_names(roots) if len(roots) > 1 else [None]
    entries: list[FolderEntry] = []
    shards: list[int] = []
    for k, (root, name) in enumerate(zip(roots, names, strict=True)):
        found = walk_images(root)
        entries += [_prefixed(e, name) for e in found]
        shards += [k] * len(found)
    where = printable(str(roots[0])) if len(roots) == 1 else f"{len(roots)} folders"
    if not entries:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {where}")
    ids = [e.id for e in entries]
    check_unique(ids, where)
    decoding = options.decode_options(expected)

    def one(i: int) -> Record:
        e = entries[i]
        if e.problem is not None:
            return Record(e.id, e.label, error=e.problem, raw_id=e.raw_id)
        return read_record(e.id, e.raw_id, e.label, lambda: e.path, decoding, expected)

    def read(select: Select) -> Iterator[Record]:
        return threaded_map(selected(ids, select), one, options.threads)

    return Source(ids, read, f"image folder {where} ({len(ids)} files)", shards)
