"""Stage 2 of an audit: records -> device batches (and the error records set aside).

`RecordBatcher` groups the good records of a `fastfem.data.records.Source` into host batches
of the device batch size (``{"x": (B, H, W, C)}`` plus ground-truth boxes and FAM targets when
the audit has them) and keeps, in order, the records that could not be read (their error rows
are written right after the batch that follows them). The records of each batch travel beside
it (`RecordBatcher.pending`), so the results that come back line up with their ids.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np

from fastfem.data.boxes import Boxes, pack_boxes
from fastfem.data.records import Record, stack_images


class RecordBatcher:
    """Good records batched for the device, bad ones set aside (module docstring).

    Args:
      batch_size: images per host batch (the device batch).
      boxes: ground-truth boxes by id (None: no localisation metrics); ``boxes_per_image``:
        the packed boxes per image (`fastfem.data.boxes.max_boxes`).
      class_index: FAM: label -> prototype index (-1: explain against the nearest prototype).
    """

    def __init__(
        self,
        batch_size: int,
        boxes: Boxes | None = None,
        boxes_per_image: int = 0,
        class_index: Mapping[str, int] | None = None,
    ):
        self.batch_size = batch_size
        self.boxes = boxes
        self.boxes_per_image = boxes_per_image
        self.class_index = class_index
        self.pending: collections.deque[list[Record]] = collections.deque()
        self.errors: list[tuple[Record, str]] = []
        self.box_ids_seen: set[str] = set()

    def host_batch(self, recs: list[Record]) -> dict[str, np.ndarray]:
        """The arrays of one batch of good records."""
        batch: dict[str, Any] = {"x": stack_images([r.image for r in recs])}
        if self.boxes is not None:
            found = [self.boxes.get(r.id) for r in recs]
            self.box_ids_seen.update(
                r.id for r, b in zip(recs, found, strict=True) if b is not None
            )
            batch["boxes"], batch["has_box"] = pack_boxes(found, self.boxes_per_image)
        if self.class_index is not None:
            batch["target"] = np.asarray(
                [self.class_index.get(r.label, -1) if r.label is not None else -1 for r in recs],
                np.int32,
            )
        return batch

    def batches(self, records: Iterable[Record]) -> Iterator[dict[str, np.ndarray]]:
        """Host batches of the good records; each batch's records are queued in `pending`."""
        recs: list[Record] = []
        for rec in records:
            if rec.error is not None:
                self.errors.append((rec, rec.error))
                continue
            recs.append(rec)
            if len(recs) == self.batch_size:
                self.pending.append(recs)
                yield self.host_batch(recs)
                recs = []
        if recs:
            self.pending.append(recs)
            yield self.host_batch(recs)

    def take_errors(self) -> list[tuple[Record, str]]:
        """The error records set aside so far (and forget them)."""
        out, self.errors = self.errors, []
        return out
