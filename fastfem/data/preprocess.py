"""The model's own input preprocessing, run on the device inside the jitted step.

Every mode starts from the pixel values ``p`` in 0..255: 8-bit images (uint8, as decoded from
files) are taken as they are; float images are taken to be in [0, 1] (fastfem's float
convention, an 8-bit value ``v`` being ``v / 255``) and scaled by 255 first, so the same pixels
give the same model input whether they come as uint8 or as floats. Then (Keras's
``keras.applications.imagenet_utils.preprocess_input`` numbers for ``caffe``, ``torch``,
``tf``)::

    unit    x = p / 255                                   (the default; floats pass unchanged)
    raw     x = p                                         (0-255 float, e.g. EfficientNet)
    caffe   x = BGR(p) - [103.939, 116.779, 123.68]       (ResNet50, VGG16/19)
    torch   x = (p / 255 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]   (DenseNet)
    tf      x = p / 127.5 - 1                             (MobileNet(V2), Inception, Xception)

``caffe`` and ``torch`` need 3 channels (RGB in). A Python caller may also give any JAX
function of a batch (B, H, W, C) (uint8 or float32) to float32; it is traced into the step.
`with_preprocessing` puts a mode in front of a `fastfem.converters.FeatureExtractor`, so every
explainer, metric and audit step runs it inside its single jitted function.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fastfem.converters import FeatureExtractor, Features

PREPROCESS: tuple[str, ...] = ("unit", "raw", "caffe", "torch", "tf")
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
TORCH_MEAN = (0.485, 0.456, 0.406)
TORCH_STD = (0.229, 0.224, 0.225)
#: 8-bit value -> float32 in [0, 1], exactly the host's ``np.float32(v) / 255``.
U8_TO_UNIT = np.arange(256, dtype=np.float32) / 255.0

Preprocess = Callable[[jax.Array], jax.Array]


def unit_pixels(x: jax.Array) -> jax.Array:
    """``unit``: uint8 ``v -> v / 255`` (a table lookup, bit-identical to the host division);
    float images unchanged."""
    if x.dtype == jnp.uint8:
        return jnp.take(jnp.asarray(U8_TO_UNIT), x.astype(jnp.int32))
    return x.astype(jnp.float32)


def pixels_255(x: jax.Array) -> jax.Array:
    """Pixel values ``p`` in 0..255 as float32: uint8 as is, floats (in [0, 1]) times 255."""
    if x.dtype == jnp.uint8:
        return x.astype(jnp.float32)
    return x.astype(jnp.float32) * 255.0


def _rgb(x: jax.Array, mode: str) -> jax.Array:
    if x.shape[-1] != 3:
        raise ValueError(f"preprocess {mode!r} needs RGB images (3 channels); got {x.shape[-1]}")
    return x


def caffe(x: jax.Array) -> jax.Array:
    """``caffe``: RGB -> BGR, minus the ImageNet BGR mean, 0-255 scale."""
    p = _rgb(pixels_255(x), "caffe")
    return p[..., ::-1] - jnp.asarray(CAFFE_MEAN_BGR, jnp.float32)


def torch_style(x: jax.Array) -> jax.Array:
    """``torch``: ``(p / 255 - mean) / std`` per RGB channel."""
    p = _rgb(pixels_255(x), "torch") / 255.0
    return (p - jnp.asarray(TORCH_MEAN, jnp.float32)) / jnp.asarray(TORCH_STD, jnp.float32)


def tf_style(x: jax.Array) -> jax.Array:
    """``tf``: ``p / 127.5 - 1`` (to [-1, 1])."""
    return pixels_255(x) / 127.5 - 1.0


_MODES: dict[str, Preprocess] = {
    "unit": unit_pixels,
    "raw": pixels_255,
    "caffe": caffe,
    "torch": torch_style,
    "tf": tf_style,
}


def preprocess_fn(preprocess: str | Preprocess) -> Preprocess:
    """The function of a mode name (`PREPROCESS`), or a given JAX function as is."""
    if callable(preprocess):
        return preprocess
    if preprocess not in _MODES:
        raise ValueError(f"unknown preprocess {preprocess!r}; expected one of {PREPROCESS}")
    return _MODES[preprocess]


def preprocess_name(preprocess: str | Preprocess) -> str:
    """How the manifest records a preprocessing: the mode, or the function's qualified name."""
    if isinstance(preprocess, str):
        preprocess_fn(preprocess)  # validates
        return preprocess
    module = getattr(preprocess, "__module__", "") or ""
    name = getattr(preprocess, "__qualname__", type(preprocess).__name__)
    return f"function {module}.{name}".replace(" .", " ")


def with_preprocessing(
    extractor: FeatureExtractor, preprocess: str | Preprocess
) -> FeatureExtractor:
    """``extractor`` with ``preprocess`` applied to its input, inside its ``apply`` (so inside
    every step built on it); its ``source`` says which."""
    fn = preprocess_fn(preprocess)
    inner = extractor.apply

    def apply(params: Any, x: jax.Array) -> Features:
        return inner(params, fn(x))

    return dataclasses.replace(
        extractor,
        apply=apply,
        source=f"{extractor.source} + preprocess {preprocess_name(preprocess)}",
    )
