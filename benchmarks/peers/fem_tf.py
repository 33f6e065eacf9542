"""Xplique's FEM computation in TensorFlow *graph* mode: ``tf.function`` and XLA (``jit_compile``).

Xplique's `FEM.explain` (xplique/attributions/fem.py) runs the model eagerly batch by batch,
computes the channel statistics and masks in two small ``tf.function`` s, concatenates the
feature-resolution maps and resizes them one image at a time (``tf.map_fn`` of
``tf.image.resize(..., BICUBIC)``). The peers here are what a TensorFlow user would write to
make that fast: the same formula, taken from Xplique's code::

    mu_c = reduce_mean(A, spatial)      sigma_c = reduce_std(A, spatial)    (population std)
    M_c  = A >= mu_c + k sigma_c        map = sum_c mu_c M_c
    out  = tf.image.resize(map[..., None], (H, W), method="bicubic")

fused with the forward pass up to the layer into ONE ``tf.function`` per batch (graph mode,
``jit_compile=False``: TF's grappler + oneDNN kernels) or compiled by XLA (``jit_compile=True``).
The resize is batched (``tf.image.resize`` of the (B, h, w, 1) stack equals Xplique's per-image
``map_fn``). Under ``jit_compile=True`` the bicubic resize has no XLA kernel in TF, so
``resize="outside"`` (default for XLA) runs the resize as a second, non-XLA ``tf.function``.

Like Xplique, no degenerate-channel rule is applied (fastfem's sigma ~ 0 guard,
`fastfem.kernels.fem`): on real activations the maps agree with Xplique's to float32 round-off.

Run with Keras on the TensorFlow backend (``KERAS_BACKEND=tensorflow`` before Keras is imported).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf


def fem_formula(acts: tf.Tensor, k: float) -> tf.Tensor:
    """(B, h, w, C) -> (B, h, w): Xplique's `_compute_weights` + `_apply_weights`."""
    acts = tf.cast(acts, tf.float32)
    means = tf.reduce_mean(acts, axis=[1, 2], keepdims=True)
    stds = tf.math.reduce_std(acts, axis=[1, 2], keepdims=True)
    masks = tf.cast(acts >= means + k * stds, acts.dtype)
    return tf.reduce_sum(masks * means, axis=-1)


def _resolve_layer(model: Any, conv_layer: str | int | None) -> Any:
    if conv_layer is None:
        for layer in reversed(model.layers):
            if hasattr(layer, "filters"):
                return layer
        raise ValueError("the model has no layer with `filters`")
    if isinstance(conv_layer, int):
        return model.layers[conv_layer]
    return model.get_layer(conv_layer)


class FemTFGraph:
    """``FemTFGraph(model, batch_size, conv_layer, k, jit_compile).explain(x)`` -> (N, H, W, 1).

    One compiled step per batch: forward to the layer, FEM, bicubic resize; NumPy in, NumPy out.
    The batch axis of the step's signature is ``None`` (no retrace for a short last batch under
    ``jit_compile=False``; XLA compiles one program per distinct batch size).
    """

    def __init__(
        self,
        model: Any,
        batch_size: int = 32,
        conv_layer: str | int | None = None,
        k: float = 2.0,
        jit_compile: bool = False,
        resize: str | None = None,
    ):
        import keras

        if keras.backend.backend() != "tensorflow":
            raise RuntimeError("FemTFGraph needs Keras on the TensorFlow backend")
        if isinstance(model, str):
            model = keras.saving.load_model(model, compile=False)
        layer = _resolve_layer(model, conv_layer)
        self.features = keras.Model(model.inputs[0], layer.output)
        self.batch_size = int(batch_size)
        self.k = float(k)
        self.jit_compile = bool(jit_compile)
        self.resize = resize or ("outside" if jit_compile else "inside")
        if self.resize not in ("inside", "outside"):
            raise ValueError(f"resize must be 'inside' or 'outside'; got {resize!r}")
        h, w, c = (int(d) for d in model.inputs[0].shape[1:])
        spec = tf.TensorSpec([None, h, w, c], tf.float32)
        size = (h, w)
        k_ = self.k

        def resize_maps(maps: tf.Tensor) -> tf.Tensor:
            return tf.image.resize(maps[..., None], size, method="bicubic")

        if self.resize == "inside":

            def step(x: tf.Tensor) -> tf.Tensor:
                return resize_maps(fem_formula(self.features(x, training=False), k_))

            self._step = tf.function(step, input_signature=[spec], jit_compile=self.jit_compile)
        else:
            fem_step = tf.function(
                lambda x: fem_formula(self.features(x, training=False), k_),
                input_signature=[spec],
                jit_compile=self.jit_compile,
            )
            resize_step = tf.function(resize_maps, jit_compile=False)
            self._step = lambda x: resize_step(fem_step(x))

    def explain(self, inputs: Any) -> np.ndarray:
        out = []
        for start in range(0, len(inputs), self.batch_size):
            xb = tf.convert_to_tensor(inputs[start : start + self.batch_size], tf.float32)
            out.append(self._step(xb).numpy())
        return np.concatenate(out, axis=0).astype(np.float32, copy=False)

    __call__ = explain
