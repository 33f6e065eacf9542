"""Image folders on disk: the files they hold (walked safely), and loading them as arrays.

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

`load_images` reads a folder (or a ``.npy``/``.npz`` file) into one float32 array in [0, 1]
for ``fastfem explain`` / ``evaluate``, through the same decoder as the audit
(`fastfem.data.decode`).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fastfem.data.decode import (
    IMAGE_SUFFIXES,
    DecodeOptions,
    array_pixels,
    decode_image,
    unit_float,
)
from fastfem.data.ids import id_and_raw, printable, readable_id


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


def load_folder(
    folder: Path, size: tuple[int, int] | None, channels: int, fit: str
) -> tuple[np.ndarray, list[str]]:
    """Every image under ``folder`` as float32 (N, H, W, C) in [0, 1], and their ids."""
    entries = walk_images(folder)
    if not entries:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {folder}")
    options = DecodeOptions(size=size, channels=channels, fit="squash" if size is None else fit)
    arrays = []
    for e in entries:
        if e.problem is not None:
            raise ValueError(f"cannot read image {e.id}: {e.problem}")
        try:
            arrays.append(unit_float(decode_image(e.path, options)))
        except Exception as err:  # any decoder failure, named with its file
            raise ValueError(f"cannot decode image {e.id}: {printable(str(err))}") from err
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise ValueError(f"images under {folder} have different sizes {shapes}; pass a size")
    return np.stack(arrays), [e.id for e in entries]


def load_images(
    source: str | Path,
    size: tuple[int, int] | None = None,
    channels: int = 3,
    fit: str = "squash",
) -> tuple[np.ndarray, list[str]]:
    """Load ``source`` as (N, H, W, C) float32 in [0, 1] with one id per image.

    A folder: every image under it (`walk_images`; ids are relative paths), decoded by
    `fastfem.data.decode` and fitted to ``size`` = (H, W) by ``fit`` (default ``squash``). A
    ``.npy``
    / ``.npz`` (``images`` or its only array, ``ids`` if present): the pixels by the same rule
    (`fastfem.data.decode.array_pixels`: uint8 ``v / 255``, uint16 ``v / 65535``, floats as they
    are).
    """
    src = Path(source)
    if src.is_dir():
        return load_folder(src, size, channels, fit)
    if src.suffix == ".npy":
        x = np.load(src, allow_pickle=False)
        return unit_float(array_pixels(x, str(src))), [str(i) for i in range(len(x))]
    if src.suffix == ".npz":
        with np.load(src, allow_pickle=False) as data:
            key = "images" if "images" in data else None
            if key is None and len(data.files) != 1:
                raise ValueError(f"{src} holds {data.files}; expected an 'images' array")
            x = unit_float(array_pixels(data[key or data.files[0]], str(src)))
            ids = [readable_id(str(i)) for i in data["ids"]] if "ids" in data else None
        return x, ids or [str(i) for i in range(len(x))]
    if not src.exists():
        raise FileNotFoundError(f"no such file or folder: {src}")
    raise ValueError(f"unsupported image source {src}: expected a folder, .npy or .npz")
