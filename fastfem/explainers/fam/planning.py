"""FAM's host-side planning: class prototypes, reference-map rows, and the host batches of each
task (pairs zipped, queries with their index or target class)."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator
from typing import Any

import numpy as np

from fastfem.engine.runner import HostBatch, batch_rows

#: Most (query, reference) pairs explained per reference image in one row of the reference-map
#: step; a reference shared by more pairs (a "hub") gets several rows.
MAX_PAIRS_PER_ROW = 8


def class_prototypes(embeddings: np.ndarray, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(classes, prototypes)``: the sorted distinct ``labels`` and, per class, the mean of
    its ``embeddings`` rows (accumulated in float64, returned as float32 (n_classes, C))."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.shape[0] != embeddings.shape[0]:
        raise ValueError(
            f"support_labels must be one label per support image: {embeddings.shape[0]} "
            f"images, labels of shape {labels.shape}"
        )
    classes, label_idx = np.unique(labels, return_inverse=True)
    counts = np.bincount(label_idx, minlength=classes.size)
    protos = np.zeros((classes.size, embeddings.shape[1]), np.float64)
    np.add.at(protos, label_idx, embeddings.astype(np.float64))
    return classes, (protos / counts[:, None]).astype(np.float32)


def _next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


@dataclasses.dataclass(frozen=True)
class _RowPlan:
    """Pairs grouped by reference image: row ``i`` explains image ``ref[i]`` for the pairs
    ``pairs[i]`` (-1 = empty slot); rows are sorted by ``ref``."""

    ref: np.ndarray  # (R,) int64
    pairs: np.ndarray  # (R, m) int64


def plan_reference_rows(pair_ref: np.ndarray, cap: int = MAX_PAIRS_PER_ROW) -> _RowPlan:
    """Group pairs by their reference image (vectorised): one row per distinct reference,
    ``m = min(cap, next_pow2(most pairs per reference))`` slots, hubs split over several rows.
    """
    pair_ref = np.asarray(pair_ref, np.int64)
    order = np.argsort(pair_ref, kind="stable")
    refs = pair_ref[order]
    uniq, start, count = np.unique(refs, return_index=True, return_counts=True)
    m = min(cap, _next_pow2(int(count.max())))
    rows_per_ref = -(-count // m)
    row_offset = np.concatenate([[0], np.cumsum(rows_per_ref)])
    group = np.repeat(np.arange(uniq.size), count)
    rank = np.arange(refs.size) - start[group]
    row = row_offset[group] + rank // m
    pairs = np.full((int(row_offset[-1]), m), -1, np.int64)
    pairs[row, rank % m] = order
    return _RowPlan(ref=np.repeat(uniq, rows_per_ref), pairs=pairs)


def rebatch(chunks: Iterator[HostBatch], size: int) -> Iterator[HostBatch]:
    """Merge small host batches (dicts of arrays with one leading axis) into batches of size."""
    buf: list[HostBatch] = []
    held = 0
    for chunk in chunks:
        buf.append(chunk)
        held += batch_rows(chunk)
        while held >= size:
            merged = {k: np.concatenate([b[k] for b in buf]) for k in buf[0]}
            yield {k: a[:size] for k, a in merged.items()}
            rest = {k: a[size:] for k, a in merged.items()}
            buf, held = ([rest], held - size) if held > size else ([], 0)
    if held:
        yield {k: np.concatenate([b[k] for b in buf]) for k in buf[0]}


def as_maps(maps: np.ndarray, resize: bool) -> np.ndarray:
    maps = maps.astype(np.float32, copy=False)
    return maps[..., None] if resize else maps


def check_same_shape(queries: tuple, other: tuple, what: str) -> None:
    """The queries and ``what`` must have the same (H, W, C): a ValueError naming both."""
    if queries != other:
        raise ValueError(
            f"queries have shape {queries} but {what} {other}; they must have the same (H, W, C)"
        )


def check_self_count(exclude_self: bool, n_queries: int | None, n_gallery: int) -> None:
    if exclude_self and n_queries is not None and n_queries != n_gallery:
        raise ValueError(
            f"exclude_self=True means the queries are the gallery, but there are {n_queries} "
            f"queries and {n_gallery} gallery images"
        )


def given_classes(query_labels: Any, classes: np.ndarray, count: int | None) -> np.ndarray | None:
    """Class indices of ``query_labels`` (None: explain against the predicted class)."""
    if query_labels is None:
        return None
    ql = np.asarray(query_labels)
    if ql.ndim != 1 or (count is not None and ql.shape[0] != count):
        raise ValueError(
            f"query_labels must be one label per query: {count} queries, labels of shape {ql.shape}"
        )
    pos = np.clip(np.searchsorted(classes, ql), 0, classes.size - 1)
    unknown = classes[pos] != ql
    if unknown.any():
        raise ValueError(
            f"query_labels {sorted(set(ql[unknown].tolist()))[:10]} are not support "
            f"labels {classes.tolist()[:20]}"
        )
    return pos.astype(np.int32)


def class_members(label_idx: np.ndarray, n_way: int) -> np.ndarray:
    """(n_way, K) support indices of each class's members in order, -1 padded."""
    counts = np.bincount(label_idx, minlength=n_way)
    members = np.full((n_way, int(counts.max())), -1, np.int64)
    order = np.argsort(label_idx, kind="stable")
    rank = np.arange(order.size) - np.repeat(np.cumsum(counts) - counts, counts)
    members[label_idx[order], rank] = order
    return members


def zip_pairs(
    q_batches: Iterator[np.ndarray], r_batches: Iterator[np.ndarray]
) -> Iterator[HostBatch]:
    """Zip two streams batched alike; a ValueError with both counts if they differ in length."""
    nq = nr = 0
    for q, r in itertools.zip_longest(q_batches, r_batches):
        nq += 0 if q is None else q.shape[0]
        nr += 0 if r is None else r.shape[0]
        if q is None or r is None or q.shape[0] != r.shape[0]:
            nq += sum(b.shape[0] for b in q_batches)
            nr += sum(b.shape[0] for b in r_batches)
            raise ValueError(
                f"queries and references pair up one to one: got {nq} queries and {nr} references"
            )
        yield {"x": q, "reference": r}


def with_index(batches: Iterator[np.ndarray]) -> Iterator[HostBatch]:
    offset = 0
    for b in batches:
        yield {"x": b, "index": np.arange(offset, offset + b.shape[0], dtype=np.int32)}
        offset += b.shape[0]


def with_given(batches: Iterator[np.ndarray], given: np.ndarray | None) -> Iterator[HostBatch]:
    offset = 0
    for b in batches:
        n = b.shape[0]
        if given is None:
            g = np.full(n, -1, np.int32)
        else:
            g = given[offset : offset + n]
            if g.shape[0] != n:
                raise ValueError(
                    f"query_labels must be one label per query: more than {given.shape[0]} queries"
                )
        yield {"x": b, "target": g}
        offset += n
