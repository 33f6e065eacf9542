"""`load`: one entry point that turns whatever model a user has into a `FeatureExtractor`.

Which path it takes (the extractor's ``source`` says it, and ``logging`` at INFO level too):

=======================================================  =========================================
model                                                    path
=======================================================  =========================================
`FeatureExtractor`                                       returned as is
fastfem artifact directory (``fastfem convert``)         `export.load_extractor` (JAX only)
TF SavedModel directory                                  `savedmodel.from_savedmodel` (tf2jax, else
                                                         call_tf)
``.keras`` file, Keras 3 model (JAX backend)             `keras.from_keras` (native stateless_call)
``.keras`` file, Keras 3 model (TensorFlow backend)      `tf_graph.from_tf` (tf2jax, else call_tf)
``.h5`` file                                             Keras 3 (as above); if Keras 3 cannot read
                                                         it, tf_keras + `tf_graph.from_tf`
tf_keras (Keras 2) model, ``tf.function``                `tf_graph.from_tf`
Flax linen ``(module, variables)``, NNX module           `flax.from_flax` (``input_shape=`` needed)
``(apply_fn, params)`` with ``input_shape=``             `feature_extractor.from_fn`
=======================================================  =========================================
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .feature_extractor import FeatureExtractor, from_fn
from .keras import LayerSpec, from_keras

log = logging.getLogger("fastfem.converters")


def load(
    model: Any,
    layers: LayerSpec | Sequence[LayerSpec] = None,
    include_output: bool = False,
    *,
    layer: LayerSpec | Sequence[LayerSpec] = None,
    input_shape: Sequence[int | None] | None = None,
    method: str = "auto",
    safe_mode: bool = True,
    **options: Any,
) -> FeatureExtractor:
    """Pick the front-end for ``model`` and return its `FeatureExtractor` (see the module table).

    Args:
      model: any model of the table above.
      layers: the explained layer(s): Keras layer names/indices (Xplique's rules), TF tensor or
        layer-scope names, Flax module paths; None -> the last convolution. ``layer=`` is an
        alias.
      include_output: also return the model's output from the same forward pass.
      input_shape: (H, W, C) for models that do not record it (Flax, tf.function, JAX functions).
      method: TF models: ``"auto"``, ``"tf2jax"`` or ``"call_tf"``.
      safe_mode: refuse model files that would execute stored code (Keras Lambda layers, TF
        Python/file ops); set False only for files you trust.
      options: passed to the chosen front-end (e.g. ``signature=`` for SavedModels,
        ``apply_kwargs=`` for linen).
    """
    if layer is not None:
        if layers is not None:
            raise ValueError("give layers= or its alias layer=, not both")
        layers = layer
    extractor = _load(model, layers, include_output, input_shape, method, safe_mode, options)
    log.info("fastfem.converters.load: %s", extractor.source)
    return extractor


def _load(
    model: Any,
    layers: Any,
    include_output: bool,
    input_shape: Any,
    method: str,
    safe_mode: bool,
    options: dict,
) -> FeatureExtractor:
    if isinstance(model, FeatureExtractor):
        if layers is not None:
            raise ValueError(
                "layers= cannot re-select layers of an existing FeatureExtractor "
                f"(it returns {model.layer_names}); build it with the layers you need"
            )
        if include_output and not model.has_output:
            raise ValueError("this FeatureExtractor was built without the model output")
        return model
    if isinstance(model, (str, os.PathLike)):
        return _load_path(Path(model), layers, include_output, method, safe_mode, options)
    if _is_keras_model(model):
        return _keras(model, layers, include_output, method)
    from . import tf_graph

    if tf_graph.is_tf_keras_model(model) or tf_graph.is_tf_function(model):
        return tf_graph.from_tf(
            model, layers, include_output, method=method, input_shape=input_shape
        )
    from . import flax as flax_front

    if isinstance(model, tuple) and len(model) == 2 and flax_front.is_linen_module(model[0]):
        return flax_front.from_flax(
            model[0], model[1], layers, input_shape, include_output, options.get("apply_kwargs")
        )
    if flax_front.is_nnx_module(model):
        return flax_front.from_flax(model, None, layers, input_shape, include_output)
    if isinstance(model, tuple) and len(model) == 2 and callable(model[0]):
        if input_shape is None:
            raise ValueError("an (apply_fn, params) pair needs input_shape=(H, W, C)")
        names = options.get("layer_names") or (
            ("activations",) if layers is None else tuple(_as_names(layers))
        )
        return from_fn(model[0], model[1], input_shape, names, has_output=False)
    raise TypeError(
        f"cannot build a feature extractor from {type(model).__module__}.{type(model).__name__}; "
        "pass a Keras 3 or tf_keras model, a .keras/.h5 file, a SavedModel or fastfem artifact "
        "directory, a tf.function, a Flax (linen module, variables) pair or NNX module, an "
        "(apply_fn, params) pair, or a fastfem.converters.FeatureExtractor"
    )


def _as_names(layers: Any) -> list[str]:
    return [layers] if isinstance(layers, str) else [str(x) for x in layers]


def _keras(model: Any, layers: Any, include_output: bool, method: str) -> FeatureExtractor:
    """Keras 3: native under the JAX backend; through tf_graph under TensorFlow."""
    import keras

    if keras.backend.backend() == "tensorflow":
        from .tf_graph import from_tf

        return from_tf(model, layers, include_output, method=method)
    return from_keras(model, layers=layers, include_output=include_output)


def _load_path(
    p: Path, layers: Any, include_output: bool, method: str, safe_mode: bool, options: dict
) -> FeatureExtractor:
    from . import export, savedmodel

    if export.is_artifact(p):
        if layers is not None:
            raise ValueError(
                f"{p.name} is a converted artifact of layers {export_layers(p)}; layers= cannot "
                "re-select them (convert the model again with the layers you need)"
            )
        extractor = export.load_extractor(p)
        if include_output and not extractor.has_output:
            raise ValueError(
                f"{p.name} was converted without the model output; convert it again with "
                "include_output (command line: fastfem convert --include-output)"
            )
        return extractor
    if savedmodel.is_savedmodel_dir(p):
        return savedmodel.from_savedmodel(
            p, layers, include_output, method=method, safe_mode=safe_mode, **options
        )
    if p.is_dir():
        raise ValueError(
            f"{p} is a directory but neither a SavedModel (saved_model.pb) nor a fastfem "
            "artifact (extractor.json)"
        )
    if not p.exists():
        raise FileNotFoundError(f"model file not found: {p}")
    if p.suffix not in (".keras", ".h5", ".hdf5"):
        raise ValueError(
            f"unsupported model file {p.name!r}: expected a .keras or .h5 file, a SavedModel "
            "directory or a fastfem artifact directory"
        )
    from .keras import load_keras_file

    if p.suffix in (".h5", ".hdf5"):
        from .tf_graph import check_h5_safe

        if safe_mode:
            check_h5_safe(p)
        try:
            model = load_keras_file(p, safe_mode=safe_mode)
        except Exception as err:  # noqa: BLE001 - a Keras 2 file that Keras 3 cannot read
            import importlib.util

            if "safe_mode" in str(err) or importlib.util.find_spec("tf_keras") is None:
                raise
            from .tf_graph import from_tf

            log.info("Keras 3 could not read %s (%s); using tf_keras", p.name, err)
            return from_tf(p, layers, include_output, method=method, safe_mode=safe_mode)
    else:
        model = load_keras_file(p, safe_mode=safe_mode)
    return _keras(model, layers, include_output, method)


def export_layers(p: Path) -> list[str]:
    import json

    from .export import META_FILE

    return json.loads((p / META_FILE).read_text()).get("layer_names", [])


def _is_keras_model(obj: Any) -> bool:
    return any(
        c.__module__.startswith("keras") and c.__name__ in ("Model", "Functional", "Sequential")
        for c in type(obj).__mro__
    )
