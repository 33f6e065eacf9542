"""CPU forms of Keras-JAX convolutions, swapped in only while fastfem traces a Keras model.

XLA:CPU is slow on two kinds of convolution that mobile and residual CNNs are made of:

* depthwise (``feature_group_count = C``): 6-40x slower than a sum of strided slices
  (`fastfem.converters.depthwise`);
* 1x1 (pointwise): 1-11x slower than a matrix product (`fastfem.converters.pointwise`).

`keras_cpu_convs` replaces the Keras JAX backend's ``depthwise_conv`` and ``conv`` by those forms
for the duration of a block. ``keras.ops.depthwise_conv``/``keras.ops.conv`` and the backend's
``separable_conv`` look the functions up in the backend module at call time, so the swap reaches
Conv1D/2D/3D, DepthwiseConv1D/2D and SeparableConv1D/2D. The originals are restored on exit,
also on error.

`cpu_forms_wanted` decides: environment variable ``FASTFEM_CPU_CONVS`` = ``auto`` (default: on
when JAX's default backend is CPU), ``on`` or ``off``.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
from collections.abc import Iterator

import jax

from .depthwise import keras_depthwise_conv
from .pointwise import keras_conv

KERAS_JAX_NN = "keras.src.backend.jax.nn"
ENV_VAR = "FASTFEM_CPU_CONVS"
MODES = ("auto", "on", "off")


def cpu_forms_wanted(platform: str | None = None) -> bool:
    """Whether to trace the CPU forms: ``FASTFEM_CPU_CONVS`` on / off, or auto = on CPU.

    ``platform`` defaults to ``jax.default_backend()`` (what jit compiles for unless told
    otherwise).
    """
    mode = os.environ.get(ENV_VAR, "auto").strip().lower()
    if mode not in MODES:
        raise ValueError(f"{ENV_VAR} must be one of {MODES}; got {mode!r}")
    if mode != "auto":
        return mode == "on"
    return (platform or jax.default_backend()) == "cpu"


@contextlib.contextmanager
def keras_cpu_convs(enabled: bool = True) -> Iterator[None]:
    """While the block runs, the Keras JAX backend's ``depthwise_conv`` and ``conv`` are the CPU
    forms (module docstring); restored on exit. ``enabled=False``: a no-op.

    Not thread-safe: Keras-JAX code traced by another thread meanwhile sees the same swap
    (which computes the same values, to float32 rounding).
    """
    if not enabled:
        yield
        return
    module = importlib.import_module(KERAS_JAX_NN)
    originals = {"depthwise_conv": module.depthwise_conv, "conv": module.conv}
    module.depthwise_conv = keras_depthwise_conv
    module.conv = functools.partial(keras_conv, fallback=originals["conv"])
    try:
        yield
    finally:
        for name, fn in originals.items():
            setattr(module, name, fn)
