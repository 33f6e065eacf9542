"""Records and sources: what every opener returns, and the rules every record follows.

A record is one input: its id (and ``raw_id``, the original bytes of an id that had to be
escaped, `fastfem.data.ids`), its label (if the source has one), and either its pixels (H, W, C) or
an error text. Pixels follow one rule for every source (`fastfem.data.decode`): 8-bit data is uint8
``v`` (the model's preprocessing on the device reads it as ``v / 255``; the host-to-device copy
is 4x smaller than float32), 16-bit data float32 ``v / 65535``, float data float32 as it is.
Non-finite pixels are flagged by the device step, like non-finite activations.

**Per-record isolation.** Whatever goes wrong while reading one input — any exception of the
decoder, a damaged TFRecord record, a dangling link — becomes that record's error row, and the
stream goes on (`read_record`). Image files are decoded by `fastfem.data.decode` (a fixed list of
formats, a pixel budget, EXIF orientation, every Pillow mode); ``fit`` (`fastfem.data.fit`) says
what happens to an image whose size or colour channels are not the model's: ``error`` (default:
an error row naming its size and mode), ``squash``, ``crop`` or ``pad``.

A `Source` lists its ids before decoding when it can, so ``--resume`` and multi-process slicing
skip work without reading pixels; a sharded source says which shard each input is in, and
several processes then split it by shard (`process_of`), so each reads only its own files.

**Host threads.** Sources decode their files on host threads while the device runs the model
(Pillow and zlib release the GIL while they decode): `default_threads` says how many,
`threaded_map` decodes in order a bounded number of chunks ahead, `list_shards` lists the files
of a sharded source in parallel.
"""

from __future__ import annotations

import collections
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
    DecodeError,
    DecodeOptions,
    check_alpha,
    check_max_pixels,
    decode_image,
    unit_float,
)
from fastfem.data.fit import check_fit
from fastfem.data.ids import printable

Shape = tuple[int | None, int | None, int | None]


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


#: Inputs per decoding task, and tasks decoded ahead of the consumer.
CHUNK = 32
AHEAD = 16


def threaded_map(items: Iterable[Any], fn: Callable[[Any], Any], threads: int) -> Iterator[Any]:
    """``map(fn, items)`` in order on ``threads`` threads, at most ``AHEAD`` chunks ahead.

    One task per chunk of ``CHUNK`` items (not one future per item: fewer GIL hand-offs), and
    enough chunks ahead (512 inputs) that decoding goes on while the consumer waits for the
    device. Pillow and zlib release the GIL while they decode, so threads overlap.
    """
    if threads <= 1:
        yield from map(fn, items)
        return

    def run(chunk: Sequence[Any]) -> list[Any]:
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


@dataclass(frozen=True)
class ReadOptions:
    """How a source's files become pixels: ``fit`` (`fastfem.data.fit.FITS`), the pixel budget
    ``max_pixels``, the ``alpha`` background, host decoding ``threads``, JPEG ``draft``;
    checked when made (arrays and streams never build a `DecodeOptions`, which checks too).
    Datasets of records: ``image_column`` / ``label_column`` (`fastfem.data.hf`; WebDataset
    shards: the members' extensions, `fastfem.data.webdataset`) and the JSON ``label_field``
    (None: each source's default). ``as_given``: arrays and streams are read as float32 of the
    numbers given, any numeric dtype (the Python API's rule, as Xplique's: the model sees those
    numbers), not by the one pixel rule of the module docstring."""

    fit: str = "error"
    max_pixels: int = DEFAULT_MAX_PIXELS
    alpha: str = "black"
    threads: int = field(default_factory=default_threads)
    draft: bool = True
    image_column: str | None = None
    label_column: str | None = None
    label_field: str | None = None
    as_given: bool = False

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


def selected(ids: list[str], select: Select) -> list[int]:
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


def process_of(source: Source, nproc: int) -> Callable[[int], int]:
    """Which process reads input ``i``: whole shards (``shard % nproc``) when the source has at
    least as many shards as there are processes, so each reads only its own files; else
    ``i % nproc``."""
    shards = source.shards
    if nproc > 1 and shards is not None and len(set(shards)) >= nproc:
        return lambda i: shards[i] % nproc
    return lambda i: i % nproc
