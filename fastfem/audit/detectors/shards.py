"""Reading an audit store's maps shard by shard (never all at once).

The store (`fastfem.audit.store.parts`) keeps one ``.npy`` shard of feature-resolution maps per
committed part, row-aligned with the part's Parquet rows, parts in name order — the order of
`ResultStore.read_rows`. `map_chunks` walks the shards in that order and yields fixed-size
chunks of maps (memory-mapped reads), so a detector's memory is bounded by the chunk size and
its jitted functions compile once (the last chunk is padded with NaN maps, which the detectors
treat as error rows).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from fastfem.audit.store.parts import ResultStore

#: Maps per chunk handed to the device.
CHUNK_ROWS = 2048


@dataclass(frozen=True)
class MapChunk:
    """Rows ``start .. start + count`` of the store (in `read_rows` order); ``maps`` holds
    ``CHUNK_ROWS`` maps, the rows after ``count`` are NaN padding."""

    start: int
    count: int
    maps: np.ndarray


def map_chunks(store: ResultStore, chunk_rows: int = CHUNK_ROWS) -> Iterator[MapChunk]:
    """The store's maps in `read_rows` order, ``chunk_rows`` at a time (see the module)."""
    shape = store.read_map_shape()
    if shape is None:
        return
    buf = np.full((chunk_rows, *shape), np.nan, np.float32)
    filled = start = 0
    for part in store.part_files():
        shard = store.load_maps(part)
        if tuple(shard.shape[1:]) != shape:
            raise ValueError(
                f"{part.name}: maps of shape {tuple(shard.shape[1:])}, the store's are {shape}"
            )
        offset = 0
        while offset < len(shard):
            take = min(chunk_rows - filled, len(shard) - offset)
            buf[filled : filled + take] = shard[offset : offset + take]
            filled += take
            offset += take
            if filled == chunk_rows:
                yield MapChunk(start, filled, buf.copy())
                start += filled
                filled = 0
    if filled:
        buf[filled:] = np.nan
        yield MapChunk(start, filled, buf)


def read_map_rows(store: ResultStore, indices: list[int] | np.ndarray) -> np.ndarray:
    """The maps of the rows ``indices`` (positions in `read_rows` order), reading only the
    shards that hold them (memory-mapped)."""
    want = np.asarray(indices, np.int64)
    shape = store.read_map_shape()
    if shape is None or want.size == 0:
        return np.zeros((0, *(shape or (0, 0))), np.float32)
    out = np.full((want.size, *shape), np.nan, np.float32)
    start = 0
    for part in store.part_files():
        shard = store.load_maps(part)
        inside = (want >= start) & (want < start + len(shard))
        if inside.any():
            out[inside] = shard[want[inside] - start]
        start += len(shard)
    if want.size and (want.min() < 0 or want.max() >= start):
        raise IndexError(f"row index out of range 0..{start - 1}")
    return out
