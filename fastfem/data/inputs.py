"""Image inputs -> a stream of host batches (N, H, W, C) float32, validated.

Accepted, as in Xplique: a NumPy array, a ``tf.Tensor``, a ``jax.Array`` (anything array-like
of rank 4), or a ``tf.data.Dataset`` whose elements are images ``x``, ``(x,)`` or ``(x, y, ...)``,
batched (rank-4 elements) or not (rank-3 elements). Datasets are streamed and re-batched, never
materialised whole, through `image_elements` (also how `fastfem.data.sources` reads ``tf.data``
and iterables). TensorFlow is not imported here: datasets are recognised by their methods.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fastfem.data.arrays import first_component, image_elements, is_tf_dataset


@dataclass(frozen=True)
class ImageStream:
    """Host batches of at most ``batch_size`` images, all of shape ``sample_shape``.

    ``count`` is the number of images when known up front (arrays), else None (datasets).
    """

    batches: Iterator[np.ndarray]
    sample_shape: tuple[int, int, int]
    count: int | None


def check_sample_shape(
    shape: Sequence[int], expected: Sequence[int | None] | None, what: str = "inputs"
) -> tuple[int, int, int]:
    """Validate one image's (H, W, C) against the model's input spec (None = free dimension)."""
    shape = tuple(int(d) for d in shape)
    if len(shape) != 3:
        raise ValueError(f"{what}: expected images of shape (H, W, C); got {shape}")
    if expected is not None:
        expected = tuple(expected)
        if len(expected) != 3:
            raise ValueError(f"the model expects inputs of shape {expected}, not images (H, W, C)")
        if expected[2] is not None and shape[2] != expected[2]:
            raise ValueError(
                f"{what}: images have {shape[2]} channels but the model expects {expected[2]} "
                f"(model input (H, W, C) = {expected}, got {shape})"
            )
        for axis, name in ((0, "height"), (1, "width")):
            if expected[axis] is not None and shape[axis] != expected[axis]:
                raise ValueError(
                    f"{what}: image {name} {shape[axis]} does not match the model's input "
                    f"{name} {expected[axis]} (model input {expected}, got {shape}); resize first"
                )
    return shape  # type: ignore[return-value]


def _array_batches(x: Any, batch_size: int) -> Iterator[np.ndarray]:
    for start in range(0, x.shape[0], batch_size):
        yield np.asarray(x[start : start + batch_size], dtype=np.float32)


def _dataset_batches(ds: Any, batch_size: int) -> Iterator[np.ndarray]:
    images = image_elements(ds)
    while batch := list(itertools.islice(images, batch_size)):
        yield np.stack(batch).astype(np.float32, copy=False)


def _validated(batches: Iterator[np.ndarray], shape: tuple[int, int, int]) -> Iterator[np.ndarray]:
    for i, b in enumerate(batches):
        if b.shape[1:] != shape:
            raise ValueError(
                f"inputs: batch {i} has images of shape {b.shape[1:]}, expected {shape} like the "
                "first ones; every image must have the same (H, W, C)"
            )
        yield b


def image_stream(
    inputs: Any, batch_size: int, expected_shape: Sequence[int | None] | None = None
) -> ImageStream:
    """Validate ``inputs`` and return a stream of host batches of at most ``batch_size``.

    Raises ValueError for: a rank other than 4 (a single image gets a hint to add the batch
    axis), a channel/size mismatch with ``expected_shape``, and empty inputs.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    if is_tf_dataset(inputs):
        spec = first_component(inputs.element_spec)
        rank = len(spec.shape)
        if rank not in (3, 4):
            raise ValueError(
                f"dataset elements have shape {tuple(spec.shape)}; expected images (H, W, C) "
                "or batches (N, H, W, C)"
            )
        it = _dataset_batches(inputs, batch_size)
        first = next(it, None)
        if first is None:
            raise ValueError("inputs: the dataset is empty; nothing to explain")
        shape = check_sample_shape(first.shape[1:], expected_shape)

        def chained() -> Iterator[np.ndarray]:
            yield first
            yield from it

        return ImageStream(_validated(chained(), shape), shape, None)

    if isinstance(inputs, (list, tuple)):
        inputs = np.asarray(inputs, dtype=np.float32)
    if not hasattr(inputs, "shape"):
        raise TypeError(
            f"inputs must be an array (numpy, tf.Tensor, jax.Array) or a tf.data.Dataset; got "
            f"{type(inputs).__name__}"
        )
    shape = tuple(inputs.shape)
    if len(shape) == 3:
        raise ValueError(
            f"inputs: got a single image of shape {shape}; expected a batch (N, H, W, C) — add "
            "a batch axis, e.g. x[None]"
        )
    if len(shape) != 4:
        raise ValueError(f"inputs: expected rank 4 (N, H, W, C); got rank {len(shape)} {shape}")
    if shape[0] == 0:
        raise ValueError("inputs: empty (0 images); nothing to explain")
    sample = check_sample_shape(shape[1:], expected_shape)
    if not hasattr(inputs, "__getitem__"):
        inputs = np.asarray(inputs)
    return ImageStream(_array_batches(inputs, batch_size), sample, int(shape[0]))
