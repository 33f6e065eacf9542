"""``.npz`` arrays read from their headers first: nothing is inflated before it is checked.

An ``.npz`` is a zip of ``.npy`` members, each usually deflated: 1 MB on disk can hold a GB of
zeros. `member_header` reads a member's ``.npy`` header (``np.lib.format.read_magic`` and
``read_array_header_{1,2}_0``) through ``zipfile`` after inflating only the header's bytes, so
the shape and dtype are checked — rank, channels, pixel budget, dtype (the audit's
`fastfem.data.arrays.array_source`) — before any pixel is read. `NpzImages` then reads the
images one at a time from the member's stream (a forward read; an earlier image restarts the
stream), so memory is one image, never the array. The ``ids`` and ``labels`` members are read
whole only after their header says they are one value per image of a bounded size
(`check_vector`).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

#: The largest string (bytes) an ids / labels member may hold per image.
MAX_ITEM_BYTES = 4096


@dataclass(frozen=True)
class Header:
    """A ``.npy`` header: ``shape``, ``dtype``, ``fortran_order`` and where the data starts."""

    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    offset: int


def read_header(f: IO[bytes], what: str) -> Header:
    """The ``.npy`` header at the start of ``f`` (versions 1.0 and 2.0); a ValueError naming
    ``what`` when it is not one."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(f)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    except (ValueError, OSError, EOFError, SyntaxError) as err:
        raise ValueError(f"{what}: not a readable .npy array ({err})") from None
    if dtype.hasobject:
        raise ValueError(f"{what}: holds Python objects (pickles are never loaded)")
    return Header(tuple(int(d) for d in shape), dtype, bool(fortran), f.tell())


def member_header(zf: zipfile.ZipFile, key: str, what: str) -> Header:
    """The header of the array ``key`` (only its first bytes inflated)."""
    with zf.open(f"{key}.npy") as f:
        return read_header(f, f"{what}[{key}]")


def check_vector(header: Header, n: int, what: str) -> None:
    """A ValueError unless ``header`` is a vector of ``n`` plain values of at most
    `MAX_ITEM_BYTES` each (an ids / labels array)."""
    if header.shape != (n,):
        raise ValueError(f"{what}: shape {header.shape}, expected ({n},): one value per image")
    if header.dtype.itemsize > MAX_ITEM_BYTES:
        raise ValueError(
            f"{what}: items of {header.dtype.itemsize} bytes (dtype {header.dtype}); at most "
            f"{MAX_ITEM_BYTES}"
        )


class NpzImages:
    """The images array of an ``.npz`` member, read one image at a time (module docstring);
    ``shape``, ``dtype``, ``ndim`` and ``len`` come from the header alone."""

    def __init__(self, path: Path, key: str, header: Header):
        if header.fortran_order and len(header.shape) > 1:
            raise ValueError(
                f"{path}[{key}]: stored in Fortran order; save it C-ordered "
                "(np.ascontiguousarray) to audit it image by image"
            )
        self.path, self.key, self.header = path, key, header
        self.shape, self.dtype, self.ndim = header.shape, header.dtype, len(header.shape)
        self.image_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        self._zip: zipfile.ZipFile | None = None
        self._f: IO[bytes] | None = None

    def __len__(self) -> int:
        return self.shape[0] if self.shape else 0

    def __getitem__(self, i: int) -> np.ndarray:
        """Image ``i`` (read forward from the stream; an earlier image restarts it)."""
        i = int(i)
        if not 0 <= i < len(self):
            raise IndexError(f"image {i} of {len(self)}")
        start = self.header.offset + i * self.image_bytes
        f = self._stream(start)
        f.seek(start)
        data = f.read(self.image_bytes)
        if len(data) != self.image_bytes:
            raise ValueError(f"{self.path}[{self.key}]: the array ends before image {i}")
        return np.frombuffer(data, self.dtype).reshape(self.shape[1:])

    def _stream(self, start: int) -> IO[bytes]:
        if self._f is None or self._f.tell() > start:
            self.close()
            self._zip = zipfile.ZipFile(self.path)
            self._f = self._zip.open(f"{self.key}.npy")
        return self._f

    def close(self) -> None:
        for h in (self._f, self._zip):
            if h is not None:
                h.close()
        self._f = self._zip = None


def open_npz(path: Path) -> tuple[NpzImages, np.ndarray | None, np.ndarray | None]:
    """``(images, ids, labels)`` of an ``.npz`` (``images`` or its only array; optional
    ``ids`` and ``labels``), every header checked before anything is inflated."""
    what = str(path)
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as err:
        raise ValueError(f"{what}: not a readable .npz ({err})") from None
    with zf:
        keys = [n[:-4] for n in zf.namelist() if n.endswith(".npy")]
        if not keys:
            raise ValueError(f"{what}: holds no array")
        arrays = [k for k in keys if k not in ("ids", "labels")] or keys
        key = "images" if "images" in keys else arrays[0]
        images = NpzImages(path, key, member_header(zf, key, what))
        vectors = {}
        for name in ("ids", "labels"):
            if name in keys:
                check_vector(member_header(zf, name, what), len(images), f"{what}[{name}]")
                with zf.open(f"{name}.npy") as f:
                    vectors[name] = np.lib.format.read_array(f, allow_pickle=False)
    return images, vectors.get("ids"), vectors.get("labels")
