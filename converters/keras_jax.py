"""Keras 3 on the JAX backend: a model run natively through ``stateless_call`` (the fastest path).

The model's graph is cut at the chosen layer(s) (a sub-``keras.Model`` sharing the layers,
`fastfem.converters.keras.cut_at_layers`; layers chosen as Xplique does), and
``apply(params, x)`` calls ``sub_model.stateless_call(trainable, non_trainable, x,
training=False)``: a pure function of its params, so it jits, vmaps and shards like any JAX code.

This front-end needs Keras to run the JAX backend (``KERAS_BACKEND=jax`` before Keras is first
imported). `fastfem.converters.from_keras` (and `fastfem.converters.load`) pick it then, and
hand a model on the TensorFlow backend to `fastfem.converters.tf_models.from_tf` (tf2jax).

CPU: when JAX runs on CPU, depthwise and 1x1 convolutions run in forms XLA:CPU runs faster
(`fastfem.converters.cpu_convs`, applied to every `FeatureExtractor`; ``FASTFEM_CPU_CONVS`` =
auto | on | off).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from .feature_extractor import FeatureExtractor, features_apply
from .keras import LayerSpec, cut_at_layers, image_input_shape, import_keras

SOURCE = "keras-jax (stateless_call)"


def from_keras_jax(
    model: Any,
    layers: LayerSpec | Sequence[LayerSpec] = None,
    include_output: bool = False,
) -> FeatureExtractor:
    """A `FeatureExtractor` running a Keras 3 model with the JAX backend's ``stateless_call``.

    Args:
      model: a built Functional or Sequential ``keras.Model`` (one image input).
      layers: one layer spec (None / name / index, as Xplique) or a sequence of them.
      include_output: also return the model's output (predictions from the same forward pass).
    """
    keras = import_keras()
    if not isinstance(model, keras.Model):
        raise TypeError(f"expected a keras.Model; got {type(model).__name__}")
    backend = keras.backend.backend()
    if backend != "jax":
        raise RuntimeError(
            f"Keras in this process runs the {backend!r} backend; the native path needs JAX "
            "(KERAS_BACKEND=jax before Keras is first imported). fastfem.converters.from_keras "
            "and load take Keras models on the TensorFlow backend too (converted by tf2jax)."
        )
    input_shape = image_input_shape(model)
    sub, names = cut_at_layers(model, layers, include_output, keras)
    n_layers = len(names)
    params = (
        [jnp.asarray(v.value) for v in sub.trainable_variables],
        [jnp.asarray(v.value) for v in sub.non_trainable_variables],
    )
    apply = features_apply(_stateless_call(sub), n_layers, include_output)
    return FeatureExtractor(
        apply=apply,
        params=params,
        input_shape=input_shape,
        layer_names=names,
        has_output=include_output,
        source=SOURCE,
    )


def _stateless_call(sub: Any) -> Callable[[Any, jax.Array], Any]:
    """``(params, x) -> outputs`` running the sub-model's JAX-backend ``stateless_call``;
    ``params`` = (trainable, non-trainable) variable values."""

    def call(p: Any, x: jax.Array) -> Any:
        trainable, non_trainable = p
        out, _ = sub.stateless_call(trainable, non_trainable, x, training=False)
        return out

    return call
