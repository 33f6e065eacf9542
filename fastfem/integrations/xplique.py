"""Xplique drop-in: ``from fastfem.integrations.xplique import FEM`` replaces
``xplique.attributions.FEM``.

TensorFlow in, ``tf.Tensor`` out, with Xplique 2.0's constructor, attributes and static helpers;
the maps come from fastfem's jitted engine (`fastfem.FEM`, variant ``"xplique"``, equal to
Xplique's maps to float32 round-off). What is the same as ``xplique.attributions.FEM``:

* ``FEM(model, batch_size=32, conv_layer=None, k=2.0)``. ``conv_layer``: None -> the last layer
  of ``model.layers`` with a ``filters`` attribute (a ValueError at construction if there is
  none); a ``str`` -> ``model.get_layer(name)``; an ``int`` -> ``model.layers[i]``; anything else
  a ValueError. A layer that FEM cannot explain (e.g. ``"flatten"``: no 4-D output) is accepted
  here and fails in `FEM.explain`, as in Xplique.
* Attributes: ``batch_size`` (None: all inputs in one batch), ``k`` (a ``tf.float32`` scalar),
  ``conv_layer`` (the Keras layer object), ``model`` (the cut model: a Keras model from
  ``model.inputs[0]`` to ``conv_layer.output``). They are read at each `FEM.explain`.
* ``explain(inputs, targets=None)`` and ``__call__``: ``inputs`` a NumPy array, a ``tf.Tensor``
  or a ``tf.data.Dataset`` of ``(x, y)`` pairs, batched or not; ``targets`` ignored (FEM is
  class-agnostic). Returns a float32 ``tf.Tensor`` (N, H, W, 1): per channel ``c`` the mask
  ``A_c >= mu_c + k sigma_c`` weighted by ``mu_c``, summed over channels, resized to the input
  size with TensorFlow's bicubic ``tf.image.resize``.
* ``FEM._compute_weights(feature_maps, k) -> (weights, binary_mask)``: channel means over the
  spatial axes (kept as size-1 axes) and the k-sigma masks; ``FEM._apply_weights(weights,
  binary_masks) -> sum_c weights_c * mask_c`` (channels last). Any rank ``(N, *spatial, C)``.

Differences: errors in `FEM.explain` are fastfem's ``ValueError``s naming the problem (wrong
rank, empty input, a layer without a 4-D output) where Xplique raises TensorFlow errors;
``__call__``'s second argument (Xplique's required ``labels``) may be omitted; a channel whose
standard deviation is float round-off of 0 (``sigma <= 1e-6 |mu|``) counts as exactly constant
(`fastfem.kernels.fem`); datasets are streamed, not materialised (except with
``batch_size=None``, which needs their length).

Keras backend: either. Under TensorFlow (an Xplique user's usual process) the cut model is
converted to JAX once by tf2jax (``jax2tf.call_tf`` without tf2jax); under JAX it runs natively.
The cut model is converted at the first `FEM.explain` and kept; the compiled step is shared
through `fastfem.engine.cache`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow as tf

from fastfem.converters import FeatureExtractor, load
from fastfem.data.sources import stream_images
from fastfem.explainers.fem import FEM as FemEngine
from fastfem.kernels.fem import channel_stats, fem_masks

__all__ = ["FEM"]


def find_conv_layer(model: Any, conv_layer: str | int | None) -> Any:
    """The Keras layer Xplique's FEM explains (module docstring), as a layer object."""
    if conv_layer is None:
        for layer in model.layers[::-1]:
            if hasattr(layer, "filters"):
                return layer
        raise ValueError("FEM requires a convolutional layer. Please pass `conv_layer` explicitly.")
    if isinstance(conv_layer, str):
        return model.get_layer(conv_layer)
    if isinstance(conv_layer, int):
        return model.layers[conv_layer]
    raise ValueError(f"Could not find any layer {conv_layer}.")


def weights_and_masks(feature_maps: jax.Array, k: float) -> tuple[jax.Array, jax.Array]:
    """``(mu (N, 1, .., 1, C), M (N, *spatial, C))`` of ``A`` (N, *spatial, C), float32.

    ``mu_c`` and ``sigma_c`` over all spatial axes (`fastfem.kernels.fem.channel_stats`),
    ``M_c = A_c >= mu_c + k sigma_c`` (`fastfem.kernels.fem.fem_masks`, inclusive).
    """
    a = jnp.asarray(feature_maps, jnp.float32)
    if a.ndim < 3:
        raise ValueError(
            f"feature_maps must be (N, *spatial, C), one spatial axis or more; got {a.shape}"
        )
    flat = a.reshape(a.shape[0], 1, -1, a.shape[-1])  # (N, 1, S, C): stats over S
    stats = jax.vmap(channel_stats)(flat)
    masks = jax.vmap(lambda x, s: fem_masks(x, s, k, inclusive=True))(flat, stats)
    means = stats.mean.reshape(a.shape[0], *[1] * (a.ndim - 2), a.shape[-1])
    return means, masks.reshape(a.shape)


class FEM:
    """Xplique's ``FEM`` explainer on fastfem's engine (module docstring).

    Args:
      model: a Keras model (Keras 3 on either backend, or tf_keras), built with an input.
      batch_size: the most inputs per step; None -> all inputs in one batch.
      conv_layer: the explained layer: None (last layer with ``filters``), a name or an index.
      k: the number of standard deviations of the k-sigma threshold.
    """

    def __init__(
        self,
        model: Any,
        batch_size: int | None = 32,
        conv_layer: str | int | None = None,
        k: float = 2.0,
    ):
        self.batch_size = batch_size
        self.k = tf.cast(k, tf.float32)
        self.conv_layer = find_conv_layer(model, conv_layer)
        self.model = tf.keras.Model(model.inputs[0], self.conv_layer.output)
        self._extractor: FeatureExtractor | None = None  # the cut model, converted once

    def _engine(self, batch_size: int) -> FemEngine:
        """fastfem's FEM at ``batch_size`` and the current ``k`` (made per call: its compiled
        step is shared through `fastfem.engine.cache`)."""
        if self._extractor is None:
            self._extractor = load(self.model, layers=self.conv_layer.name)
        return FemEngine(self._extractor, batch_size=int(batch_size), k=float(self.k))

    def explain(self, inputs: Any, targets: Any = None) -> tf.Tensor:
        """FEM maps of ``inputs`` resized to their size: a float32 ``tf.Tensor`` (N, H, W, 1).

        ``inputs``: (N, H, W, C) array or ``tf.Tensor``, or a ``tf.data.Dataset`` (elements
        ``(x, y)``, batched or not). ``targets``: ignored (FEM is class-agnostic).
        """
        del targets
        batch_size = self.batch_size
        if batch_size is None:  # one batch of all: the inputs read whole first
            inputs = np.concatenate(list(stream_images(inputs, 1024, (None,) * 3).batches))
            batch_size = len(inputs)
        maps = self._engine(batch_size).explain(inputs)
        return tf.convert_to_tensor(maps)

    def __call__(self, inputs: Any, labels: Any = None) -> tf.Tensor:
        """`explain` (Xplique's alias; ``labels`` are ignored)."""
        return self.explain(inputs, labels)

    @staticmethod
    def _compute_weights(feature_maps: Any, k: Any) -> tuple[tf.Tensor, tf.Tensor]:
        """Channel means (spatial axes kept, size 1) and k-sigma masks of ``feature_maps``."""
        means, masks = weights_and_masks(np.asarray(feature_maps), float(k))
        return tf.convert_to_tensor(np.asarray(means)), tf.convert_to_tensor(np.asarray(masks))

    @staticmethod
    def _apply_weights(weights: Any, binary_masks: Any) -> tf.Tensor:
        """``sum_c weights_c * binary_masks_c`` over the last (channel) axis."""
        w = jnp.asarray(np.asarray(weights), jnp.float32)
        m = jnp.asarray(np.asarray(binary_masks), jnp.float32)
        return tf.convert_to_tensor(np.asarray(jnp.sum(m * w, axis=-1)))
