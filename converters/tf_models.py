"""TensorFlow front-end: Keras on TensorFlow, tf_keras / Keras 2 models and ``tf.function`` s.

`from_tf` accepts:

* a Keras 3 model in a process whose Keras runs the TensorFlow backend,
* a ``tf_keras`` (Keras 2) model, or a legacy ``.h5`` file (read by ``tf_keras`` after
  `fastfem.converters.keras2.check_h5_safe`),
* a ``tf.function`` or ``ConcreteFunction`` of one image tensor: the explained tensors are picked
  by name in its graph (`fastfem.converters.tf_graph`), as for SavedModels.

Keras models are cut at the chosen layer(s) as Xplique picks them
(`fastfem.converters.keras.resolve_layer`); the sub-model then runs under ``jax.jit`` through
`fastfem.converters.tf_bridge.tf2jax_or_call_tf`: converted by tf2jax (default; 0.94x of the
native Keras-JAX path on ResNet50 224, CPU), or wrapped by ``jax2tf.call_tf`` (a Keras 3 model
through its TensorFlow ``stateless_call``, a tf_keras model through its frozen graph).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .feature_extractor import FeatureExtractor
from .keras import LayerSpec, cut_at_layers, image_input_shape, import_keras, is_keras_model
from .keras2 import is_tf_keras_model, load_tf_keras_file
from .tf_bridge import Call, check_method, import_tf, tf2jax_convert, tf2jax_or_call_tf
from .tf_graph import GraphFunction, concrete_function, graph_extractor


def is_tf_function(obj: Any) -> bool:
    """A ``tf.function`` (polymorphic or concrete)."""
    return any(
        c.__module__.startswith(("tensorflow.python.eager.", "tensorflow.core.function."))
        for c in type(obj).__mro__
    ) and (hasattr(obj, "get_concrete_function") or hasattr(obj, "structured_outputs"))


def _forward_function(sub: Any, tf: Any) -> Any:
    """``sub(x, training=False)`` as a ``tf.function`` returning a list of tensors."""

    @tf.function(autograph=False)
    def forward(x):
        out = sub(x, training=False)
        return list(out) if isinstance(out, (list, tuple)) else [out]

    return forward


def _tf2jax_keras(sub: Any, input_shape: tuple) -> tuple[Call, dict]:
    """tf2jax conversion of ``sub(x, training=False)``: ``(call, params)``."""
    tf = import_tf()
    spec = tf.TensorSpec((None, *input_shape), tf.float32)
    jax_fn, params = tf2jax_convert(_forward_function(sub, tf), spec)
    params = {k: np.asarray(v) for k, v in params.items()}

    def call(p: Any, x: jax.Array) -> list:
        out, _ = jax_fn(p, x)
        return list(out)

    return call, params


def _call_tf_keras3(sub: Any) -> tuple[Call, tuple]:
    """A Keras 3 (TensorFlow backend) sub-model's ``stateless_call`` compiled with XLA and
    embedded by ``jax2tf.call_tf``; its variable values are the params (arguments, not captured
    constants). CPU and GPU; call_tf does not run on TPU."""
    tf = import_tf()
    from jax.experimental import jax2tf

    def tf_call(trainable: list, non_trainable: list, x: Any) -> Any:
        out, _ = sub.stateless_call(trainable, non_trainable, x, training=False)
        return out

    bridged = jax2tf.call_tf(
        tf.function(tf_call, jit_compile=True, autograph=False), has_side_effects=False
    )

    def call(p: Any, x: jax.Array) -> list:
        trainable, non_trainable = p
        out = bridged(list(trainable), list(non_trainable), x)
        return list(out) if isinstance(out, (list, tuple)) else [out]

    params = (
        [jnp.asarray(v.value) for v in sub.trainable_variables],
        [jnp.asarray(v.value) for v in sub.non_trainable_variables],
    )
    return call, params


def _call_tf_keras2(sub: Any, input_shape: tuple) -> tuple[Call, dict]:
    """A tf_keras sub-model's frozen graph wrapped by call_tf (`GraphFunction.call_tf`)."""
    tf = import_tf()
    concrete = _forward_function(sub, tf).get_concrete_function(
        tf.TensorSpec((None, *input_shape), tf.float32)
    )
    graph = GraphFunction(concrete)
    return graph.call_tf(graph.output_names)


def _keras_model_extractor(
    model: Any, layers: Any, include_output: bool, method: str, keras3: bool
) -> FeatureExtractor:
    """A Keras 3 (TensorFlow backend) or tf_keras model, cut and run by ``method``."""
    import_tf()
    if keras3:
        keras_mod = import_keras()
        if keras_mod.backend.backend() != "tensorflow":
            raise ValueError(
                "this Keras 3 model runs on the JAX backend: use fastfem.converters.from_keras "
                "(the native path); from_tf is for Keras on TensorFlow and tf_keras models"
            )
    else:
        import tf_keras as keras_mod
    input_shape = image_input_shape(model)
    sub, names = cut_at_layers(model, layers, include_output, keras_mod)
    return tf2jax_or_call_tf(
        method,
        lambda: _tf2jax_keras(sub, input_shape),
        (lambda: _call_tf_keras3(sub)) if keras3 else (lambda: _call_tf_keras2(sub, input_shape)),
        input_shape=input_shape,
        layer_names=names,
        include_output=include_output,
    )


def from_tf(
    model: Any,
    layers: LayerSpec | Sequence[LayerSpec] = None,
    include_output: bool = False,
    method: str = "auto",
    input_shape: Sequence[int | None] | None = None,
    safe_mode: bool = True,
) -> FeatureExtractor:
    """A `FeatureExtractor` for a TensorFlow model, converted by tf2jax or wrapped by call_tf.

    Args:
      model: a tf_keras (Keras 2) model, a Keras 3 model under the TensorFlow backend, a legacy
        ``.h5`` path (read with tf_keras), or a ``tf.function`` / ``ConcreteFunction`` of one
        image batch. SavedModel directories: `fastfem.converters.from_savedmodel` (or
        `fastfem.converters.load`, which picks the front-end).
      layers: Keras models: one layer spec (None / name / index, as Xplique) or several. TF
        graphs: tensor names, short names (without the ``StatefulPartitionedCall/`` scopes) or
        layer scopes (``conv_b`` -> the last 4-D tensor of that scope); None -> the layer of the
        last convolution.
      include_output: also return the model's (first) output.
      method: ``"auto"`` (tf2jax, else call_tf), ``"tf2jax"`` or ``"call_tf"``.
      input_shape: (H, W, C) for a ``tf.function`` without an input signature.
      safe_mode: refuse files that would execute stored code (Lambda layers).
    """
    check_method(method)
    if isinstance(model, (str, os.PathLike)):
        if Path(model).is_dir():
            raise ValueError(
                f"{model} is a directory: for a TF SavedModel use "
                "fastfem.converters.from_savedmodel, or fastfem.converters.load (any model)"
            )
        model = load_tf_keras_file(model, safe_mode=safe_mode)
    if is_keras_model(model):
        return _keras_model_extractor(model, layers, include_output, method, keras3=True)
    if is_tf_keras_model(model):
        return _keras_model_extractor(model, layers, include_output, method, keras3=False)
    if is_tf_function(model):
        graph = GraphFunction(concrete_function(model, input_shape))
        return graph_extractor(graph, layers, include_output, method, what="tf.function")
    raise TypeError(
        f"from_tf cannot use {type(model).__module__}.{type(model).__name__}: pass a tf_keras "
        "model, a Keras 3 model on the TensorFlow backend, a .h5 file or a tf.function (TF "
        "SavedModels: from_savedmodel; any model: fastfem.converters.load)"
    )
