"""The one way in for images: anything with images -> a `fastfem.data.records.Source`.

Sources:

* an image folder (`fastfem.data.folders`: recursive, each folder once, links that loop
  followed never; the first sub-folder is the label), or several (a list or a glob: ids are
  prefixed by each folder's path relative to their common parent);
* ``.npy`` (memory-mapped) or ``.npz`` (``images`` or its only array, optional ``ids`` and
  ``labels``) arrays: uint8, uint16 or float (`fastfem.data.arrays`);
* TFRecord files, one or several shards (a list or a glob), read without TensorFlow
  (`fastfem.data.tfrecord`);
* Hugging Face datasets (Parquet or Arrow files, a ``save_to_disk`` folder; `fastfem.data.hf`)
  and WebDataset ``.tar`` shards (`fastfem.data.webdataset`): shards = files, ids
  ``<shard>:<row>`` / ``<shard>:<key>``;
* a ``tf.data.Dataset`` or any iterable of image batches (read and numbered in order);
* None: the bundled sample's test split (`fastfem.data.arrays.bundled_source`; its class
  names are the labels).

`open_source` is the one way in for images: the audit, ``fastfem explain`` / ``evaluate``
(`read_images`) and the report all open their inputs here, and a new input format is one
opener in `open_paths` (files) or `open_source` (Python objects). Pixels stay uint8 / [0, 1]
floats; the model's preprocessing runs on the device (`fastfem.data.preprocess`).

What a record is, the rules every one follows, and how sharded sources are split between
processes: `fastfem.data.records`.
"""

from __future__ import annotations

import glob
import itertools
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fastfem.data.arrays import array_source, bundled_source, npz_source, stream_source
from fastfem.data.decode import unit_float
from fastfem.data.folders import folder_source
from fastfem.data.records import ReadOptions, Record, Shape, Source
from fastfem.data.tfrecord import is_tfrecord, tfrecord_source


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
    from fastfem.data.hf import hf_source, is_hf_dataset  # pyarrow: imported when needed
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
        return array_source(x, expected, str(p), options)
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
        return bundled_source(expected, options)
    if isinstance(source, (str, os.PathLike)):
        return open_paths(expand(source), expected, options)
    if _is_path_list(source):
        return open_paths([p for s in source for p in expand(s)], expected, options)
    if isinstance(source, np.ndarray) or (hasattr(source, "shape") and hasattr(source, "dtype")):
        return array_source(np.asarray(source), expected, "array", options)
    if isinstance(source, Iterable) or hasattr(source, "as_numpy_iterator"):  # tf.data
        return stream_source(source, expected, type(source).__name__, options)
    raise TypeError(
        f"cannot read images from a {type(source).__name__}: pass an array, a tf.data.Dataset, "
        "an iterable of images, a folder or a file"
    )


def checked_records(src: Source, limit: int | None = None) -> Iterator[Record]:
    """The first ``limit`` (None: all) records of ``src`` in order, every one with its pixels,
    all of one shape: an input that cannot be read, or of another shape than the first, is a
    ValueError naming it (a caller that explains every input never drops one silently)."""
    shape = None
    for r in itertools.islice(src.read(lambda i, rid: limit is None or i < limit), limit):
        if r.error is not None:
            raise ValueError(f"cannot read input {r.id!r} of {src.description}: {r.error}")
        image: np.ndarray = r.image  # type: ignore[assignment]
        shape = image.shape if shape is None else shape
        if image.shape != shape:
            raise ValueError(
                f"{src.description}: images of different sizes: input {r.id!r} is "
                f"{image.shape}, the first ones {shape}; pass --fit (fit=) or resize first"
            )
        yield r


def read_images(
    source: Any, expected: Shape, fit: str = "error", limit: int | None = None
) -> tuple[np.ndarray, list[str], list[str | None], str]:
    """What ``fastfem explain`` and ``evaluate`` read: the first ``limit`` (None: all) inputs of
    ``source`` (`open_source` with ``fit``, `checked_records`) as one float32 batch in [0, 1]
    (`fastfem.data.decode.unit_float`; the model's preprocessing runs on the device), their ids,
    labels and the source's description."""
    src = open_source(source, expected, ReadOptions(fit))
    records = list(checked_records(src, limit))
    if not records:
        raise ValueError(f"{src.description}: no images to read")
    images = np.stack([unit_float(r.image) for r in records])  # type: ignore[arg-type]
    return images, [r.id for r in records], [r.label for r in records], src.description


@dataclass(frozen=True)
class ImageStream:
    """Host batches (B, H, W, C) float32 of at most the batch size, all images of
    ``sample_shape``; ``count``: the number of images when the source lists them, else None."""

    batches: Iterator[np.ndarray]
    sample_shape: tuple[int, int, int]
    count: int | None


def stream_images(inputs: Any, batch_size: int, expected: Shape) -> ImageStream:
    """The Python API's way in: ``inputs`` (anything `open_source` reads: arrays, ``tf.Tensor``,
    ``jax.Array``, ``tf.data``, iterables, files) with ``as_given`` pixels, `checked_records`,
    as float32 batches; nothing read whole. The first image is read here (its shape is the
    stream's); empty inputs are a ValueError."""
    if len(expected) != 3:
        raise ValueError(f"the model expects inputs of shape {expected}, not images (H, W, C)")
    src = open_source(inputs, expected, ReadOptions(as_given=True))
    records = checked_records(src)
    first = next(records, None)
    if first is None:
        raise ValueError(f"{src.description}: empty (no images); nothing to explain")

    def batches() -> Iterator[np.ndarray]:
        rest = itertools.chain([first], records)
        while chunk := list(itertools.islice(rest, batch_size)):
            yield np.stack([r.image for r in chunk]).astype(np.float32, copy=False)

    count = None if src.ids is None else len(src.ids)
    return ImageStream(batches(), first.image.shape, count)  # type: ignore[union-attr]
