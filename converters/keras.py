"""Keras 3 models, whatever the backend: import, recognise, load files, pick layers, cut.

Shared by the Keras front-ends (`fastfem.converters.keras_jax` on the JAX backend,
`fastfem.converters.tf_models` on TensorFlow, and tf_keras / Keras 2 models there too). This
module imports no other converters module.

Backend: Keras 3 picks its backend once per process, at its first import, from
``KERAS_BACKEND`` (else ``~/.keras/keras.json``, else TensorFlow). fastfem never sets it:
`import_keras` imports Keras as the process configured it.

Layer selection follows Xplique exactly (`resolve_layer`): ``None`` -> the last layer of
``model.layers`` that has a ``filters`` attribute (Conv1D/2D/3D, SeparableConv, ConvTranspose; not
DepthwiseConv2D, which has no ``filters``); an ``int`` -> ``model.layers[i]``; a ``str`` -> the
layer of that name. For keras.applications ResNet50 that is ``conv5_block3_3_conv`` (linear,
before BN and the residual add, so activations and channel means can be negative); for VGG16
``block5_conv3`` (post-ReLU).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: One explained layer: None (Xplique's default), a layer name, or an index into model.layers.
LayerSpec = str | int | None

#: Class names of Keras 3 models (Functional and Sequential derive from Model).
_MODEL_CLASSES = ("Model", "Functional", "Sequential")


#: How a command-line user loads a model file that holds code (a Lambda layer) they trust:
#: only ``fastfem convert`` takes ``--unsafe``; the other commands then run its artifact.
UNSAFE_HINT = "(command line: fastfem convert --unsafe, then --model the converted folder)"


def import_keras() -> Any:
    """``import keras`` (Keras 3), with the backend the process chose; fastfem sets none."""
    import keras

    return keras


def is_keras_model(obj: Any) -> bool:
    """Whether ``obj`` is a Keras 3 model (``keras.Model``, Functional, Sequential, subclasses).

    Decided from the class's MRO, so Keras is not imported to answer. Keras 2 models
    (``tf_keras``) are not Keras 3 models (`fastfem.converters.keras2.is_tf_keras_model`).
    """
    return any(
        c.__module__.startswith("keras.src.") and c.__name__ in _MODEL_CLASSES
        for c in type(obj).__mro__
    )


def as_layer_list(layers: LayerSpec | Sequence[LayerSpec]) -> list[LayerSpec]:
    """One layer spec or a sequence of them, as a list (None -> ``[None]``: the default)."""
    if layers is None or isinstance(layers, (str, int)):
        return [layers]
    return list(layers)


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


def image_input_shape(model: Any) -> tuple[int | None, ...]:
    """The per-sample shape (H, W, C) of ``model``'s one input (None where it is free).

    A ValueError when the model has no defined inputs (subclassed, unbuilt) or several.
    """
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if not inputs:
        raise ValueError(
            f"model {model.name!r} has no defined inputs (a subclassed or unbuilt model); build a "
            "Functional/Sequential model with keras.Input, or wrap the model as a function "
            "(fastfem.converters.from_fn for JAX, from_tf for a tf.function)"
        )
    if len(inputs) != 1:
        raise ValueError(f"model {model.name!r} has {len(inputs)} inputs; FEM needs one image")
    return tuple(None if d is None else int(d) for d in inputs[0].shape[1:])


def cut_at_layers(
    model: Any, layers: LayerSpec | Sequence[LayerSpec], include_output: bool, keras_mod: Any
) -> tuple[Any, tuple[str, ...]]:
    """The sub-model from ``model``'s one input to the chosen layers' outputs (+ its output).

    ``keras_mod`` is the Keras that built ``model`` (Keras 3, or ``tf_keras`` for Keras 2).
    Every chosen layer must output (N, h, w, C); otherwise a ValueError lists the conv layers.
    Returns the sub-model (sharing ``model``'s layers and weights) and the chosen layers' names.
    """
    chosen = [resolve_layer(model, spec) for spec in as_layer_list(layers)]
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
    """Load a ``.keras`` or legacy ``.h5`` model file with Keras 3 (``safe_mode=True``: no
    stored code is executed; a file with a Lambda layer gets an error naming ``safe_mode``)."""
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
                "with safe_mode=True; if you trust the file, load it with safe_mode=False "
                f"{UNSAFE_HINT}"
            ) from err
        raise
