"""Host decoding threads: how many (`default_threads`), and maps run on them in order.

The sources decode their files on host threads while the device runs the model; Pillow and
zlib release the GIL while they decode, so threads overlap. `threaded_map` keeps the input
order and decodes a bounded number of chunks ahead; `list_shards` lists the files of a
sharded source in parallel.
"""

from __future__ import annotations

import collections
import itertools
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

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


def threaded_map(items: Iterable[Any], fn: Callable[[Any], T], threads: int) -> Iterator[T]:
    """``map(fn, items)`` in order on ``threads`` threads, at most ``AHEAD`` chunks ahead.

    One task per chunk of ``CHUNK`` items (not one future per item: fewer GIL hand-offs), and
    enough chunks ahead (512 inputs) that decoding goes on while the consumer waits for the
    device. Pillow and zlib release the GIL while they decode, so threads overlap.
    """
    if threads <= 1:
        yield from map(fn, items)
        return

    def run(chunk: Sequence[Any]) -> list[T]:
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
