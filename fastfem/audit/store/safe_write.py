"""Writing files in a result store so that nothing planted there can redirect a write.

Every file the audit and the report write (parts, maps, manifest, flags, clusters, report; the
lock has its own `open_lock_file`) goes through `atomic_write`:

1. a temporary name in the same folder, ``.{name}.tmp-{pid}``, is created with
   ``O_CREAT | O_EXCL | O_NOFOLLOW``: a new inode of this process's own, never an existing file,
   never through a symbolic link (a leftover of that name — a killed writer's file, or a link
   someone planted — is unlinked first; unlinking a link removes the link, not its target);
2. the content is written and ``fsync``-ed;
3. ``os.replace`` renames it over the final name. A rename replaces the *name*: a symbolic or
   hard link planted at the final name is replaced, its target left untouched.

So a reader sees the old file or the new one, never half of one, and a file outside the store
is never written, whatever links the store holds. Folders of the store (``parts/``, ``maps/``,
``invalid/``) are made by `ensure_folder`, which refuses a folder that is a symbolic link (a
link there would move every later write out of the store). The store folder itself may be a
link: the user named it.

A failure (disk full, file-size limit, read-only folder, a folder where a file should be) is a
`StoreError`: one line naming the final path; the temporary file is removed and the old file,
if any, stays whole.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

#: Flags of every file the store creates: a new file of our own, never through a link.
CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


class StoreError(OSError):
    """The result store itself failed (disk full, read-only, ...): a one-line message naming
    the path."""


@contextlib.contextmanager
def writing(path: Path) -> Iterator[None]:
    """Turn an OSError of the body into a `StoreError` naming ``path``."""
    try:
        yield
    except StoreError:
        raise
    except OSError as err:
        why = err.strerror or str(err)
        raise StoreError(f"cannot write the result store: {path}: {why}") from None


def temporary(path: Path) -> Path:
    """The temporary name ``path`` is written under before its atomic rename."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def create_new(path: Path) -> int:
    """A file descriptor of a NEW regular file at ``path`` (``O_EXCL | O_NOFOLLOW``); whatever
    was at that name (a leftover temporary file, a planted link) is unlinked first."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISDIR(os.lstat(path).st_mode):
            raise IsADirectoryError(errno.EISDIR, "a folder is in the way", str(path))
        os.unlink(path)
    return os.open(path, CREATE_FLAGS, 0o644)


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], object]) -> Path:
    """Write a file at ``path`` by ``write(f)`` on a new temporary file (``O_EXCL |
    O_NOFOLLOW``), fsync, then ``os.replace`` over ``path`` (module docstring): complete or not
    at all, never through a link. `StoreError` naming ``path`` on failure."""
    path = Path(path)
    tmp = temporary(path)
    with writing(path):
        if path.is_dir() and not path.is_symlink():
            raise IsADirectoryError(errno.EISDIR, "is a folder, not a file", str(path))
        try:
            with os.fdopen(create_new(tmp), "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(OSError):
                if os.path.lexists(tmp):
                    os.unlink(tmp)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """`atomic_write` of ``data``."""
    return atomic_write(path, lambda f: f.write(data))


def write_table_atomic(path: str | os.PathLike, table: object) -> Path:
    """A Parquet file (a ``pyarrow.Table``, its schema metadata kept) by `atomic_write`."""
    import pyarrow.parquet as pq

    return atomic_write(path, lambda f: pq.write_table(table, f))


def ensure_folder(path: str | os.PathLike) -> Path:
    """Make the store folder ``path`` (and its parents) if missing; `StoreError` when it is a
    symbolic link or not a folder (a link would move the store's writes elsewhere)."""
    path = Path(path)
    with writing(path):
        if path.is_symlink():
            raise StoreError(
                f"cannot write the result store: {path} is a symbolic link; the folders inside "
                "a store must be real folders (remove the link)"
            )
        path.mkdir(parents=True, exist_ok=True)
        if path.is_symlink() or not path.is_dir():
            raise StoreError(f"cannot write the result store: {path} is not a folder")
    return path


def open_lock_file(path: Path) -> int:
    """A read-write descriptor of the lock file at ``path``, created if missing, opened with
    ``O_NOFOLLOW``: a symbolic link planted there is unlinked (never followed, its target never
    truncated), and so is anything that is not a regular file of one link (a FIFO, a hard link
    to a file elsewhere). The lock file must keep its name while audits open it, so it is not
    renamed into place; it is written only after this check, through the descriptor."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    for _ in range(8):
        try:
            fd = os.open(path, flags, 0o644)
        except OSError as err:
            if err.errno != errno.ELOOP or not path.is_symlink():
                raise
            os.unlink(path)  # a planted link: removed, its target untouched
            continue
        st = os.fstat(fd)
        if stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
            return fd
        os.close(fd)
        os.unlink(path)  # a FIFO, device or hard link in the lock's place
    raise OSError(errno.ELOOP, "the lock file keeps being replaced", str(path))


def output_path(value: str | os.PathLike, what: str) -> Path:
    """``value`` as a path when it names one; a ValueError for an empty or blank name (an unset
    shell variable: ``Path("")`` would be the current folder) or one holding a NUL or a line
    break."""
    text = os.fsdecode(os.fspath(value))
    if not text.strip():
        raise ValueError(f"{what} is empty ({text!r}): name a folder (an unset shell variable?)")
    if any(ch in text for ch in "\0\n\r"):
        raise ValueError(f"{what} {text!r} holds a NUL or a line break: name a plain path")
    return Path(text)
