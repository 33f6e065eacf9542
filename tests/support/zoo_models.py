"""The architecture zoo: keras.applications models with fixed, backend-independent weights.

Both the pytest process (Keras on JAX) and the TensorFlow subprocess build the same models and
must get the same weights without shipping files: the variables are created under a
`keras.StatelessScope` (so Keras's own random initializers never run: under JAX each of them
would compile an XLA program per variable shape, ~15 s per model) and then initialised from a
NumPy generator seeded by the variable's index, with He-normal kernels and benign
normalisation statistics so that activations stay O(1) through every depth.
"""

from __future__ import annotations

import zlib

import numpy as np

#: name -> (input size, inner layer). Inputs are small but keep the default layer at 3x3 or more:
#: with k = 2 a FEM mask needs a z-score >= 2, and over n positions the largest is sqrt(n - 1).
#: Inner layers have fixed names (InceptionV3's convs are numbered per process, "mixed5" is not).
ZOO = {
    "ResNet50": (96, "conv4_block1_0_conv"),
    "MobileNetV2": (96, "block_8_project"),
    "EfficientNetB0": (96, "block5a_expand_conv"),
    "DenseNet121": (96, "conv4_block11_2_conv"),
    "VGG16": (48, "block3_conv3"),
    "InceptionV3": (139, "mixed5"),
    "ConvNeXtTiny": (96, "convnext_tiny_stage_2_block_0_pointwise_conv_1"),
}


def _value(path: str, shape: tuple, dtype: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, zlib.crc32(path.rsplit("/", 1)[-1].encode())])
    name = path.lower()
    shape = tuple(int(d) for d in shape)
    if "variance" in name:
        v = rng.uniform(0.5, 1.5, shape)
    elif "mean" in name:
        v = rng.normal(0.0, 0.1, shape)
    elif name.endswith("gamma") or name.endswith("scale"):
        v = rng.uniform(0.5, 1.0, shape)
    elif name.endswith("beta") or name.endswith("bias") or len(shape) <= 1:
        v = rng.normal(0.0, 0.05, shape)
    else:
        fan_in = int(np.prod(shape[:-2] if "depthwise" in name else shape[:-1])) or 1
        v = rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
    return v.astype(dtype)


def build(name: str, size: int | None = None):
    """``keras.applications.<name>`` (no top, random fixed weights) at ``size`` x ``size`` x 3."""
    import keras

    size = size or ZOO[name][0]
    ctor = getattr(keras.applications, name)
    late = []
    with keras.StatelessScope():
        model = ctor(weights=None, include_top=False, input_shape=(size, size, 3))
        for i, v in enumerate(model.variables):
            if "float" not in str(v.dtype):
                continue
            value = _value(v.path, v.shape, str(v.dtype), i)
            if getattr(v, "_initializer", None) is not None:  # Keras internals: skip its init
                v._initializer = lambda shape, dtype, value=value: value  # noqa: B023
            else:
                late.append((v, value))
    for v, value in late:  # if Keras changes its internals: slower, same weights
        v.assign(value)
    return model


def signature(model) -> list[tuple[str, tuple]]:
    """(path tail, shape) of every variable: must match across backends for equal weights."""
    return [(v.path.rsplit("/", 1)[-1], tuple(v.shape)) for v in model.variables]
