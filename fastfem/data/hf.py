r"""Hugging Face datasets as audit sources, read with pyarrow alone (no ``datasets`` import).

Files: Parquet (``Dataset.to_parquet``, a Hub repository's ``*.parquet`` shards), Arrow (IPC
streams as ``save_to_disk`` and the ``datasets`` cache write them, or IPC files), one or several
(a list or a glob), or a ``save_to_disk`` folder (``state.json`` names its ``data-*.arrow``
shards; a ``DatasetDict``'s folder is refused with the names of its splits).

**Columns.** The image column holds a ``datasets.Image`` feature — a struct ``{bytes, path}``:
the encoded file, or, with ``bytes`` null, the path of a file on disk (relative paths from the
shard's folder) — or the encoded bytes alone (binary), or a path (text). The label column holds
integers (a ``ClassLabel``: each label is its class name; -1, datasets' "no label", and null
are no label) or text. `ReadOptions` ``image_column`` / ``label_column`` choose them; by
default the ``Image`` / ``ClassLabel`` feature that the ``huggingface`` key of the Arrow schema
metadata names (``datasets`` writes it into every Parquet and Arrow file), else a column named
``image`` / ``label`` (no label column: no labels).

**Ids** say where a row lies: ``<shard>:<row>``, the file's name (several files: its path
relative to their common parent, `fastfem.data.records.shard_names`) and the row's index in
the file. Shards are files, so several processes read whole files (`process_of`).

**Streaming.** Listing reads metadata only: Parquet footers, Arrow batch headers through a
memory map. Reading goes one record batch at a time (``BATCH_ROWS`` rows of a Parquet row
group), the image and label columns of the selected rows only, decoded on host threads. A
null image, bytes that do not decode, a row group that cannot be read are error rows of their
rows; a file that cannot be opened is one error row ``\!<shard>:unreadable``, an Arrow stream
damaged after some batches is read up to the damage, then one error row
``\!<shard>:damaged-after-row-<n>`` (reserved ids, `fastfem.data.ids.reserved_id`).
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from fastfem.data.ids import printable, readable_id, reserved_id
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

SUFFIXES = (".parquet", ".arrow")
#: Rows per record batch read from a Parquet row group.
BATCH_ROWS = 256
ARROW_FILE_MAGIC = b"ARROW1"
#: One row to read: (id, label, the image's bytes or path — or the row's problem, an error).
Item = tuple[str, str | None, bytes | str | Exception]


@dataclass(frozen=True)
class Columns:
    """The image column, the label column (None: no labels) and its class names (ClassLabel)."""

    image: str
    label: str | None
    names: tuple[str, ...] | None


@dataclass(frozen=True)
class Shard:
    """One file: its readable ``rows`` (a Parquet file's all), its columns, and ``problem``:
    why the file could not be opened (``rows == 0``) or where its Arrow stream is damaged."""

    path: Path
    name: str
    parquet: bool
    rows: int
    columns: Columns | None
    problem: str | None = None
    damage_id: str | None = None


# ------------------------------------------------------------------------------ columns


def features_of(schema: pa.Schema) -> dict[str, Any]:
    """The ``datasets`` features recorded in the schema metadata (``huggingface`` key:
    ``{"info": {"features": {name: {"_type": ...}}}}``); empty when there are none."""
    raw = (schema.metadata or {}).get(b"huggingface")
    if raw is None:
        return {}
    try:
        features = json.loads(raw).get("info", {}).get("features", {})
    except (ValueError, AttributeError):
        return {}
    return features if isinstance(features, dict) else {}


def _of_type(features: dict[str, Any], kind: str) -> list[str]:
    return [k for k, f in features.items() if isinstance(f, dict) and f.get("_type") == kind]


def _image_column(features: dict[str, Any], names: list[str], where: str) -> str:
    found = _of_type(features, "Image")
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        raise ValueError(
            f"{where}: several Image columns {found}: choose one (image_column, --image-column)"
        )
    if "image" in names:
        return "image"
    raise ValueError(
        f"{where}: no Image feature and no 'image' column among {names}: name the image column "
        "(image_column, --image-column)"
    )


def _label_column(features: dict[str, Any], names: list[str]) -> str | None:
    found = _of_type(features, "ClassLabel")
    if found:
        return "label" if "label" in found else found[0]
    return "label" if "label" in names else None


def _check_types(schema: pa.Schema, columns: Columns, where: str) -> None:
    t = schema.field(columns.image).type
    image_ok = (
        pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
        or pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or (pa.types.is_struct(t) and t.get_field_index("bytes") >= 0)
    )
    if not image_ok:
        raise ValueError(
            f"{where}: image column {columns.image!r} is {t}, not image bytes, a path or an "
            "Image struct {bytes, path}"
        )
    if columns.label is not None:
        t = schema.field(columns.label).type
        if not (pa.types.is_integer(t) or pa.types.is_string(t) or pa.types.is_large_string(t)):
            raise ValueError(
                f"{where}: label column {columns.label!r} is {t}, not integers or text "
                "(choose another with label_column, --label-column)"
            )


def choose_columns(schema: pa.Schema, options: ReadOptions, where: str) -> Columns:
    """The image and label columns of a file (module docstring), checked: a ValueError naming
    the file and the columns it has when one is missing or of another type."""
    features, names = features_of(schema), list(schema.names)
    image = options.image_column or _image_column(features, names, where)
    label = options.label_column or _label_column(features, names)
    for what, col in (("image", image), ("label", label)):
        if col is not None and col not in names:
            raise ValueError(f"{where}: no {what} column {col!r}; the columns are {names}")
    feature = features.get(label) if label is not None else None
    class_names = None
    if isinstance(feature, dict) and feature.get("_type") == "ClassLabel":
        class_names = tuple(str(n) for n in feature.get("names") or ())
    columns = Columns(image, label, class_names)
    _check_types(schema, columns, where)
    return columns


# ------------------------------------------------------------------------------ listing


def one_line(err: BaseException) -> str:
    """An exception's message on one line (Arrow's span several), valid UTF-8."""
    return printable(" ".join(str(err).split()))


def _arrow_reader(source: Any, path: Path) -> Any:
    """An IPC file reader (the file starts with ``ARROW1``) or else a stream reader."""
    with open(path, "rb") as f:
        file_format = f.read(len(ARROW_FILE_MAGIC)) == ARROW_FILE_MAGIC
    return ipc.open_file(source) if file_format else ipc.open_stream(source)


def _batches(reader: Any) -> Iterator[pa.RecordBatch]:
    """The record batches of an IPC file or stream reader, read lazily."""
    if isinstance(reader, ipc.RecordBatchFileReader):
        for k in range(reader.num_record_batches):
            yield reader.get_batch(k)
    else:
        yield from reader


def _arrow_rows(path: Path, name: str) -> tuple[pa.Schema, int, str | None]:
    """An Arrow file's schema, its readable rows, and the damage after them (None if none);
    memory-mapped, so counting the rows reads the batch headers, not the data."""
    with pa.memory_map(str(path)) as m:
        reader = _arrow_reader(m, path)
        rows = 0
        try:
            for batch in _batches(reader):
                rows += batch.num_rows
        except (OSError, pa.ArrowException) as err:
            damage = f"Arrow file {name} is damaged after row {rows}: {one_line(err)}"
            return reader.schema, rows, f"{damage}; the rest is not read"
        return reader.schema, rows, None


def list_shard(path: Path, name: str, options: ReadOptions) -> Shard:
    """One file's rows and columns, from its metadata (module docstring); a file that cannot be
    opened is a shard of no rows and its problem. A ValueError when its columns do not fit
    (`choose_columns`)."""
    parquet = path.suffix == ".parquet"
    try:
        if parquet:
            meta = pq.read_metadata(path)
            schema, rows, damage = meta.schema.to_arrow_schema(), meta.num_rows, None
        else:
            schema, rows, damage = _arrow_rows(path, name)
    except (OSError, pa.ArrowException) as err:
        problem = f"cannot read {name}: {type(err).__name__}: {one_line(err)}"
        return Shard(path, name, parquet, 0, None, problem, reserved_id(name, "unreadable"))
    damage_id = None if damage is None else reserved_id(name, f"damaged-after-row-{rows}")
    columns = choose_columns(schema, options, name)
    return Shard(path, name, parquet, rows, columns, damage, damage_id)


def shard_ids(shard: Shard) -> list[str]:
    """``<shard>:<row>`` for each readable row, then the reserved id of its problem if any."""
    ids = [f"{shard.name}:{r}" for r in range(shard.rows)]
    return ids if shard.damage_id is None else [*ids, shard.damage_id]


# ------------------------------------------------------------------------------ reading


def image_value(value: Any, folder: Path) -> bytes | str | Exception:
    """What to decode for one image cell: its bytes, else its path (relative: from
    ``folder``); a null image is a ValueError (an error row)."""
    if isinstance(value, dict):
        if value.get("bytes") is not None:
            return value["bytes"]
        if value.get("path"):
            return str(folder / value["path"])
        return ValueError("the image is null (no bytes, no path)")
    if value is None:
        return ValueError("the image is null")
    return str(folder / value) if isinstance(value, str) else value


def label_text(value: Any, names: tuple[str, ...] | None) -> str | None:
    """A label cell as text: a ClassLabel index as its class name (-1: no label), text as it is
    (escaped, `readable_id`), other integers as digits; null: no label."""
    if value is None:
        return None
    if isinstance(value, str):
        return readable_id(value)
    if names is not None:
        if value == -1:
            return None
        if 0 <= value < len(names):
            return readable_id(names[value])
    return str(value)


def _any_in(rows: Sequence[int], start: int, stop: int) -> bool:
    k = bisect.bisect_left(rows, start)
    return k < len(rows) and rows[k] < stop


Block = tuple[int, int, "pa.RecordBatch | str"]


def _parquet_blocks(shard: Shard, cols: list[str], rows: Sequence[int]) -> Iterator[Block]:
    """``(start, stop, batch)`` for the row groups holding ``rows``, ``BATCH_ROWS`` rows at a
    time; a row group that cannot be read is ``(start, stop, problem)`` for its rest."""
    f = pq.ParquetFile(shard.path)
    start = 0
    for g in range(f.num_row_groups):
        stop = start + f.metadata.row_group(g).num_rows
        if _any_in(rows, start, stop):
            done = start
            try:
                for batch in f.iter_batches(BATCH_ROWS, [g], cols, use_threads=False):
                    yield done, done + batch.num_rows, batch
                    done += batch.num_rows
            except (OSError, pa.ArrowException) as err:
                yield done, stop, f"cannot read row group {g} of {shard.name}: {one_line(err)}"
        start = stop


def _arrow_blocks(shard: Shard, cols: list[str], rows: Sequence[int]) -> Iterator[Block]:
    """``(start, stop, batch)`` for the record batches holding ``rows`` (memory-mapped)."""
    with pa.memory_map(str(shard.path)) as m:
        start = 0
        for batch in _batches(_arrow_reader(m, shard.path)):
            if start >= shard.rows:
                return
            stop = start + batch.num_rows
            if _any_in(rows, start, stop):
                yield start, stop, batch
            start = stop


def _item(shard: Shard, r: int, start: int, batch: pa.RecordBatch) -> Item:
    columns = shard.columns
    assert columns is not None
    image = image_value(batch.column(columns.image)[r - start].as_py(), shard.path.parent)
    label = None
    if columns.label is not None:
        label = label_text(batch.column(columns.label)[r - start].as_py(), columns.names)
    return f"{shard.name}:{r}", label, image


def shard_items(shard: Shard, rows: list[int]) -> Iterator[Item]:
    """The selected ``rows`` of one file (sorted row indices; ``shard.rows`` stands for its
    problem's row), streamed batch by batch; whatever fails to read is an error item."""
    readable = [r for r in rows if r < shard.rows]
    done, problem = 0, None
    try:
        if readable:
            assert shard.columns is not None
            cols = list(dict.fromkeys(c for c in (shard.columns.image, shard.columns.label) if c))
            blocks = _parquet_blocks if shard.parquet else _arrow_blocks
            for start, stop, batch in blocks(shard, cols, readable):
                hi = bisect.bisect_left(readable, stop)
                for r in readable[done:hi]:
                    if isinstance(batch, str):
                        yield f"{shard.name}:{r}", None, ValueError(batch)
                    else:
                        yield _item(shard, r, start, batch)
                done = hi
    except (OSError, pa.ArrowException) as err:
        problem = f"cannot read {shard.name}: {type(err).__name__}: {one_line(err)}"
    for r in readable[done:]:  # a read failure, or a file that changed since it was listed
        why = problem or f"{shard.name} ends before row {r} (changed since it was listed?)"
        yield f"{shard.name}:{r}", None, ValueError(why)
    if shard.damage_id is not None and rows and rows[-1] == shard.rows:
        yield shard.damage_id, None, ValueError(shard.problem)


# ------------------------------------------------------------------------------- source


def is_hf_dataset(p: Path) -> bool:
    """A Parquet or Arrow file, or a folder written by ``save_to_disk``."""
    if p.is_dir():
        return (p / "state.json").is_file() or (p / "dataset_dict.json").is_file()
    return p.suffix in SUFFIXES


def saved_shards(folder: Path) -> list[Path]:
    """The Arrow files of a ``save_to_disk`` folder, in the order its ``state.json`` lists
    them; a ValueError for a DatasetDict (naming its splits) or an unreadable state."""
    if (folder / "dataset_dict.json").is_file():
        splits = sorted(p.name for p in folder.iterdir() if (p / "state.json").is_file())
        raise ValueError(
            f"{folder} holds a DatasetDict (splits {splits}): audit one split's folder, e.g. "
            f"{folder / (splits or ['train'])[0]}"
        )
    try:
        state = json.loads((folder / "state.json").read_text())
        files = [folder / d["filename"] for d in state["_data_files"]]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{folder}: unreadable state.json ({type(err).__name__}: {err})") from None
    if not files:
        raise ValueError(f"{folder}: state.json lists no data files")
    return files


def dataset_files(paths: Sequence[Path]) -> tuple[list[Path], str]:
    """The files to read and a description: a ``save_to_disk`` folder's shards, or the files."""
    if any(p.is_dir() for p in paths):
        if len(paths) > 1:
            raise ValueError("one save_to_disk folder at a time, not with other folders or files")
        return saved_shards(paths[0]), printable(str(paths[0]))
    return list(paths), printable(paths[0].name) if len(paths) == 1 else f"{len(paths)} files"


def hf_source(paths: Sequence[Path], expected: Shape, options: ReadOptions) -> Source:
    """A Hugging Face dataset: Parquet/Arrow files or a ``save_to_disk`` folder (module
    docstring); shards = files."""
    files, where = dataset_files(paths)
    names = [readable_id(n) for n in shard_names(files)]
    pairs = list(zip(files, names, strict=True))
    shards = list_shards(lambda a: list_shard(*a, options), pairs, options.threads)
    listed = [shard_ids(s) for s in shards]
    ids = [rid for found in listed for rid in found]
    if not ids:
        raise ValueError(f"no rows in Hugging Face dataset {where}")
    check_unique(ids, where)
    starts = np.cumsum([0, *(len(found) for found in listed)])
    decoding = options.decode_options(expected)

    def items(chosen: list[int]) -> Iterator[Item]:
        for k, shard in enumerate(shards):
            lo, hi = np.searchsorted(chosen, starts[k : k + 2])
            if hi > lo:
                yield from shard_items(shard, [i - int(starts[k]) for i in chosen[lo:hi]])

    def one(item: Item) -> Record:
        rid, label, what = item
        if isinstance(what, Exception):
            return Record(rid, label, error=printable(str(what)))
        return read_record(rid, None, label, lambda: what, decoding, expected)

    def read(select: Select) -> Iterator[Record]:
        chosen = [i for i, rid in enumerate(ids) if select(i, rid)]
        return threaded_map(items(chosen), one, options.threads)

    shard_of = [k for k, found in enumerate(listed) for _ in found]
    return Source(ids, read, f"Hugging Face dataset {where} ({len(ids)} rows)", shard_of)
