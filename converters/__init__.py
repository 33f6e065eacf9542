"""Model front-ends: everything a user has becomes a `FeatureExtractor` run under ``jax.jit``."""

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

__all__ = [
    "Apply",
    "FeatureExtractor",
    "Features",
    "conv_layer_names",
    "from_fn",
    "from_keras",
    "import_keras",
    "load",
    "load_keras_file",
    "prefer_jax_backend",
    "resolve_layer",
]
