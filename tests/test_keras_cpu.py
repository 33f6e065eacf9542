"""CPU forms of Keras-JAX convolutions (`fastfem.converters.pointwise`, `.keras_cpu`).

* `pointwise_conv_dot` matches ``lax.conv_general_dilated`` with a 1x1 kernel (1D/2D, stride
  1/2, valid/same, channels_first); other kernels fall back to the backend's conv.
* `keras_cpu_convs` swaps the backend's ``conv`` and ``depthwise_conv`` only inside the block
  (restored on exit, also on error); ``FASTFEM_CPU_CONVS`` picks auto / on / off.
* A Keras model with Conv2D (3x3 and 1x1), DepthwiseConv2D (stride 2, depth multiplier 2,
  dilation) and SeparableConv2D traced by `from_keras` with the CPU forms gives the activations
  of the stock backend to 1e-5 relative, and its jaxpr has no grouped or 1x1 convolution left.
"""

from __future__ import annotations

import importlib
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from fastfem.converters import from_keras, import_keras, keras_cpu, pointwise
from jax import lax

RTOL = 1e-5


def rel_err(a, ref) -> float:
    return float(np.max(np.abs(np.asarray(a) - np.asarray(ref))) / np.max(np.abs(np.asarray(ref))))


@pytest.mark.parametrize(
    "rank,stride,padding,channels_first",
    list(itertools.product((1, 2), (1, 2), ("valid", "same"), (False, True))),
)
def test_pointwise_matches_lax(rank, stride, padding, channels_first):
    rng = np.random.default_rng(rank * 10 + stride)
    spatial = "HW"[:rank]
    fmt = ("NC" + spatial) if channels_first else ("N" + spatial + "C")
    size = (11, 8)[:rank]
    shape = (3, 7, *size) if channels_first else (3, *size, 7)
    x = jnp.asarray(rng.standard_normal(shape, np.float32))
    w = jnp.asarray(rng.standard_normal((*((1,) * rank), 7, 5), np.float32))
    ref = lax.conv_general_dilated(
        x, w, (stride,) * rank, padding.upper(), dimension_numbers=(fmt, spatial + "IO", fmt)
    )
    got = pointwise.keras_conv(
        x,
        w,
        stride,
        padding,
        "channels_first" if channels_first else "channels_last",
        fallback=lambda *a: pytest.fail("a 1x1 conv must not fall back"),
    )
    assert got.shape == ref.shape
    assert rel_err(got, ref) < RTOL


@pytest.mark.parametrize("kernel_shape", [(3, 3, 4, 5), (1, 1, 2, 5)])  # 3x3; grouped 1x1
def test_other_convs_fall_back(kernel_shape):
    x = jnp.ones((1, 6, 6, 4))
    calls = []
    out = pointwise.keras_conv(
        x, jnp.ones(kernel_shape), 1, "same", "channels_last", fallback=lambda *a: calls.append(a)
    )
    assert out is None and len(calls) == 1


def test_env_var_selects(monkeypatch):
    monkeypatch.setenv(keras_cpu.ENV_VAR, "off")
    assert not keras_cpu.cpu_forms_wanted("cpu")
    monkeypatch.setenv(keras_cpu.ENV_VAR, "on")
    assert keras_cpu.cpu_forms_wanted("gpu")
    monkeypatch.setenv(keras_cpu.ENV_VAR, "auto")
    assert keras_cpu.cpu_forms_wanted("cpu") and not keras_cpu.cpu_forms_wanted("gpu")
    monkeypatch.setenv(keras_cpu.ENV_VAR, "fast")
    with pytest.raises(ValueError, match=keras_cpu.ENV_VAR):
        keras_cpu.cpu_forms_wanted("cpu")


def test_swap_is_scoped_and_restored():
    module = importlib.import_module(keras_cpu.KERAS_JAX_NN)
    conv, depthwise_conv = module.conv, module.depthwise_conv
    with keras_cpu.keras_cpu_convs():
        assert module.depthwise_conv is not depthwise_conv and module.conv is not conv
    assert (module.conv, module.depthwise_conv) == (conv, depthwise_conv)
    with pytest.raises(RuntimeError, match="boom"), keras_cpu.keras_cpu_convs():
        raise RuntimeError("boom")
    assert (module.conv, module.depthwise_conv) == (conv, depthwise_conv)
    with keras_cpu.keras_cpu_convs(enabled=False):
        assert (module.conv, module.depthwise_conv) == (conv, depthwise_conv)


def _mobile_model():
    keras = import_keras()
    inp = keras.Input((21, 21, 3))
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    h = keras.layers.ZeroPadding2D(((0, 1), (0, 1)))(h)
    h = keras.layers.DepthwiseConv2D(3, strides=2, padding="valid", activation="relu6")(h)
    h = keras.layers.Conv2D(8, 1, name="expand")(h)
    h = keras.layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2, dilation_rate=2)(h)
    h = keras.layers.SeparableConv2D(12, 3, padding="same", name="sep")(h)
    h = keras.layers.Conv2D(6, 1, strides=2, name="last")(h)
    model = keras.Model(inp, h)
    rng = np.random.default_rng(11)
    model.set_weights([rng.standard_normal(w.shape).astype(np.float32) for w in model.weights])
    return model


def test_keras_model_traced_with_cpu_forms_matches_stock(monkeypatch):
    """from_keras with the CPU forms (env on) vs the stock backend (env off, the reference)."""
    model = _mobile_model()
    x = jnp.asarray(np.random.default_rng(12).random((4, 21, 21, 3), np.float32))
    module = importlib.import_module(keras_cpu.KERAS_JAX_NN)
    originals = (module.conv, module.depthwise_conv)

    def activations(mode: str) -> tuple[list[np.ndarray], str]:
        monkeypatch.setenv(keras_cpu.ENV_VAR, mode)
        fx = from_keras(model, ["sep", "last"])
        jaxpr = str(jax.make_jaxpr(fx.apply)(fx.params, x))
        out = jax.jit(fx.apply)(fx.params, x).activations
        assert (module.conv, module.depthwise_conv) == originals
        return [np.asarray(a) for a in out], jaxpr

    stock, stock_jaxpr = activations("off")
    fast, fast_jaxpr = activations("on")
    assert stock_jaxpr.count("conv_general_dilated") == 7  # 3x3, 3 depthwise, 3 1x1
    assert fast_jaxpr.count("conv_general_dilated") == 1  # the first 3x3 Conv2D only
    for a, ref in zip(fast, stock, strict=True):
        assert a.shape == ref.shape
        assert rel_err(a, ref) < RTOL
