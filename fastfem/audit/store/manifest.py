"""The result store's manifest: written first, merged, never replaced; checked by ``--resume``.

``DIR/manifest.json`` is written by process 0 before the first part with everything a row
depends on — the model (its path and the SHA-256 of its bytes), the layer(s), the method, the
method's configuration (variant, k, preprocessing, fit/resize, ...), the store's columns and
their types — plus the source, the versions and the devices. At the end of every run (also one
with nothing left to do) the run's results (counts, the last run's summary, the parts) are
*merged* into it (`merge`): nothing recorded earlier is dropped.

``--resume`` compares the requested configuration with the stored one (`identity`,
`differences`) and refuses any difference with `ConfigMismatch`, naming each key with both
values — rows computed with one configuration are never mixed with rows of another. Keys that
do not change a row are not compared (`RUNTIME_KEYS`: the batch size); a key the stored
manifest lacks (a store written by an older fastfem) is not compared either.

The manifest is not the only record: every part carries the configuration (`RECORD_KEYS`)
and the SHA-256 of its identity (`config_sha256`) in its Parquet metadata (`part_metadata`).
``--resume`` checks those (`check_parts`) without trusting the manifest — a lost manifest, one
without ``config``, or parts of several configurations cannot mix rows — and a manifest whose
keys have the wrong kinds is refused in one line (`check_manifest`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: The manifest's format: 2 = one fixed Parquet schema, manifest written first, ``model_sha256``.
STORE_FORMAT = 2
#: Configuration keys that do not change a row (they may differ on ``--resume``).
RUNTIME_KEYS = frozenset({"batch_size"})
#: Top-level manifest keys compared by ``--resume`` (beside every key of ``config``).
IDENTITY_KEYS = ("model_sha256", "layer", "method", "columns")


class ConfigMismatch(ValueError):
    """``--resume`` asked for another configuration than the store's."""


def _hash_file(path: Path, h: Any) -> None:
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)


@functools.lru_cache(maxsize=16)
def _file_sha256(path: str, mtime_ns: int, size: int) -> str:
    p = Path(path)
    h = hashlib.sha256()
    if p.is_dir():  # a SavedModel / exported extractor: every file, by relative path
        for f in sorted(q for q in p.rglob("*") if q.is_file()):
            h.update(str(f.relative_to(p)).encode() + b"\0")
            _hash_file(f, h)
    else:
        _hash_file(p, h)
    return h.hexdigest()


def tree_stamp(p: Path) -> tuple[int, int]:
    """(latest mtime, total size) of a file or a folder's files: the key of the hash cache and
    of the audit's model cache (`fastfem.audit.plan.model_file_key`)."""
    files = [p] if p.is_file() else [q for q in p.rglob("*") if q.is_file()]
    stats = [f.stat() for f in files]
    return max((s.st_mtime_ns for s in stats), default=0), sum(s.st_size for s in stats)


def model_sha256(model: Any) -> str | None:
    """The SHA-256 of a model: of its file's bytes (a folder: of every file, by relative path),
    of a Keras model's configuration and weights; None for other objects (not compared)."""
    if isinstance(model, (str, os.PathLike)):
        p = Path(model).resolve()
        if not p.exists():
            return None
        return _file_sha256(str(p), *tree_stamp(p))
    if hasattr(model, "get_weights") and hasattr(model, "to_json"):
        h = hashlib.sha256(model.to_json().encode())
        for w in model.get_weights():
            h.update(memoryview(w).cast("B") if w.flags.c_contiguous else w.tobytes())
        return h.hexdigest()
    return None


def _numbers_as_floats(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, Mapping):
        return {str(k): _numbers_as_floats(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_numbers_as_floats(v) for v in value]
    return value


def _canonical(value: Any) -> str:
    """A value as canonical JSON (numbers as floats, tuples as lists, sorted keys): what is
    compared, so ``2`` and ``2.0`` agree."""
    return json.dumps(_numbers_as_floats(value), sort_keys=True, default=str)


def identity(info: Mapping[str, Any]) -> dict[str, Any]:
    """What the rows of a store depend on, flattened: `IDENTITY_KEYS` and ``config.<key>`` for
    every configuration key but `RUNTIME_KEYS` (None values left out: unknown)."""
    out = {k: info[k] for k in IDENTITY_KEYS if info.get(k) is not None}
    for k, v in (info.get("config") or {}).items():
        if k not in RUNTIME_KEYS:
            out[f"config.{k}"] = v
    return out


def differences(stored: Mapping[str, Any], requested: Mapping[str, Any]) -> list[str]:
    """Each key of both identities whose values differ, as ``"key: stored vs requested"``."""
    old, new = identity(stored), identity(requested)
    return [
        f"{key}: {old[key]!r} in the store, {new[key]!r} requested"
        for key in sorted(old.keys() & new.keys())
        if _canonical(old[key]) != _canonical(new[key])
    ]


def check_resume(
    stored: Mapping[str, Any], requested: Mapping[str, Any], where: str, who: str = "--resume"
) -> None:
    """`ConfigMismatch` naming every difference between the store's configuration and the
    requested one (nothing when they agree): ``"{who}: {where} holds an audit of another
    configuration (...)"``."""
    diff = differences(stored, requested)
    if diff:
        raise ConfigMismatch(
            f"{who}: {where} holds an audit of another configuration ({'; '.join(diff)}); "
            "resume with the store's settings, or audit into a new --out"
        )


def merge(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """``old`` updated by ``new``, recursively for nested objects: new values win, nothing
    of ``old`` is dropped."""
    out = dict(old)
    for k, v in new.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


# ------------------------------------------------------------- the configuration in each part

#: Parquet key-value metadata of every part: the configuration record (`RECORD_KEYS` of the
#: manifest, JSON) and the SHA-256 of its identity (`config_sha256`).
PART_CONFIG = b"fastfem.config"
PART_CONFIG_SHA256 = b"fastfem.config_sha256"
#: What a part records of its configuration: enough to check a resume and rebuild a manifest.
RECORD_KEYS = ("store_format", "model", *IDENTITY_KEYS, "config", "source", "source_location")
#: Top-level manifest keys that must be JSON objects / lists / strings when present.
OBJECT_KEYS = ("config", "columns", "last_run", "counts", "boxes", "versions", "detectors")
LIST_KEYS = ("parts", "devices")
TEXT_KEYS = ("model", "model_sha256", "layer", "method", "source", "source_location")


def check_manifest(body: Any, where: str) -> dict[str, Any]:
    """``body`` when it is a manifest's JSON object with keys of the right kinds (`OBJECT_KEYS`,
    `LIST_KEYS`, `TEXT_KEYS`); a one-line ValueError naming ``where`` and the key otherwise."""
    if not isinstance(body, dict):
        raise ValueError(f"{where} is not a readable manifest (not a JSON object)")
    for keys, kind, name in (
        (OBJECT_KEYS, dict, "an object"),
        (LIST_KEYS, list, "a list"),
        (TEXT_KEYS, str, "a string"),
    ):
        for k in keys:
            if body.get(k) is not None and not isinstance(body[k], kind):
                raise ValueError(
                    f"{where} is not a readable manifest: {k!r} is {type(body[k]).__name__}, not "
                    f"{name} (remove the file: --resume rebuilds it from the parts)"
                )
    return body


def config_sha256(info: Mapping[str, Any]) -> str:
    """The SHA-256 of the canonical JSON of ``identity(info)``: equal exactly when `differences`
    finds nothing between two complete configurations."""
    return hashlib.sha256(_canonical(identity(info)).encode()).hexdigest()


def part_metadata(info: Mapping[str, Any]) -> dict[bytes, bytes]:
    """The key-value metadata every part of a run carries (`PART_CONFIG`, `PART_CONFIG_SHA256`)."""
    record = {k: info[k] for k in RECORD_KEYS if k in info}
    return {
        PART_CONFIG: json.dumps(record, sort_keys=True, default=str).encode(),
        PART_CONFIG_SHA256: config_sha256(info).encode(),
    }


def read_part_config(metadata: Mapping[bytes, bytes] | None) -> tuple[str | None, dict | None]:
    """``(hash, record)`` of a part's metadata; ``(None, None)`` for a part without one (written
    by an older fastfem or another tool); a ValueError when the record is not JSON or does not
    hash to the stored hash (altered)."""
    metadata = metadata or {}
    if PART_CONFIG_SHA256 not in metadata:
        return None, None
    try:
        record = check_manifest(json.loads(metadata.get(PART_CONFIG, b"")), "its configuration")
        stored = metadata[PART_CONFIG_SHA256].decode("ascii")
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"its configuration record is unreadable ({err})") from None
    if config_sha256(record) != stored:
        raise ValueError("its configuration record does not match its hash (altered)")
    return stored, record


def check_parts(
    records: Mapping[str, tuple[str | None, dict | None]],
    requested: Mapping[str, Any],
    manifest: Mapping[str, Any],
    where: str,
) -> dict | None:
    """Check the configuration recorded in the parts (``{part: (hash, record)}``, from
    `read_part_config`) against the ``requested`` one, without trusting the manifest;
    `ConfigMismatch` when parts disagree with each other or with the request (naming the
    differences), or when a part records no configuration and the manifest cannot vouch for it
    (no ``config``). Returns a part's record (None when no part has one)."""
    stamped = {name: r for name, (h, r) in records.items() if h is not None}
    unstamped = sorted(name for name, (h, _) in records.items() if h is None)
    if unstamped and not isinstance(manifest.get("config"), dict):
        raise ConfigMismatch(
            f"--resume: the configuration of {where} cannot be verified: {len(unstamped)} parts "
            f"record none ({unstamped[:3]}) and the manifest has no configuration; audit into a "
            "new --out"
        )
    by_hash: dict[str, str] = {}
    for name in stamped:
        by_hash.setdefault(records[name][0], name)
    if len(by_hash) > 1:
        (_, a), (_, b) = list(by_hash.items())[:2]
        diff = differences(stamped[a], stamped[b])
        raise ConfigMismatch(
            f"--resume: the parts of {where} hold audits of different configurations ({a} and "
            f"{b}: {'; '.join(diff) or 'hashes differ'}); audit into a new --out"
        )
    if not stamped:
        return None
    record = next(iter(stamped.values()))
    if next(iter(by_hash)) != config_sha256(requested):
        diff = differences(record, requested)
        raise ConfigMismatch(
            f"--resume: {where} holds an audit of another configuration, recorded in its parts "
            f"({'; '.join(diff) or 'configuration hashes differ'}); resume with the store's "
            "settings, or audit into a new --out"
        )
    return record
