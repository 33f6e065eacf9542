"""Keras 3 front-end: a Keras model run by the JAX backend through ``stateless_call``.

The model's graph is cut at the chosen layer(s) (a sub-``keras.Model`` sharing the layers), and
``apply(params, x)`` calls ``sub_model.stateless_call(trainable, non_trainable, x,
training=False)``: a pure function of its params, so it jits, vmaps and shards like any JAX code.

Layer selection follows Xplique exactly: ``None`` -> the last layer of ``model.layers`` that has a
``filters`` attribute (Conv1D/2D/3D, SeparableConv, ConvTranspose; not DepthwiseConv2D, which has
no ``filters``); an ``int`` -> ``model.layers[i]``; a ``str`` -> ``model.get_layer(name)``. For
keras.applications ResNet50 that is ``conv5_block3_3_conv`` (linear, before BN and the residual
add, so activations and channel means can be negative); for VGG16 ``block5_conv3`` (post-ReLU).

CPU: when JAX runs on CPU, depthwise and 1x1 convolutions run in forms XLA:CPU runs faster
(`fastfem.converters.conv_forms`, applied to every `FeatureExtractor`; ``FASTFEM_CPU_CONVS`` =
auto | on | off).

Backend: Keras 3 picks its backend once, at its first import. ``import fastfem`` selects JAX when
Keras is not imported yet and ``KERAS_BACKEND`` is unset (`prefer_jax_backend`). In a process
whose Keras already runs TensorFlow (the common case for TF users), `from_keras` hands the model
to `fastfem.converters.tf_graph.from_tf`: the sub-model is converted to JAX ops by tf2jax, or,
when tf2jax is missing or cannot convert an op, its TensorFlow ``stateless_call`` is compiled
with XLA and inlined into the JAX step by ``jax2tf.call_tf`` (CPU/GPU; not TPU).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from .feature_extractor import FeatureExtractor, Features

LayerSpec = str | int | None

SOURCES = {
    "jax": "keras-jax (stateless_call)",
    "tensorflow": "keras-tensorflow (stateless_call bridged by jax2tf.call_tf)",
}


def prefer_jax_backend() -> None:
    """Make JAX the Keras backend if Keras is not imported yet and KERAS_BACKEND is unset."""
    if "keras" not in sys.modules:
        os.environ.setdefault("KERAS_BACKEND", "jax")


def import_keras() -> Any:
    """Import Keras, choosing the JAX backend if nobody has imported Keras yet."""
    prefer_jax_backend()
    import keras

    return keras


def keras_backend() -> str:
    """The backend of the Keras imported in this process (importing it if needed)."""
    return import_keras().backend.backend()


def conv_layer_names(model: Any) -> list[str]:
    """Names of the layers of ``model.layers`` that have a ``filters`` attribute, in order."""
    return [layer.name for layer in model.layers if hasattr(layer, "filters")]


def _candidates_text(model: Any) -> str:
    convs = conv_layer_names(model)
    return ", ".join(repr(n) for n in convs) if convs else "(none: the model has no conv layer)"


def resolve_layer(model: Any, spec: LayerSpec) -> Any:
    """Find the explained layer as Xplique does (None -> last layer with ``filters``)."""
    if spec is None:
        for layer in reversed(model.layers):
            if hasattr(layer, "filters"):
                return layer
        raise ValueError(
            f"model {model.name!r} has no convolutional layer (no layer with a `filters` "
            "attribute); pass `conv_layer=` the name or index of the layer to explain"
        )
    if isinstance(spec, bool) or not isinstance(spec, (str, int)):
        raise TypeError(f"conv_layer must be None, a layer name or an index; got {spec!r}")
    if isinstance(spec, int):
        n = len(model.layers)
        if not -n <= spec < n:
            raise ValueError(
                f"layer index {spec} out of range: model {model.name!r} has {n} layers; "
                f"conv layers: {_candidates_text(model)}"
            )
        return model.layers[spec]
    for layer in model.layers:
        if layer.name == spec:
            return layer
    raise ValueError(
        f"no layer named {spec!r} in model {model.name!r}; conv layers: {_candidates_text(model)}"
    )


def cut_at_layers(
    model: Any, layers: LayerSpec | Sequence[LayerSpec], include_output: bool, keras_mod: Any
) -> tuple[Any, tuple[str, ...]]:
    """The sub-model from ``model``'s one input to the chosen layers' outputs (+ its output).

    ``keras_mod`` is the Keras that built ``model`` (Keras 3, or ``tf_keras`` for Keras 2).
    Every chosen layer must output (N, h, w, C); otherwise a ValueError lists the conv layers.
    Returns the sub-model and the chosen layers' names.
    """
    chosen = [resolve_layer(model, spec) for spec in _as_list(layers)]
    outputs = [layer.output for layer in chosen]
    for layer, out in zip(chosen, outputs, strict=True):
        if len(out.shape) != 4:
            raise ValueError(
                f"layer {layer.name!r} outputs shape {tuple(out.shape)}, not (N, h, w, C); "
                f"choose a convolutional layer: {_candidates_text(model)}"
            )
    if include_output:
        outputs = outputs + [model.outputs[0]]
    sub = keras_mod.Model(model.inputs[0], outputs, name=f"{model.name}_features")
    return sub, tuple(layer.name for layer in chosen)


def load_keras_file(path: str | os.PathLike, safe_mode: bool = True) -> Any:
    """Load a ``.keras`` or legacy ``.h5`` model file (``safe_mode=True``: no code executed)."""
    keras = import_keras()
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"model file not found: {p}")
    if p.suffix not in (".keras", ".h5", ".hdf5"):
        raise ValueError(f"unsupported model file {p.name!r}: expected a .keras or .h5 file")
    try:
        return keras.saving.load_model(p, safe_mode=safe_mode, compile=False)
    except ValueError as err:
        if "safe_mode" in str(err) or "Lambda" in str(err):
            raise ValueError(
                f"{p.name} contains code (e.g. a Lambda layer) that Keras will not deserialize "
                "with safe_mode=True; if you trust the file, load it with safe_mode=False"
            ) from err
        raise


def _as_list(layers: LayerSpec | Sequence[LayerSpec]) -> list[LayerSpec]:
    if layers is None or isinstance(layers, (str, int)):
        return [layers]
    return list(layers)


def from_keras(
    model: Any,
    layers: LayerSpec | Sequence[LayerSpec] = None,
    include_output: bool = False,
) -> FeatureExtractor:
    """A `FeatureExtractor` for a Keras 3 model under the JAX backend.

    Args:
      model: a built Functional or Sequential ``keras.Model``, or a path to a .keras/.h5 file.
      layers: one layer spec (None / name / index, as Xplique) or a sequence of them.
      include_output: also return the model's output (predictions from the same forward pass).
    """
    keras = import_keras()
    if isinstance(model, (str, os.PathLike)):
        model = load_keras_file(model)
    if not isinstance(model, keras.Model):
        raise TypeError(f"expected a keras.Model or a model file path; got {type(model).__name__}")
    backend = keras.backend.backend()
    if backend not in ("jax", "tensorflow"):
        raise RuntimeError(
            f"Keras in this process runs the {backend!r} backend; fastfem runs Keras models with "
            "the JAX backend (or the TensorFlow one, bridged by jax2tf.call_tf). Set "
            "KERAS_BACKEND=jax before Keras is first imported."
        )
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if not inputs:
        raise ValueError(
            f"model {model.name!r} has no defined inputs (a subclassed or unbuilt model); build a "
            "Functional/Sequential model with keras.Input, or use fastfem.converters.from_fn"
        )
    if len(inputs) != 1:
        raise ValueError(
            f"model {model.name!r} has {len(inputs)} inputs; FEM needs one image input"
        )

    if backend == "tensorflow":
        # Keras already runs TensorFlow: convert the sub-model with tf2jax (call_tf fallback).
        from .tf_graph import from_tf

        return from_tf(model, layers, include_output=include_output)

    sub, names = cut_at_layers(model, layers, include_output, keras)
    n_layers = len(names)

    params = (
        [jnp.asarray(v.value) for v in sub.trainable_variables],
        [jnp.asarray(v.value) for v in sub.non_trainable_variables],
    )

    call = _stateless_call_jax(sub) if backend == "jax" else _stateless_call_tf(sub)

    def apply(p: Any, x: jax.Array) -> Features:
        out = call(p, x)
        out = out if isinstance(out, (list, tuple)) else [out]
        return Features(
            activations=tuple(out[:n_layers]),
            output=out[n_layers] if include_output else None,
        )

    return FeatureExtractor(
        apply=apply,
        params=params,
        input_shape=tuple(inputs[0].shape[1:]),
        layer_names=names,
        has_output=include_output,
        source=SOURCES[backend],
    )


def _stateless_call_jax(sub: Any):
    """``(params, x) -> outputs`` running the sub-model's JAX-backend ``stateless_call``."""

    def call(p: Any, x: jax.Array) -> Any:
        trainable, non_trainable = p
        out, _ = sub.stateless_call(trainable, non_trainable, x, training=False)
        return out

    return call


def _stateless_call_tf(sub: Any):
    """The same through TensorFlow: the sub-model's TF ``stateless_call`` compiled with XLA and
    embedded in the JAX computation by ``jax2tf.call_tf`` (weights are arguments, not captured
    constants). Runs under ``jax.jit`` on CPU and GPU; call_tf does not run on TPU.
    """
    import tensorflow as tf
    from jax.experimental import jax2tf

    def tf_call(trainable: list, non_trainable: list, x: Any) -> Any:
        out, _ = sub.stateless_call(trainable, non_trainable, x, training=False)
        return out

    bridged = jax2tf.call_tf(
        tf.function(tf_call, jit_compile=True, autograph=False), has_side_effects=False
    )

    def call(p: Any, x: jax.Array) -> Any:
        trainable, non_trainable = p
        return bridged(list(trainable), list(non_trainable), x)

    return call
