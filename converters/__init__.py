"""Model front-ends: everything a user has becomes a `FeatureExtractor` run under ``jax.jit``.

=======================  ===================================================================
front-end                models
=======================  ===================================================================
`from_keras`             Keras 3 models and ``.keras``/``.h5`` files: native under Keras-JAX,
                         through `from_tf` under Keras-TensorFlow
`from_tf`                tf_keras / Keras 2, Keras 3 on TensorFlow, ``.h5``, ``tf.function``
                         (tf2jax conversion; ``jax2tf.call_tf`` fallback)
`from_savedmodel`        TF SavedModels, cut at a tensor picked by name
`from_flax`              Flax linen ``(module, variables)`` and NNX modules
`from_fn`                a plain JAX ``apply(params, x) -> activations``
`load`                   any of the above, or a converted artifact directory; picks the path
`save_extractor`         a portable ``jax.export`` artifact (runs without TensorFlow)
`load_extractor`         reads it back
=======================  ===================================================================

The TensorFlow and Flax front-ends import TensorFlow / Flax only when called. Importing
fastfem changes nothing in the process: Keras keeps the backend the process chose
(``KERAS_BACKEND``); a Keras model goes the native way on JAX and through tf2jax on TensorFlow.

Modules (each front-end handles one kind of model; only `load` dispatches between them):

=======================  ===================================================================
module                   purpose
=======================  ===================================================================
`feature_extractor`      `FeatureExtractor`, `Features`, `from_fn`
`keras`                  Keras 3 helpers: import, recognise, load files, pick layers as
                         Xplique, cut a sub-model (no other converters module imported)
`keras2`                 tf_keras / Keras 2: recognise models, read legacy ``.h5`` safely
`keras_jax`              Keras 3 on JAX, native ``stateless_call``
`tf_bridge`              a TF computation under ``jax.jit``: tf2jax, else ``call_tf``
`tf_graph`               TF graphs cut at tensors picked by name
`tf_models`              `from_tf`: Keras on TensorFlow, tf_keras, ``tf.function``
`savedmodel`             `from_savedmodel`
`flax`                   `from_flax`
`export`                 `save_extractor` / `load_extractor` (``jax.export`` artifacts)
`load`                   `load` and `from_keras`: the one dispatcher
`cpu_convs`              1x1 and depthwise convolutions in their fast XLA:CPU forms, applied
                         to every extractor
=======================  ===================================================================
"""

from .export import is_artifact, load_extractor, save_extractor
from .feature_extractor import Apply, FeatureExtractor, Features, from_fn
from .flax import from_flax
from .keras import conv_layer_names, import_keras, is_keras_model, load_keras_file, resolve_layer
from .load import from_keras, load
from .savedmodel import from_savedmodel
from .tf_models import from_tf

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
    "is_keras_model",
    "load",
    "load_extractor",
    "load_keras_file",
    "resolve_layer",
    "save_extractor",
]
