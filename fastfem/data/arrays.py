"""Sources of images already in memory or in NumPy files: arrays, ``.npy`` / ``.npz``,
``tf.data.Dataset`` s and iterables of image batches, and the bundled sample.

An array (N, H, W, C) — NumPy, memory-mapped ``.npy``, a ``.npz`` read image by image
(`fastfem.data.npz`), or anything with ``shape`` and ``dtype`` — is checked once from its shape
and dtype, then read image by image; for a model of one input channel, (N, H, W) is a batch of
one-channel images (MNIST's arrays, an X-ray set's), as Keras reads it for such a model. A
``tf.data.Dataset`` (elements images ``x``, ``(x,)`` or ``(x, y, ...)``, batched or not) or any
iterable of such elements is streamed in order, never materialised, and numbered from 0; ``y``
is each image's label (a class index or name, or a one-hot or probability vector read as its
argmax), one per image, as Keras's ``fit`` reads it. For a model of one input channel an element
(B, H, W) is a batch and (H, W) an image, as for arrays. TensorFlow is not imported here:
datasets are recognised by their methods.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from fastfem.data.decode import array_pixels
from fastfem.data.fit import fit_array
from fastfem.data.ids import id_and_raw, readable_id
from fastfem.data.npz import open_npz
from fastfem.data.records import (
    ReadOptions,
    Record,
    Select,
    Shape,
    Source,
    check_image,
    check_unique,
    selected,
)


def _fitted(x: np.ndarray, expected: Shape, fit: str) -> np.ndarray:
    h, w, _ = expected
    if fit == "error" or h is None or w is None:
        return x
    return fit_array(x, (int(h), int(w)), fit)  # the same size: returned as it is


def as_given(x: np.ndarray, what: str = "array") -> np.ndarray:
    """Pixels as the caller gave them, as float32, whatever their numeric dtype
    (`fastfem.data.records.ReadOptions.as_given`: the model sees these very numbers)."""
    if x.dtype.kind not in "biuf":
        raise ValueError(f"{what}: pixels of dtype {x.dtype}; expected numbers")
    return x.astype(np.float32, copy=False)


def is_grey_batch(shape: tuple[int, ...], channels: int | None) -> bool:
    """Whether a rank-3 array or stream element of ``shape`` is a batch (B, H, W) of
    one-channel images: for a model of one input channel, where the last axis is not 1 (an
    image (H, W, 1) has it), as Keras reads such an array."""
    return len(shape) == 3 and channels == 1 and shape[-1] != 1


class ChannelAxis:
    """A batch of one-channel images ``x`` (N, H, W) seen as (N, H, W, 1), image by image
    (nothing copied up front)."""

    def __init__(self, x: Any):
        self.x, self.dtype, self.shape, self.ndim = x, x.dtype, (*x.shape, 1), 4

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> np.ndarray:
        return np.asarray(self.x[i])[..., None]


def array_source(
    x: Any,
    expected: Shape,
    what: str,
    options: ReadOptions,
    ids: list[str] | None = None,
    labels: Any = None,
    raw_ids: list[bytes | None] | None = None,
) -> Source:
    """A (N, H, W, C) array (memory-mapped, or an `fastfem.data.npz.NpzImages` read image by
    image, is fine) read by `fastfem.data.decode.array_pixels` (`as_given` with
    ``options.as_given``): the rank, dtype, channels and the pixels per image (the pixel budget
    ``max_pixels``) are checked once, up front, from the shape and dtype alone (nothing is
    read); the size too unless ``fit`` fits each image. For a model of one input channel, a
    rank-3 array (N, H, W) whose last axis is not 1 is a batch of one-channel images."""
    if is_grey_batch(x.shape, expected[2]):
        x = ChannelAxis(x)
    if x.ndim == 3 and expected[2] in (None, x.shape[-1]):
        raise ValueError(
            f"{what}: got a single image of shape {x.shape}; expected a batch (N, H, W, C) — add "
            "a batch axis, e.g. x[None]"
        )
    if x.ndim == 3:
        raise ValueError(
            f"{what}: got rank 3 {x.shape}; expected a batch (N, H, W, C) of {expected[2]} "
            "channels (a batch (N, H, W) is read as one-channel images only for a model of one "
            "input channel)"
        )
    if x.ndim != 4:
        raise ValueError(f"{what}: expected rank 4 (N, H, W, C); got rank {x.ndim} {x.shape}")
    pixels, fit = as_given if options.as_given else array_pixels, options.fit
    pixels(np.empty((0,), x.dtype), what)  # the dtype, checked up front
    if x.shape[1] * x.shape[2] > options.max_pixels:
        raise ValueError(
            f"{what}: images of {x.shape[1]}x{x.shape[2]} pixels, over the pixel budget "
            f"max_pixels={options.max_pixels:,}"
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
        for i in selected(ids, select):
            img = _fitted(pixels(np.asarray(x[i]), what), expected, fit)
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
    return array_source(x, expected, str(p), options, ids, labels, raws)


def _stream_record(
    rid: str, img: np.ndarray, label: str | None, expected: Shape, options: ReadOptions
) -> Record:
    try:
        pixels = as_given if options.as_given else array_pixels
        x = _fitted(pixels(img, "stream element"), expected, options.fit)
    except ValueError as err:
        return Record(rid, label, error=str(err))
    problem = check_image(x, expected)
    return Record(rid, label, error=problem) if problem else Record(rid, label, image=x)


def stream_source(
    batches: Iterable[Any], expected: Shape, what: str, options: ReadOptions
) -> Source:
    """A tf.data.Dataset or an iterable of images or batches (`image_elements`): not listable;
    numbered in order."""

    def read(select: Select) -> Iterator[Record]:
        for i, (img, label) in enumerate(image_elements(batches, expected[2])):
            rid = str(i)
            if select(i, rid):
                yield _stream_record(rid, img, label, expected, options)

    return Source(None, read, what)


def bundled_source(expected: Shape, options: ReadOptions) -> Source:
    """The bundled sample's test split (`fastfem.sample.generate`): arrays, ids ``test-NNNNN``,
    its class names as labels."""
    from fastfem.sample import CLASS_NAMES, generate

    s = generate("test")
    labels = [CLASS_NAMES[i] for i in s.labels]
    what = "bundled sample (test split)"
    return array_source(s.images, expected, what, options, list(s.ids), labels)


def is_tf_dataset(obj: Any) -> bool:
    """True for a ``tf.data.Dataset`` (duck-typed, so TensorFlow need not be imported)."""
    return hasattr(obj, "element_spec") and hasattr(obj, "as_numpy_iterator")


def element_images(x: np.ndarray, channels: int | None) -> np.ndarray:
    """A stream element's images as a batch (B, H, W, C): rank 4 is a batch, rank 3 an image;
    for a model of one input channel (``channels == 1``) a rank-3 element whose last axis is
    not 1 is a batch of one-channel images and a rank-2 element one such image. Other ranks
    are returned as one image, for the shape check to refuse by name."""
    if is_grey_batch(x.shape, channels):
        return x[..., None]
    if channels == 1 and x.ndim == 2:
        return x[None, :, :, None]
    return x if x.ndim == 4 else x[None]


def element_labels(y: Any, n: int) -> list[str | None]:
    """The labels of a stream element's ``n`` images from its second item ``y``: one class
    index or name per image, or one one-hot (or probability) vector per image, read as its
    argmax; bytes are UTF-8, whole floats integers. ``y`` of another make (a dict of several
    outputs' targets) gives no labels; any other count is a ValueError (no label is guessed
    or dropped)."""
    y = np.asarray(y)
    if y.dtype.kind not in "biufSU":
        return [None] * n
    one_per_row = (y.ndim == 2 and y.shape[0] == n) or (y.ndim == 1 and n == 1)
    if y.size != n and y.dtype.kind in "biuf" and one_per_row:
        y = np.argmax(y.reshape(n, -1), axis=-1)  # one-hot or probabilities
    if y.size != n:
        raise ValueError(
            f"stream element: labels of shape {y.shape} for {n} images (expected one per "
            "image: a class index or name, or a one-hot vector)"
        )
    values = y.reshape(-1).tolist()
    if y.dtype.kind == "f" and all(float(v).is_integer() for v in values):
        values = [int(v) for v in values]
    text = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in values]
    return [readable_id(t) for t in text]


def image_elements(
    data: Iterable[Any], channels: int | None = None
) -> Iterator[tuple[np.ndarray, str | None]]:
    """Each image (H, W, C) of a ``tf.data.Dataset`` or any iterable whose elements are images
    or batches (`element_images`), bare or as the first item of a tuple, with its label from
    the tuple's second item (`element_labels`) or None; the dtype kept."""
    it = data.as_numpy_iterator() if is_tf_dataset(data) else iter(data)
    for element in it:
        if isinstance(element, dict) or (isinstance(element, tuple) and not element):
            raise ValueError("dataset elements must be images or (image, label, ...) tuples")
        x = element_images(
            np.asarray(element[0] if isinstance(element, tuple) else element), channels
        )
        has_y = isinstance(element, tuple) and len(element) > 1
        labels = element_labels(element[1], len(x)) if has_y else [None] * len(x)
        yield from zip(x, labels, strict=True)
