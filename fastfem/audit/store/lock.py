"""One writer per result store: an exclusive lock on ``DIR/audit.lock``.

An audit's process 0 holds an exclusive ``flock`` on ``DIR/audit.lock`` from its first look at
the store to its end (the other processes of the same run write under it); the file holds the
holder's pid, host and start time. A second audit into the same folder finds the lock held and is
refused with `StoreLocked` naming the holder — before it reads or writes anything.

The operating system (on NFS, its lock manager) drops a lock when its holder dies, so a lock file
left by a killed audit is *stale*: the file is there, nobody holds it. The next audit takes it
over and reports the previous holder (`StoreLock.acquire` returns it). Releasing deletes the file
while still holding the lock; an acquirer checks that the file it locked is still the one at the
path, so two audits never both hold it. The file is opened without following links
(`fastfem.audit.store.safe_write.open_lock_file`): a symbolic or hard link planted at
``DIR/audit.lock`` is removed, never written through.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import socket
import stat
import time
from pathlib import Path
from typing import Any

from fastfem.audit.store.safe_write import open_lock_file, writing

LOCK_FILE = "audit.lock"


class StoreLocked(OSError):
    """Another audit holds the store's lock."""


def holder_info() -> dict[str, Any]:
    """Who this process is: pid, host, start time (what the lock file holds)."""
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def describe(holder: dict[str, Any] | None) -> str:
    """A holder as text ("pid 12 on host h since ...")."""
    if not holder:
        return "holder unknown"
    return f"pid {holder.get('pid')} on host {holder.get('host')} since {holder.get('since')}"


def _read(fd: int) -> dict[str, Any] | None:
    os.lseek(fd, 0, os.SEEK_SET)
    data = b""
    while chunk := os.read(fd, 4096):
        data += chunk
    try:
        body = json.loads(data)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


HOLDER_WAIT_S = 2.0  # how long a refused audit waits for the holder to write its name


def _read_holder(fd: int) -> dict[str, Any] | None:
    """The holder named in a lock file someone else holds. The holder writes its name just
    after taking the lock, so an empty file is read again for up to `HOLDER_WAIT_S`."""
    deadline = time.monotonic() + HOLDER_WAIT_S
    while (holder := _read(fd)) is None and time.monotonic() < deadline:
        time.sleep(0.02)
    return holder


class StoreLock:
    """The lock of the store at ``root`` (module docstring); a context manager."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.path = self.root / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> dict[str, Any] | None:
        """Take the lock (creating the store folder); returns the holder of a stale lock
        taken over, else None. `StoreLocked` when another audit holds it; `StoreError` when
        the folder cannot be written."""
        with writing(self.path):
            self.root.mkdir(parents=True, exist_ok=True)
            fd, holder = self._lock_file()
            if fd is not None:
                try:
                    stale = _read(fd)
                    os.ftruncate(fd, 0)
                    os.lseek(fd, 0, os.SEEK_SET)
                    os.write(fd, json.dumps(holder_info()).encode())
                    os.fsync(fd)
                except OSError:
                    os.close(fd)
                    raise
        if fd is None:
            raise StoreLocked(
                f"{self.root} is being written by another audit ({describe(holder)}); "
                "wait for it to finish, or choose another --out"
            )
        self._fd = fd
        return stale

    def _lock_file(self) -> tuple[int | None, dict[str, Any] | None]:
        """``(fd, None)`` with the lock taken, or ``(None, holder)`` when it is held."""
        while True:
            fd = open_lock_file(self.path)  # never through a planted link
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                return None, holder
            if self._still_at_path(fd):
                return fd, None
            os.close(fd)  # released and deleted meanwhile: lock the new file

    def _still_at_path(self, fd: int) -> bool:
        try:
            return os.fstat(fd).st_ino == os.stat(self.path).st_ino
        except FileNotFoundError:
            return False

    def release(self) -> None:
        """Delete the lock file and drop the lock (no-op when not held)."""
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        except OSError:
            pass  # a read-only folder: the lock is dropped below, the file stays stale
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> StoreLock:
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def lock_holder(root: str | os.PathLike) -> dict[str, Any] | None:
    """Who the lock file of the store at ``root`` names (``{}``: unreadable), or None when there
    is none — read only (never locked: a report must not block an audit), never through a link.
    A file there means an audit is writing the store, or one was killed."""
    path = Path(root) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        body = os.read(fd, 4096)
    finally:
        os.close(fd)
    try:
        holder = json.loads(body)
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}
