"""`load`: one entry point that turns whatever model a user has into a `FeatureExtractor`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from .feature_extractor import FeatureExtractor
from .keras import LayerSpec, from_keras


def load(
    model: Any,
    layers: LayerSpec | Sequence[LayerSpec] = None,
    include_output: bool = False,
) -> FeatureExtractor:
    """Pick the front-end for ``model`` and return its `FeatureExtractor`.

    Accepted: a `FeatureExtractor` (returned as is; ``layers`` must then be None), a Keras 3
    model, or a path to a ``.keras`` / ``.h5`` file.
    """
    if isinstance(model, FeatureExtractor):
        if layers is not None:
            raise ValueError(
                "layers= cannot re-select layers of an existing FeatureExtractor "
                f"(it returns {model.layer_names}); build it with the layers you need"
            )
        if include_output and not model.has_output:
            raise ValueError("this FeatureExtractor was built without the model output")
        return model
    if isinstance(model, (str, os.PathLike)) or _is_keras_model(model):
        return from_keras(model, layers=layers, include_output=include_output)
    raise TypeError(
        f"cannot build a feature extractor from {type(model).__module__}.{type(model).__name__}; "
        "pass a Keras 3 model, a .keras/.h5 path, or a fastfem.converters.FeatureExtractor "
        "(see fastfem.converters.from_fn for a plain JAX function)"
    )


def _is_keras_model(obj: Any) -> bool:
    return any(
        c.__module__.startswith("keras") and c.__name__ in ("Model", "Functional", "Sequential")
        for c in type(obj).__mro__
    )
