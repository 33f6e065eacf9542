"""The audit's result store: committed parts with ONE fixed schema (`fastfem.audit.store.schema`),
their maps, a manifest.

Layout::

    DIR/parts/part-p{process:03d}-{seq:06d}.parquet   one row per input (id, status, error, ...)
    DIR/maps/maps-p{process:03d}-{seq:06d}.npy        float32 (rows, h, w) maps, row i <->
                                                      part row i (NaN for error rows)
    DIR/manifest.json                                 configuration, versions, parts, counts
    DIR/audit.lock                                    held while an audit writes
                                                      (`fastfem.audit.store.lock`)
    DIR/invalid/                                      parts set aside by ``--resume`` (their
                                                      maps were missing or short)

**Commit protocol.** A part's maps are written first, then the Parquet file is written to a
temporary name and renamed; the rename is the commit. Every file is written by
`fastfem.audit.store.safe_write.atomic_write` (a new ``O_EXCL | O_NOFOLLOW`` temporary file, then
``os.replace``): a link planted in the store is replaced, never written through. Each part
carries the run's configuration and its hash in its Parquet key-value metadata
(`fastfem.audit.store.manifest.part_metadata`), so ``--resume`` checks the parts themselves and a
lost manifest is rebuilt from them (`ResultStore.manifest_from_parts`); an id committed in two
parts (a copied part) is refused (`ResultStore.check_unique_ids`). A reader that must not see
parts committed while it reads takes a `ResultStore.snapshot`.

A crash leaves at most a temporary file or an orphan maps file, never a half part that
counts; temporary files are named ``.*.tmp-PID`` (hidden from the readers above) and removed
when the store is opened again (`ResultStore.remove_temporaries`). The committed ids are the
union of the ``id`` columns of the committed Parquet files, so ``--resume`` skips exactly
those; a committed part whose maps file is missing or short (or whose Parquet file is
unreadable) is set aside (`ResultStore.set_aside_broken_parts`) and its rows recomputed.

**Store failures.** A write that fails (disk full, read-only folder, ...) raises `StoreError`, a
one-line message naming the path; the part being written is not committed, its temporary file
and maps shard are removed, and every part committed before stays.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fastfem.audit.store.manifest import check_manifest, read_part_config
from fastfem.audit.store.safe_write import (
    StoreError,
    atomic_write_bytes,
    ensure_folder,
    write_table_atomic,
    writing,
)

if TYPE_CHECKING:
    import pyarrow as pa

PART_RE = re.compile(r"^part-p(\d{3})-(\d{6})\.parquet$")
TEMP_RE = re.compile(r"^\..*\.tmp-\d+$|^\.tmp-\d+-")  # this version's, and older versions'
MANIFEST = "manifest.json"
INVALID = "invalid"


def npy_bytes(a: np.ndarray) -> bytes:
    """``a`` as the bytes of a ``.npy`` file."""
    import io

    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def read_part(path: Path, columns: Sequence[str] | None = None) -> pa.Table:
    """A committed part's table (``columns`` only, if given); a ValueError naming the part when
    it cannot be read (``--resume`` sets such a part aside and computes its rows again)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path, columns=None if columns is None else list(columns))
    except (OSError, ValueError, pa.ArrowException) as err:
        why = " ".join(str(err).split())
        raise ValueError(
            f"{path} is not a readable part ({why}); `fastfem audit --resume` sets it aside and "
            "computes its rows again"
        ) from None


class DuplicateIds(ValueError):
    """The same id is committed in several parts (a part copied under another name?)."""


class ResultStore:
    """A result store directory, written by one process (``process_index``) of a run."""

    def __init__(self, root: str | os.PathLike, process_index: int = 0):
        self.root = Path(root)
        self.process_index = process_index
        self.parts_dir = self.root / "parts"
        self.maps_dir = self.root / "maps"
        self._frozen: list[Path] | None = None

    def snapshot(self) -> ResultStore:
        """This store as its committed parts are NOW: a reader whose `part_files` (and so
        every read) stays this list while an audit commits more parts (a committed part is
        never rewritten in place: its maps come first, its Parquet file's rename commits it)."""
        view = ResultStore(self.root, self.process_index)
        view._frozen = self.part_files()
        return view

    # ---- reading -----------------------------------------------------------------------------
    def part_files(self) -> list[Path]:
        """Committed part files of every process, sorted by name (a `snapshot`: its list)."""
        if self._frozen is not None:
            return list(self._frozen)
        if not self.parts_dir.is_dir():
            return []
        return sorted(p for p in self.parts_dir.iterdir() if PART_RE.match(p.name))

    def exists(self) -> bool:
        return bool(self.part_files()) or (self.root / MANIFEST).exists()

    def committed_ids(self, parts: Sequence[Path] | None = None) -> set[str]:
        """The ids of ``parts`` (default: every committed part)."""
        return {rid for ids in self.ids_by_part(parts).values() for rid in ids}

    def ids_by_part(self, parts: Sequence[Path] | None = None) -> dict[str, list[str]]:
        """``{part name: its ids}`` of ``parts`` (default: every committed part)."""
        parts = self.part_files() if parts is None else parts
        return {p.name: read_part(p, ["id"]).column("id").to_pylist() for p in parts}

    def check_unique_ids(self, parts: Sequence[Path] | None = None) -> None:
        """`DuplicateIds` naming the ids committed twice and the parts holding them."""
        seen: dict[str, str] = {}
        twice: dict[str, list[str]] = {}
        for name, ids in self.ids_by_part(parts).items():
            for rid in ids:
                if rid in seen:
                    twice.setdefault(rid, [seen[rid]]).append(name)
                else:
                    seen[rid] = name
        if twice:
            first = next(iter(twice))
            where = sorted({n for names in twice.values() for n in names})
            raise DuplicateIds(
                f"{self.root}: {len(twice)} ids are committed more than once (e.g. {first!r} in "
                f"{twice[first]}; parts {where[:6]}): a part was copied? move the extra part "
                "and its maps out of the store"
            )

    def part_records(self, parts: Sequence[Path] | None = None) -> dict[str, tuple]:
        """``{part name: (configuration hash, record)}`` read from each part's Parquet
        metadata (`fastfem.audit.store.manifest.read_part_config`); a ValueError naming an altered
        one."""
        import pyarrow.parquet as pq

        out = {}
        for p in self.part_files() if parts is None else parts:
            try:
                out[p.name] = read_part_config(pq.read_schema(p).metadata)
            except ValueError as err:
                raise ValueError(f"{p}: {err}") from None
        return out

    def manifest_from_parts(self) -> dict[str, Any]:
        """The configuration a part records (what a lost manifest is rebuilt from); {} when no
        readable part records one."""
        for p in self.part_files():
            if self.part_problem(p) is None:
                _, record = self.part_records([p])[p.name]
                if record is not None:
                    return dict(record)
        return {}

    def manifest_or_parts(self) -> dict[str, Any]:
        """The manifest, or when there is none the configuration recorded in the parts."""
        return self.manifest() or self.manifest_from_parts()

    def read_table(self) -> pa.Table | None:
        """Every committed row as one Arrow table (parts in name order); None when empty.
        Parts of stores written before the schema was fixed are unified (null-typed columns
        take the other parts' type)."""
        import pyarrow as pa

        parts = self.part_files()
        if not parts:
            return None
        return pa.concat_tables([read_part(p) for p in parts], promote_options="permissive")

    def read_rows(self) -> dict[str, np.ndarray]:
        """Every committed row as columns of NumPy arrays (parts in name order)."""
        table = self.read_table()
        if table is None:
            return {}
        return {
            name: table.column(name).to_numpy(zero_copy_only=False) for name in table.schema.names
        }

    def maps_path(self, part: Path) -> Path:
        return self.maps_dir / self.maps_name(part)

    def read_maps(self) -> np.ndarray:
        """The maps of every committed row, aligned with `read_rows` (a FileNotFoundError
        naming a missing maps file)."""
        shards = [self.load_maps(p, mmap=False) for p in self.part_files()]
        return np.concatenate(shards) if shards else np.zeros((0, 0, 0), np.float32)

    def read_map_shape(self) -> tuple[int, ...] | None:
        """The stored maps' shape (h, w), read from the first maps shard's header; None when
        nothing is committed."""
        parts = self.part_files()
        if not parts:
            return None
        shard = self.load_maps(parts[0])
        return tuple(int(d) for d in shard.shape[1:])

    def load_maps(self, part: Path, mmap: bool = True) -> np.ndarray:
        """The maps shard of ``part`` (memory-mapped by default; never unpickled); a
        FileNotFoundError (missing) or a ValueError (not a readable ``.npy``) naming it."""
        path = self.maps_path(part)
        redo = "`fastfem audit --resume` recomputes that part"
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing (the maps of {part.name}); {redo}")
        try:
            return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:
            raise ValueError(f"{path} is not a readable maps file ({err}); {redo}") from None

    def manifest(self) -> dict[str, Any]:
        """The manifest ({} when there is none); a ValueError naming an unreadable one."""
        path = self.root / MANIFEST
        if not path.exists():
            return {}
        try:
            body = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as err:
            raise ValueError(f"{path} is not a readable manifest ({err})") from None
        return check_manifest(body, str(path))

    # ---- checks on open (process 0, under the lock) -----------------------------------------
    def remove_temporaries(self) -> list[Path]:
        """Delete the temporary files a killed writer left (nothing else writes while the
        store's lock is held); returns them."""
        found = [
            p
            for d in (self.root, self.parts_dir, self.maps_dir)
            if d.is_dir()
            for p in d.iterdir()
            if TEMP_RE.match(p.name)
        ]
        for p in found:
            with writing(p):
                p.unlink(missing_ok=True)
        return found

    def part_problem(self, part: Path) -> str | None:
        """Why a committed ``part`` cannot be read back whole: its Parquet file unreadable, or
        its maps file missing, unreadable or short; None when it can."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            rows = pq.ParquetFile(part).metadata.num_rows
        except (OSError, pa.ArrowException) as err:
            return f"its Parquet file is unreadable ({err})"
        name = self.maps_name(part)
        try:
            shard = self.load_maps(part)
        except FileNotFoundError:
            return f"its maps file {name} is missing"
        except ValueError as err:
            return f"its maps file {name} is unreadable ({err})"
        if shard.ndim != 3 or shard.shape[0] != rows:
            return f"its maps file {name} holds shape {shard.shape}, not {rows} maps"
        return None

    def broken_parts(self) -> dict[str, str]:
        """``{part: why}`` of every committed part that cannot be read back whole
        (`part_problem`)."""
        return {p.name: why for p in self.part_files() if (why := self.part_problem(p))}

    def set_aside_broken_parts(self, broken: Mapping[str, str] | None = None) -> dict[str, str]:
        """Move every committed part that cannot be read back whole (``broken``, default
        `broken_parts`: its maps missing or short, its Parquet file unreadable), and what maps
        file it has, to ``DIR/invalid/``, so their rows are computed again; returns
        ``{part: why}``."""
        broken = dict(self.broken_parts() if broken is None else broken)
        invalid = self.root / INVALID
        for name in broken:
            part = self.parts_dir / name
            for path in (part, self.maps_path(part)):
                if path.exists():
                    target = invalid / path.name
                    n = 1
                    while target.exists():
                        target, n = invalid / f"{path.name}.{n}", n + 1
                    ensure_folder(invalid)
                    with writing(target):
                        os.replace(path, target)
        return broken

    # ---- writing -----------------------------------------------------------------------------
    @staticmethod
    def maps_name(part: Path) -> str:
        return part.name.replace("part-", "maps-").replace(".parquet", ".npy")

    def next_seq(self) -> int:
        seqs = [
            int(m.group(2))
            for p in self.part_files()
            if (m := PART_RE.match(p.name)) and int(m.group(1)) == self.process_index
        ]
        return max(seqs, default=-1) + 1

    def write_part(self, seq: int, table: pa.Table, maps: np.ndarray) -> Path:
        """Commit one part: maps shard first, then the Parquet file by an atomic rename. On
        failure (`StoreError`) neither stays."""
        n = table.num_rows
        if maps.shape[0] != n:
            raise ValueError(f"part has {n} rows but {maps.shape[0]} maps")
        part = self.parts_dir / f"part-p{self.process_index:03d}-{seq:06d}.parquet"
        maps_path = self.maps_path(part)
        for d in (self.parts_dir, self.maps_dir):
            ensure_folder(d)
        try:
            atomic_write_bytes(maps_path, npy_bytes(np.ascontiguousarray(maps, np.float32)))
            write_table_atomic(part, table)
        except StoreError:
            with contextlib.suppress(OSError):
                maps_path.unlink(missing_ok=True)  # its part is not committed
            raise
        return part

    def write_manifest(self, info: Mapping[str, Any]) -> Path:
        """Write ``manifest.json`` atomically, listing the committed parts."""
        body = dict(info)
        body["parts"] = [p.name for p in self.part_files()]
        path = self.root / MANIFEST
        ensure_folder(self.root)
        atomic_write_bytes(path, (json.dumps(body, indent=2, default=str) + "\n").encode())
        return path
