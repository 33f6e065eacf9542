"""Opening a result store for a run: its folder, the checks of ``--resume`` (manifest, parts,
ids, source), and the repair of what a killed run left — process 0, under the store's lock,
before any part is written."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fastfem.audit.store.lock import StoreLock, describe
from fastfem.audit.store.manifest import check_parts, check_resume, merge
from fastfem.audit.store.parts import ResultStore
from fastfem.audit.store.safe_write import output_path


def store_folder(out: str | os.PathLike) -> Path:
    """The store folder ``out`` (`fastfem.audit.store.safe_write.output_path`: not empty, no NUL or
    line break); a ValueError when it names an existing file."""
    path = output_path(out, "--out")
    if path.exists() and not path.is_dir():
        raise ValueError(f"--out {path} is a file, not a folder")
    return path


def check_source(
    committed: set[str], ids: list[str] | None, old: Mapping[str, Any], info: Mapping[str, Any]
) -> None:
    """A resume's source must be the store's (or a grown one): a ValueError when it lacks a
    committed id (an unlisted stream: when the manifest names another source)."""
    if not committed:
        return
    if ids is None:
        if old.get("source") not in (None, info["source"]):
            raise ValueError(
                f"--resume: the store was audited from {old['source']}, not {info['source']}; "
                "pass --allow-new-source (allow_new_source=True) to add it, or audit into a new "
                "--out"
            )
        return
    missing = committed.difference(ids)
    if missing:
        raise ValueError(
            f"--resume: {len(missing)} of the {len(committed)} committed ids are not in "
            f"{info['source']} (e.g. {sorted(missing)[:3]}): it is another source; pass "
            "--allow-new-source (allow_new_source=True) to add its inputs to this store, or "
            "audit into a new --out"
        )


def check_store(
    store: ResultStore, info: dict[str, Any], ids: list[str] | None, allow_new_source: bool
) -> tuple[dict[str, Any], dict[str, str], dict[str, Any]]:
    """Everything ``--resume`` checks before it writes: the manifest (readable), the
    configuration recorded in the readable parts and in the manifest (`check_parts`,
    `check_resume`), ids committed once (`ResultStore.check_unique_ids`), the source
    (`check_source`). Returns ``(stored manifest — rebuilt from the parts when lost —, broken
    parts, manifest update)``."""
    where = str(store.root)
    old = store.manifest()
    broken = store.broken_parts()
    readable = [p for p in store.part_files() if p.name not in broken]
    record = check_parts(store.part_records(readable), info, old, where)
    update: dict[str, Any] = {}
    if old:
        check_resume(old, info, where)
    elif record:
        old, update["manifest_rebuilt_from_parts"] = record, True
        warnings.warn(f"{where}: manifest.json was lost; rebuilt from the parts", stacklevel=4)
    store.check_unique_ids(readable)
    if not allow_new_source:
        check_source(store.committed_ids(readable), ids, old, info)
    elif old.get("source") not in (None, info["source"]):
        update["sources"] = [*(old.get("sources") or [old["source"]]), info["source"]]
    return old, broken, update


def open_store(
    store: ResultStore,
    lock: StoreLock,
    info: dict[str, Any],
    resume: bool,
    ids: list[str] | None = None,
    allow_new_source: bool = False,
) -> None:
    """Process 0, before any part is written: take the store's lock, check the store against
    this run (an existing store needs ``resume``; `check_store`), repair what a killed run left
    (temporary files, parts whose maps are missing or short or whose Parquet file is
    unreadable, parts of an older schema), then write the manifest with this run's
    configuration (merged)."""
    stale = lock.acquire()
    if stale:
        warnings.warn(
            f"{store.root}: took over a stale lock ({describe(stale)}: no longer running)",
            stacklevel=3,
        )
    if store.exists() and not resume:
        raise FileExistsError(
            f"{store.root} already holds an audit; pass resume=True (--resume) to continue it, "
            "or choose another output folder"
        )
    old, broken, update = check_store(store, info, ids, allow_new_source)
    store.remove_temporaries()
    if broken:
        store.set_aside_broken_parts(broken)
        update["set_aside"] = broken
        warnings.warn(
            f"{store.root}: {len(broken)} committed parts cannot be read back whole and are "
            f"computed again (moved to {store.root / 'invalid'}): {broken}",
            stacklevel=3,
        )
    store.write_manifest(merge(old, {**info, **update}))
