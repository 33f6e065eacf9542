"""Model front-ends: everything a user has becomes a `FeatureExtractor` run under ``jax.jit``.

=======================  ===================================================================
front-end                models
=======================  ===================================================================
`from_keras`             Keras 3 models and ``.keras``/``.h5`` files (native under Keras-JAX)
`from_tf`                tf_keras / Keras 2, Keras 3 on TensorFlow, ``.h5``, ``tf.function``
                         (tf2jax conversion; ``jax2tf.call_tf`` fallback)
`from_savedmodel`        TF SavedModels, cut at a tensor picked by name
`from_flax`              Flax linen ``(module, variables)`` and NNX modules
`from_fn`                a plain JAX ``apply(params, x) -> activations``
`load`                   any of the above, or a converted artifact directory; picks the path
`save_extractor`         a portable ``jax.export`` artifact (runs without TensorFlow)
`load_extractor`         reads it back
=======================  ===================================================================

The TensorFlow and Flax front-ends import TensorFlow / Flax only when called.
"""

from typing import Any

from .export import is_artifact, load_extractor, save_extractor
from .feature_extractor import Apply, FeatureExtractor, Features, from_fn
from .keras import (
    conv_layer_names,
    from_keras,
    import_keras,
    load_keras_file,
    prefer_jax_backend,
    resolve_layer,
)
from .load import load

prefer_jax_backend()


def from_tf(*args: Any, **kwargs: Any) -> FeatureExtractor:
    """`fastfem.converters.tf_graph.from_tf` (imported on first use: it needs TensorFlow)."""
    from .tf_graph import from_tf as _from_tf

    return _from_tf(*args, **kwargs)


def from_savedmodel(*args: Any, **kwargs: Any) -> FeatureExtractor:
    """`fastfem.converters.savedmodel.from_savedmodel` (needs TensorFlow)."""
    from .savedmodel import from_savedmodel as _from_savedmodel

    return _from_savedmodel(*args, **kwargs)


def from_flax(*args: Any, **kwargs: Any) -> FeatureExtractor:
    """`fastfem.converters.flax.from_flax` (needs Flax)."""
    from .flax import from_flax as _from_flax

    return _from_flax(*args, **kwargs)


__all__ = [
    "Apply",
    "FeatureExtractor",
    "Features",
    "conv_layer_names",
    "from_fn",
    "from_flax",
    "from_keras",
    "from_savedmodel",
    "from_tf",
    "import_keras",
    "is_artifact",
    "load",
    "load_extractor",
    "load_keras_file",
    "prefer_jax_backend",
    "resolve_layer",
    "save_extractor",
]
