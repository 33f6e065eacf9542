"""`load`: the one dispatcher that turns whatever model a user has into a `FeatureExtractor`.

The front-ends (`keras_jax`, `tf_models`, `savedmodel`, `flax`, `feature_extractor.from_fn`,
`export.load_extractor`) each take one kind of model and never hand a model to one another;
choosing between them happens here, in `load` and in `from_keras`.

Which path it takes (the extractor's ``source`` says it, and ``logging`` at INFO level too):

=======================================================  =========================================
model                                                    path
=======================================================  =========================================
`FeatureExtractor`                                       returned as is
fastfem artifact directory (``fastfem convert``)         `export.load_extractor` (JAX only)
TF SavedModel directory                                  `savedmodel.from_savedmodel` (tf2jax, else
                                                         call_tf)
``.keras`` file, Keras 3 model (JAX backend)             `keras_jax.from_keras_jax` (native
                                                         stateless_call)
``.keras`` file, Keras 3 model (TensorFlow backend)      `tf_models.from_tf` (tf2jax, else call_tf)
``.h5`` file                                             Keras 3 (as above); if Keras 3 cannot read
                                                         it, tf_keras + `tf_models.from_tf`
tf_keras (Keras 2) model, ``tf.function``                `tf_models.from_tf`
Flax linen ``(module, variables)``, NNX module           `flax.from_flax` (``input_shape=`` needed)
``(apply_fn, params)`` with ``input_shape=``             `feature_extractor.from_fn`
=======================================================  =========================================

fastfem does not choose Keras's backend: a Keras 3 model goes the native way when the process
runs Keras on JAX (``KERAS_BACKEND=jax`` before Keras is first imported; the fastest), and
through tf2jax when it runs TensorFlow (0.94x of native on ResNet50 224, CPU).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import export, flax, savedmodel
from .feature_extractor import FeatureExtractor, from_fn
from .keras import LayerSpec, import_keras, is_keras_model, load_keras_file
from .keras2 import check_h5_safe, is_tf_keras_model
from .keras_jax import from_keras_jax
from .tf_models import from_tf, is_tf_function

log = logging.getLogger("fastfem.converters")


def from_keras(
    model: Any,
    layers: LayerSpec | Sequence[LayerSpec] = None,
    include_output: bool = False,
    *,
    method: str = "auto",
) -> FeatureExtractor:
    """A `FeatureExtractor` for a Keras 3 model, on whichever backend this process's Keras runs.

    JAX backend: the native path (`keras_jax.from_keras_jax`, ``stateless_call``). TensorFlow
    backend: the same cut sub-model converted by tf2jax (`tf_models.from_tf`; ``method=`` picks
    ``"tf2jax"`` or ``"call_tf"`` there, ``"auto"`` tries tf2jax first). Other backends: a
    RuntimeError.

    Args:
      model: a built Functional or Sequential ``keras.Model``, or a path to a .keras/.h5 file
        (read by Keras 3, ``safe_mode=True``).
      layers: one layer spec (None / name / index, as Xplique) or a sequence of them.
      include_output: also return the model's output (predictions from the same forward pass).
      method: TensorFlow backend only: ``"auto"``, ``"tf2jax"`` or ``"call_tf"``.
    """
    keras = import_keras()
    if isinstance(model, (str, os.PathLike)):
        model = load_keras_file(model)
    if not isinstance(model, keras.Model):
        raise TypeError(f"expected a keras.Model or a model file path; got {type(model).__name__}")
    backend = keras.backend.backend()
    if backend == "jax":
        return from_keras_jax(model, layers, include_output)
    if backend == "tensorflow":
        return from_tf(model, layers, include_output, method=method)
    raise RuntimeError(
        f"Keras in this process runs the {backend!r} backend; fastfem runs Keras models on the "
        "JAX backend (native) or the TensorFlow one (tf2jax). Set KERAS_BACKEND=jax (or "
        "tensorflow) before Keras is first imported."
    )


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
    if is_keras_model(model):
        return from_keras(model, layers, include_output, method=method)
    if is_tf_keras_model(model) or is_tf_function(model):
        return from_tf(model, layers, include_output, method=method, input_shape=input_shape)
    if isinstance(model, tuple) and len(model) == 2 and flax.is_linen_module(model[0]):
        return flax.from_flax(
            model[0], model[1], layers, input_shape, include_output, options.get("apply_kwargs")
        )
    if flax.is_nnx_module(model):
        return flax.from_flax(model, None, layers, input_shape, include_output)
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


def _load_path(
    p: Path, layers: Any, include_output: bool, method: str, safe_mode: bool, options: dict
) -> FeatureExtractor:
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
    if p.suffix in (".h5", ".hdf5"):
        if safe_mode:
            check_h5_safe(p)
        try:
            model = load_keras_file(p, safe_mode=safe_mode)
        except Exception as err:  # noqa: BLE001 - a Keras 2 file that Keras 3 cannot read
            if "safe_mode" in str(err) or importlib.util.find_spec("tf_keras") is None:
                raise
            log.info("Keras 3 could not read %s (%s); using tf_keras", p.name, err)
            return from_tf(p, layers, include_output, method=method, safe_mode=safe_mode)
    else:
        model = load_keras_file(p, safe_mode=safe_mode)
    return from_keras(model, layers, include_output, method=method)


def export_layers(p: Path) -> list[str]:
    """The layer names recorded in a converted artifact directory."""
    return json.loads((p / export.META_FILE).read_text()).get("layer_names", [])
