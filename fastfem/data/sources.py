"""Audit sources: anything with images -> a stream of `Record`s, decoded on host threads.

A record is one input: its id (and ``raw_id``, the original bytes of an id that had to be
escaped, `fastfem.data.ids`), its label (if the source has one), and either its pixels (H, W, C) or
an error text. Pixels follow one rule for every source (`fastfem.data.decode`): 8-bit data is uint8
``v`` (the model's preprocessing on the device reads it as ``v / 255``; the host-to-device copy
is 4x smaller than float32), 16-bit data float32 ``v / 65535``, float data float32 as it is.
Non-finite pixels are flagged by the device step, like non-finite activations.

**Per-record isolation.** Whatever goes wrong while reading one input — any exception of the
decoder, a damaged TFRecord record, a dangling link — becomes that record's error row, and the
stream goes on. Image files are decoded by `fastfem.data.decode` (a fixed list of formats, a pixel
budget, EXIF orientation, every Pillow mode); ``fit`` (`fastfem.data.fit`) says what happens to an
image whose size or colour channels are not the model's: ``error`` (default: an error row
naming its size and mode), ``squash``, ``crop`` or ``pad``.

Sources:

* an image folder (recursive, `fastfem.data.folders.walk_images`: each folder once, links that
  loop followed never; the first sub-folder is the label), or several (a list or a glob: ids
  are prefixed by each folder's path relative to their common parent);
* ``.npy`` (memory-mapped) or ``.npz`` (``images`` or its only array, optional ``ids`` and
  ``labels``) arrays: uint8, uint16 or float;
* TFRecord files, one or several shards (a list or a glob), read without TensorFlow
  (`fastfem.data.tfrecord`: checksums verified; records up to a damage are audited, the damage
  is one error row naming the file and byte offset). Each record a ``tf.train.Example`` with the
  encoded image under ``image`` (or ``image/encoded``), optional ``id`` (bytes) and ``label``
  (or ``image/class/label``; bytes or int64). Without an ``id``, a record's id is its index in
  the file (one file) or ``<file>:<index>`` (several) — unless other records of the source
  have ids: then it is the reserved ``\\!<file>:<index>`` (`fastfem.data.ids.reserved_id`), which
  no real id can equal. A damaged record is always a reserved id (``\\!<file>:<index>``,
  ``\\!<file>:damaged-at-<offset>``), so it never collides with a real one;
* Hugging Face datasets (Parquet or Arrow files, a ``save_to_disk`` folder; `fastfem.data.hf`)
  and WebDataset ``.tar`` shards (`fastfem.data.webdataset`): shards = files, ids
  ``<shard>:<row>`` / ``<shard>:<key>``;
* a ``tf.data.Dataset`` or any iterable of image batches (read and numbered in order);
* None: the bundled sample's test split (`bundled_source`; its class names are the labels).

`open_source` is the one way in for images: the audit, ``fastfem explain`` / ``evaluate``
(`read_images`) and the report all open their inputs here, and a new input format is one
opener in `open_paths` (files) or `open_source` (Python objects). Pixels stay uint8 / [0, 1]
floats; the model's preprocessing runs on the device (`fastfem.data.preprocess`).

Every source but the last lists its ids before decoding, so ``--resume`` and multi-process
slicing skip work without reading pixels; sharded sources (several folders; TFRecord,
Parquet/Arrow or tar files) say which shard each input is in, and several processes then split
them by shard (`process_of`), so each process reads only its own files.
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import itertools
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fastfem.data.decode import (
    DEFAULT_MAX_PIXELS,
    IMAGE_SUFFIXES,
    DecodeError,
    DecodeOptions,
    array_pixels,
    check_alpha,
    check_max_pixels,
    decode_image,
    unit_float,
)
from fastfem.data.fit import check_fit, fit_array
from fastfem.data.folders import FolderEntry, walk_images
from fastfem.data.ids import id_and_raw, is_reserved, printable, readable_id, reserved_id
from fastfem.data.inputs import image_elements, is_tf_dataset
from fastfem.data.npz import open_npz
from fastfem.data.tfrecord import HEADER, parse_example, scan_records

Shape = tuple[int | None, int | None, int | None]
IMAGE_KEYS = ("image", "image/encoded")
LABEL_KEYS = ("label", "image/class/label")

__all__ = [
    "Record",
    "ReadOptions",
    "Source",
    "check_image",
    "open_source",
    "process_of",
    "read_images",
    "stack_images",
    "unit_float",
]


@dataclass(frozen=True)
class Record:
    """One input of an audit: ``image`` (H, W, C) uint8 (8-bit data) or float32, or ``error``
    saying why not; ``raw_id``: the id's original bytes when ``id`` is an escaped form."""

    id: str
    label: str | None = None
    image: np.ndarray | None = None
    error: str | None = None
    raw_id: bytes | None = None


#: Which inputs to read: ``select(index, id) -> bool`` (resume and multi-process slicing).
Select = Callable[[int, str], bool]


@dataclass(frozen=True)
class Source:
    """A source: its ids in order (None if it cannot be listed), a reader of the selected, and
    for sharded sources the shard of each input (`process_of`)."""

    ids: list[str] | None
    read: Callable[[Select], Iterator[Record]]
    description: str
    shards: list[int] | None = None


#: Decoding threads at most: on the CPU (the model runs on the other cores), and on an
#: accelerator (every core decodes; Pillow's Python side holds the GIL ~60 us of each ~2 ms
#: photo, so past ~30 threads they would queue on it).
MAX_CPU_THREADS = 8
MAX_ACCELERATOR_THREADS = 32


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask; ``os.cpu_count`` without one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def host_threads(cores: int, backend: str) -> int:
    """Host decoding threads for ``cores`` usable cores when the model runs on ``backend``
    (JAX's platform name).

    ``"cpu"``: half the cores, 1 to `MAX_CPU_THREADS`: the other half runs the model, and the
    decoders hold the GIL for part of each file (Pillow's Python side, ~60 us of a 64x64 PNG's
    ~180 us): measured on 2 cores, 1 thread audits the bundled sample ~15% faster than 4, which
    spend twice the CPU per image. Any accelerator (``gpu``, ``cuda``, ``rocm``, ``tpu``, ...):
    every core, 1 to `MAX_ACCELERATOR_THREADS`: the model needs no host core, and a 640x480
    JPEG cropped to 224 costs ~1.9 ms of one core, so the CPU rule's 8 threads would cap a
    16-core accelerator host near 4,300 img/s whatever the accelerator does.
    """
    if backend == "cpu":
        return max(1, min(MAX_CPU_THREADS, cores // 2))
    return max(1, min(MAX_ACCELERATOR_THREADS, cores))


def default_threads(backend: str | None = None) -> int:
    """Host decoding threads when none are asked for (``--threads`` / ``threads=`` win):
    `host_threads` of this process's `usable_cores` and ``backend`` (None: where JAX runs the
    model, ``jax.default_backend()``; call it after ``jax.distributed.initialize``)."""
    if backend is None:
        import jax

        backend = jax.default_backend()
    return host_threads(usable_cores(), backend)


@dataclass(frozen=True)
class ReadOptions:
    """How a source's files become pixels: ``fit`` (`fastfem.data.fit.FITS`), the pixel budget
    ``max_pixels``, the ``alpha`` background, host decoding ``threads``, JPEG ``draft``;
    checked when made (arrays and streams never build a `DecodeOptions`, which checks too).
    Datasets of records: ``image_column`` / ``label_column`` (`fastfem.data.hf`; WebDataset
    shards: the members' extensions, `fastfem.data.webdataset`) and the JSON ``label_field``
    (None: each source's default)."""

    fit: str = "error"
    max_pixels: int = DEFAULT_MAX_PIXELS
    alpha: str = "black"
    threads: int = field(default_factory=default_threads)
    draft: bool = True
    image_column: str | None = None
    label_column: str | None = None
    label_field: str | None = None

    def __post_init__(self) -> None:
        check_fit(self.fit)
        object.__setattr__(self, "max_pixels", check_max_pixels(self.max_pixels))
        check_alpha(self.alpha)
        t = self.threads
        if isinstance(t, bool) or not isinstance(t, int) or t < 1:
            raise ValueError(f"threads must be a positive integer; got {t!r}")
        for name in ("image_column", "label_column", "label_field"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(f"{name} must be a non-empty string or None; got {value!r}")

    def decode_options(self, expected: Shape) -> DecodeOptions:
        h, w, c = expected
        size = (int(h), int(w)) if h is not None and w is not None else None
        return DecodeOptions(size, c, self.fit, self.max_pixels, self.alpha, self.draft)


def _selected(ids: list[str], select: Select) -> list[int]:
    return [i for i, rid in enumerate(ids) if select(i, rid)]


def check_image(x: np.ndarray, expected: Shape) -> str | None:
    """Why ``x`` cannot go into a model expecting (H, W, C) = ``expected``; None if it can."""
    if x.ndim != 3:
        return f"image has shape {x.shape}, expected (H, W, C)"
    h, w, c = expected
    if c is not None and x.shape[2] != c:
        kind = "grayscale" if x.shape[2] == 1 else f"{x.shape[2]}-channel"
        return f"{kind} image where the model expects {c} channels"
    if (h is not None and x.shape[0] != h) or (w is not None and x.shape[1] != w):
        return f"image is {x.shape[0]}x{x.shape[1]}, the model expects {h}x{w}"
    return None


def stack_images(images: Sequence[np.ndarray]) -> np.ndarray:
    """One batch (B, H, W, C): uint8 when every image is (scaled on the device), else float32."""
    if all(im.dtype == np.uint8 for im in images):
        return np.stack(images)
    return np.stack([unit_float(im) for im in images])


def read_record(
    rid: str,
    raw_id: bytes | None,
    label: str | None,
    load: Callable[[], bytes | str],
    options: DecodeOptions,
    expected: Shape,
) -> Record:
    """One encoded image as a record: its pixels, or — whatever fails, of any exception type —
    an error record with the reason (per-record isolation)."""
    try:
        x = decode_image(load(), options)
        problem = check_image(x, expected)
    except DecodeError as err:
        problem = str(err)
    except Exception as err:  # any failure of one file is that file's error row
        problem = f"cannot decode image: {type(err).__name__}: {err}"
    if problem is not None:
        return Record(rid, label, error=printable(problem), raw_id=raw_id)
    return Record(rid, label, image=x, raw_id=raw_id)


#: Inputs per decoding task, and tasks decoded ahead of the consumer.
CHUNK = 32
AHEAD = 16


def _threaded(items: Iterable[Any], fn: Callable[[Any], Record], threads: int) -> Iterator[Record]:
    """``map(fn, items)`` in order on ``threads`` threads, at most ``AHEAD`` chunks ahead.

    One task per chunk of ``CHUNK`` items (not one future per item: fewer GIL hand-offs), and
    enough chunks ahead (512 inputs) that decoding goes on while the consumer waits for the
    device. Pillow and zlib release the GIL while they decode, so threads overlap.
    """
    if threads <= 1:
        yield from map(fn, items)
        return

    def run(chunk: Sequence[Any]) -> list[Record]:
        return [fn(i) for i in chunk]

    rest = iter(items)  # a sequence, or a stream read as it goes
    with ThreadPoolExecutor(threads) as pool:
        pending: collections.deque[Any] = collections.deque()
        while chunk := list(itertools.islice(rest, CHUNK)):
            pending.append(pool.submit(run, chunk))
            if len(pending) > AHEAD:
                yield from pending.popleft().result()
        while pending:
            yield from pending.popleft().result()


def list_shards(fn: Callable[[Any], Any], shards: Sequence[Any], threads: int) -> list[Any]:
    """``[fn(s) for s in shards]``, listed on up to ``threads`` threads (at most one per shard):
    the openers of sharded formats read their files' indexes in parallel."""
    with ThreadPoolExecutor(max(1, min(threads, len(shards)))) as pool:
        return list(pool.map(fn, shards))


def check_unique(ids: Sequence[str], what: str) -> None:
    """A ValueError naming the repeated ids of a source, if any."""
    if len(set(ids)) == len(ids):
        return
    counts = collections.Counter(ids)
    repeated = [rid for rid, n in counts.items() if n > 1]
    raise ValueError(f"{what}: ids are not unique: {repeated[:10]} ({len(repeated)} repeated)")


def shard_names(paths: Sequence[Path]) -> list[str]:
    """Each path relative to the paths' common parent (its name when there is one path), as
    the file system spells it (escape with `fastfem.data.ids.readable_id` for an id)."""
    if len(paths) == 1:
        return [paths[0].name]
    resolved = [os.path.abspath(p) for p in paths]
    if len(set(resolved)) != len(resolved):
        raise ValueError(f"a source is listed twice among {[printable(str(p)) for p in paths]}")
    common = os.path.commonpath([os.path.dirname(p) for p in resolved])
    return [os.path.relpath(p, common).replace(os.sep, "/") for p in resolved]


# ------------------------------------------------------------------------------- folders


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
        return _threaded(_selected(ids, select), one, options.threads)

    return Source(ids, read, f"image folder {where} ({len(ids)} files)", shards)


# -------------------------------------------------------------------------------- arrays


def _fitted(x: np.ndarray, expected: Shape, fit: str) -> np.ndarray:
    h, w, _ = expected
    if fit == "error" or h is None or w is None:
        return x
    return fit_array(x, (int(h), int(w)), fit)  # the same size: returned as it is


def array_source(
    x: Any,
    ids: list[str] | None,
    labels: Any,
    expected: Shape,
    what: str,
    fit: str = "error",
    raw_ids: list[bytes | None] | None = None,
    max_pixels: int | None = None,
) -> Source:
    """A (N, H, W, C) array (memory-mapped, or an `fastfem.data.npz.NpzImages` read image by
    image, is fine), uint8, uint16 or float of either byte order: the rank, dtype, channels and
    the pixels per image (``max_pixels``, the pixel budget) are checked once, up front, from the
    shape and dtype alone (nothing is read); the size too unless ``fit`` fits each image."""
    if x.ndim != 4:
        raise ValueError(f"{what}: expected an array (N, H, W, C); got shape {x.shape}")
    array_pixels(np.empty((0,), x.dtype), what)  # the dtype, checked up front
    if max_pixels is not None and x.shape[1] * x.shape[2] > max_pixels:
        raise ValueError(
            f"{what}: images of {x.shape[1]}x{x.shape[2]} pixels, over the pixel budget "
            f"max_pixels={max_pixels:,}"
        )
    h, w, c = expected
    # fitted images take the model's size (a free dimension: the array's)
    probe = x.shape[1:3] if fit == "error" else (h or x.shape[1], w or x.shape[2])
    problem = check_image(np.zeros((*probe, x.shape[3]), np.float32), expected)
    if problem:
        raise ValueError(f"{what}: model/source mismatch: {problem} (array shape {x.shape})")
    ids = ids if ids is not None else [str(i) for i in range(len(x))]
    if len(ids) != len(x):
        raise ValueError(f"{what}: {len(ids)} ids for {len(x)} images")
    check_unique(ids, what)
    raws = raw_ids if raw_ids is not None else [None] * len(ids)

    def read(select: Select) -> Iterator[Record]:
        for i in _selected(ids, select):
            img = _fitted(array_pixels(np.asarray(x[i]), what), expected, fit)
            label = None if labels is None else readable_id(str(labels[i]))
            yield Record(ids[i], label, image=img, raw_id=raws[i])

    return Source(ids, read, f"{what} ({len(ids)} images)")


def npz_source(p: Path, expected: Shape, options: ReadOptions) -> Source:
    """A ``.npz``: ``images`` (or its only array), optional ``ids`` and ``labels``; every
    header checked before anything is inflated, the images read one at a time
    (`fastfem.data.npz`)."""
    x, id_values, labels = open_npz(p)
    ids = raws = None
    if id_values is not None:
        pairs = [id_and_raw(str(i)) for i in id_values]
        ids, raws = [a for a, _ in pairs], [b for _, b in pairs]
    return array_source(x, ids, labels, expected, str(p), options.fit, raws, options.max_pixels)


# ----------------------------------------------------------------------------- TFRecords


@dataclass(frozen=True)
class _TFRecordEntry:
    id: str
    raw_id: bytes | None
    label: str | None
    path: Path
    span: tuple[int, int] | None  # the image bytes in the file
    problem: str | None = None
    unnamed: str | None = None  # a record without an id: its reserved id (`fastfem.data.ids`)


def _label_of(buf: bytes, features: dict) -> str | None:
    for key in LABEL_KEYS:
        if key in features and features[key][1]:
            kind, values = features[key]
            if kind == "bytes":
                s, e = values[0]
                return readable_id(buf[s:e].decode("utf-8", "surrogateescape"))
            return str(values[0])
    return None


def _example_entry(
    path: Path, offset: int, data: bytes, default_id: str, unnamed: str
) -> _TFRecordEntry:
    """The entry of one checked record: its id (``default_id`` without one, ``unnamed`` — a
    reserved id — when it cannot be parsed), label and where its image is."""
    try:
        features = parse_example(data)
        rid, raw, nameless = default_id, None, unnamed
        if "id" in features and features["id"][0] == "bytes" and features["id"][1]:
            s, e = features["id"][1][0]
            if e > s:
                rid, raw = id_and_raw(data[s:e].decode("utf-8", "surrogateescape"), data[s:e])
                nameless = None
        label = _label_of(data, features)
        for key in IMAGE_KEYS:
            if key in features and features[key][0] == "bytes" and features[key][1]:
                s, e = features[key][1][0]
                start = offset + HEADER
                return _TFRecordEntry(rid, raw, label, path, (start + s, start + e), None, nameless)
        problem = f"record at byte {offset} has no {' or '.join(IMAGE_KEYS)} bytes feature"
        return _TFRecordEntry(rid, raw, label, path, None, problem, nameless)
    except Exception as err:  # any malformed record is that record's error row
        problem = f"unparsable tf.train.Example at byte {offset}: {type(err).__name__}: {err}"
        return _TFRecordEntry(unnamed, None, None, path, None, printable(problem))


def list_tfrecord(path: Path, name: str, several: bool) -> list[_TFRecordEntry]:
    """One TFRecord file's entries, records up to a damage and then the damage (module
    docstring of `fastfem.data.tfrecord`)."""
    entries: list[_TFRecordEntry] = []
    try:
        with open(path, "rb") as f:
            for n, frame in enumerate(scan_records(f)):
                default_id = f"{name}:{n}" if several else str(n)
                unnamed = reserved_id(name, n)
                if frame.fatal:
                    problem = f"TFRecord {name}: {frame.problem}; the rest of the file is not read"
                    rid = reserved_id(name, f"damaged-at-{frame.offset}")
                    entries.append(_TFRecordEntry(rid, None, None, path, None, problem))
                elif frame.problem is not None:
                    entries.append(_TFRecordEntry(unnamed, None, None, path, None, frame.problem))
                else:
                    entries.append(
                        _example_entry(path, frame.offset, frame.data, default_id, unnamed)
                    )
    except OSError as err:
        problem = printable(f"cannot read TFRecord {name}: {err}")
        rid = reserved_id(name, "unreadable")
        entries.append(_TFRecordEntry(rid, None, None, path, None, problem))
    return entries


def name_unnamed(entries: list[_TFRecordEntry]) -> list[_TFRecordEntry]:
    """When some records of a source have ids, the records without one take their reserved
    id (an index could equal a real id); otherwise every id is an index and stays one."""
    if not any(e.unnamed is None and not is_reserved(e.id) for e in entries):
        return entries
    return [e if e.unnamed is None else dataclasses.replace(e, id=e.unnamed) for e in entries]


def _read_span(path: Path, span: tuple[int, int]) -> bytes:
    with open(path, "rb") as f:
        f.seek(span[0])
        return f.read(span[1] - span[0])


def tfrecord_source(paths: Sequence[Path], expected: Shape, options: ReadOptions) -> Source:
    """TFRecord shards (module docstring), listed in parallel; shards = files."""
    names = [readable_id(n) for n in shard_names(paths)]
    several = len(paths) > 1
    pairs = list(zip(paths, names, strict=True))
    listed = list_shards(lambda a: list_tfrecord(*a, several), pairs, options.threads)
    entries = name_unnamed([e for found in listed for e in found])
    shards = [k for k, found in enumerate(listed) for _ in found]
    where = names[0] if not several else f"{len(paths)} files"
    if not entries:
        raise ValueError(f"no records in TFRecord {where}")
    ids = [e.id for e in entries]
    check_unique(ids, f"TFRecord {where}")
    decoding = options.decode_options(expected)

    def one(i: int) -> Record:
        e = entries[i]
        if e.span is None:
            return Record(e.id, e.label, error=e.problem, raw_id=e.raw_id)
        return read_record(
            e.id, e.raw_id, e.label, lambda: _read_span(e.path, e.span), decoding, expected
        )

    def read(select: Select) -> Iterator[Record]:
        return _threaded(_selected(ids, select), one, options.threads)

    return Source(ids, read, f"TFRecord {where} ({len(ids)} records)", shards)


# ------------------------------------------------------------------------------- streams


def _stream_record(rid: str, img: np.ndarray, expected: Shape, fit: str) -> Record:
    try:
        x = _fitted(array_pixels(img, "stream element"), expected, fit)
    except ValueError as err:
        return Record(rid, error=str(err))
    problem = check_image(x, expected)
    return Record(rid, error=problem) if problem else Record(rid, image=x)


def stream_source(batches: Iterable[Any], expected: Shape, what: str, fit: str = "error") -> Source:
    """A tf.data.Dataset or an iterable of batches (`fastfem.data.inputs.image_elements`): not
    listable; numbered in order."""

    def read(select: Select) -> Iterator[Record]:
        for i, img in enumerate(image_elements(batches)):
            rid = str(i)
            if select(i, rid):
                yield _stream_record(rid, img, expected, fit)

    return Source(None, read, what)


def bundled_source(expected: Shape) -> Source:
    """The bundled sample's test split (`fastfem.sample.generate`): arrays, ids ``test-NNNNN``,
    its class names as labels."""
    from fastfem.sample import CLASS_NAMES, generate

    s = generate("test")
    labels = [CLASS_NAMES[i] for i in s.labels]
    return array_source(s.images, list(s.ids), labels, expected, "bundled sample (test split)")


# ----------------------------------------------------------------------------- open


def is_tfrecord(p: Path) -> bool:
    return p.suffix in (".tfrecord", ".tfrecords") or ".tfrecord" in p.name


def expand(pattern: str | os.PathLike) -> list[Path]:
    """A path, or a glob (``*``, ``?``, ``[``; ``**`` recursive) expanded in sorted order."""
    text = os.fspath(pattern)
    if os.path.exists(text) or not any(ch in text for ch in "*?["):
        return [Path(text)]
    found = sorted(glob.glob(text, recursive=True))
    if not found:
        raise FileNotFoundError(f"no file or folder matches {text}")
    return [Path(p) for p in found]


def open_paths(paths: list[Path], expected: Shape, options: ReadOptions) -> Source:
    """One path (folder, .npy, .npz, TFRecord) or several folders / TFRecord shards; Hugging
    Face datasets (`fastfem.data.hf`) and WebDataset shards (`fastfem.data.webdataset`)."""
    from fastfem.data.hf import hf_source, is_hf_dataset
    from fastfem.data.webdataset import is_tar, webdataset_source

    for p in paths:
        if not p.exists():
            raise FileNotFoundError(f"no such file or folder: {p}")
    if all(is_hf_dataset(p) for p in paths):
        return hf_source(paths, expected, options)
    if all(p.is_file() and is_tar(p) for p in paths):
        return webdataset_source(paths, expected, options)
    if all(p.is_dir() for p in paths):
        return folder_source(paths, expected, options)
    if all(p.is_file() and is_tfrecord(p) for p in paths):
        return tfrecord_source(paths, expected, options)
    if len(paths) > 1:
        raise ValueError(
            "several sources must be all image folders or all TFRecord files; got "
            f"{[str(p) for p in paths[:5]]}"
        )
    p = paths[0]
    if p.suffix == ".npy":  # memory-mapped: only the header is read here
        try:
            x = np.load(p, mmap_mode="r", allow_pickle=False)
        except EOFError:
            raise ValueError(f"{p}: an empty .npy file") from None
        return array_source(x, None, None, expected, str(p), options.fit, None, options.max_pixels)
    if p.suffix == ".npz":
        return npz_source(p, expected, options)
    raise ValueError(
        f"unsupported source {p}: a folder, .npy, .npz, .tfrecord, .parquet, .arrow or .tar"
    )


def _is_path_list(source: Any) -> bool:
    return (
        isinstance(source, (list, tuple))
        and bool(source)
        and all(isinstance(s, (str, os.PathLike)) for s in source)
    )


def open_source(source: Any, expected: Shape, options: ReadOptions | None = None) -> Source:
    """Recognise ``source`` and return it as a `Source` (see the module docstring)."""
    options = options or ReadOptions()
    if source is None:
        return bundled_source(expected)
    if isinstance(source, (str, os.PathLike)):
        return open_paths(expand(source), expected, options)
    if _is_path_list(source):
        return open_paths([p for s in source for p in expand(s)], expected, options)
    if isinstance(source, np.ndarray) or (hasattr(source, "shape") and hasattr(source, "dtype")):
        return array_source(np.asarray(source), None, None, expected, "array", options.fit)
    if is_tf_dataset(source) or isinstance(source, Iterable):
        return stream_source(source, expected, type(source).__name__, options.fit)
    raise TypeError(
        f"cannot audit a {type(source).__name__}: pass a folder, file, array or dataset"
    )


def read_images(
    source: Any, expected: Shape, options: ReadOptions | None = None, limit: int | None = None
) -> tuple[np.ndarray, list[str], list[str | None], str]:
    """The first ``limit`` (None: all) inputs of ``source`` (`open_source`) as one batch
    (`stack_images`: uint8 when every image is 8-bit, else float32 in [0, 1]), their ids, labels
    and the source's description. An input that cannot be read is a ValueError naming it: a
    command that explains every input never drops one silently."""
    src = open_source(source, expected, options)
    records: list[Record] = []
    for r in src.read(lambda i, rid: limit is None or i < limit):
        if r.error is not None:
            raise ValueError(f"cannot read input {r.id!r} of {src.description}: {r.error}")
        records.append(r)
        if limit is not None and len(records) == limit:
            break
    if not records:
        raise ValueError(f"{src.description}: no images to read")
    shapes = {r.image.shape for r in records}  # type: ignore[union-attr]
    if len(shapes) > 1:
        raise ValueError(f"{src.description}: images of different sizes {shapes}; pass --fit")
    images = stack_images([r.image for r in records])  # type: ignore[misc]
    return images, [r.id for r in records], [r.label for r in records], src.description


def process_of(source: Source, nproc: int) -> Callable[[int], int]:
    """Which process reads input ``i``: whole shards (``shard % nproc``) when the source has at
    least as many shards as there are processes, so each reads only its own files; else
    ``i % nproc``."""
    shards = source.shards
    if nproc > 1 and shards is not None and len(set(shards)) >= nproc:
        return lambda i: shards[i] % nproc
    return lambda i: i % nproc
