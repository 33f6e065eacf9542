"""The taps form of depthwise convolution (`fastfem.converters.depthwise`) and its scoped use.

* `depthwise_conv_taps` matches ``lax.conv_general_dilated(feature_group_count=C)`` (what the
  Keras JAX backend runs) to float32 rounding for 1D/2D, stride 1/2, valid/same, dilation,
  depth multiplier 1/2, odd sizes and channels_first.
* `keras_depthwise_override` restores the backend function on exit (also on error), and a Keras
  model with DepthwiseConv2D and SeparableConv2D traced by `from_keras` on CPU (which uses the
  taps form) gives the same activations as the stock backend.
"""

from __future__ import annotations

import importlib
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from fastfem.converters import depthwise, from_keras, import_keras
from jax import lax

RTOL = 1e-5


def lax_depthwise(x, kernel, strides, padding, dilation, channels_first=False):
    """Keras-JAX's own depthwise conv: kernel (*K, C, M) -> (*K, 1, C*M), groups = C."""
    rank = x.ndim - 2
    channels, mult = kernel.shape[rank], kernel.shape[rank + 1]
    spatial = "HW"[:rank] if rank <= 2 else None
    fmt = ("NC" + spatial) if channels_first else ("N" + spatial + "C")
    return lax.conv_general_dilated(
        x,
        kernel.reshape(*kernel.shape[:rank], 1, channels * mult),
        (strides,) * rank,
        padding.upper(),
        rhs_dilation=(dilation,) * rank,
        dimension_numbers=(fmt, spatial + "IO", fmt),
        feature_group_count=channels,
    )


def rel_err(a: jax.Array, ref: jax.Array) -> float:
    return float(jnp.max(jnp.abs(a - ref)) / jnp.max(jnp.abs(ref)))


CONFIGS = list(
    itertools.product(
        (1, 2),  # rank
        (1, 2),  # stride
        ("valid", "same"),
        (1, 2),  # dilation
        (1, 2),  # depth multiplier
        (3, 5),  # kernel size
    )
)


@pytest.mark.parametrize("rank,stride,padding,dilation,mult,k", CONFIGS)
def test_taps_match_lax(rank, stride, padding, dilation, mult, k):
    rng = np.random.default_rng(rank * 100 + stride * 10 + dilation + mult + k)
    size = (13, 10)[:rank]  # odd and even sizes: SAME's odd pixel goes on the high side
    x = jnp.asarray(rng.standard_normal((3, *size, 6), np.float32))
    w = jnp.asarray(rng.standard_normal((*((k,) * rank), 6, mult), np.float32))
    ref = lax_depthwise(x, w, stride, padding, dilation)
    got = jax.jit(depthwise.depthwise_conv_taps, static_argnums=(2, 3, 4))(
        x, w, stride, padding, dilation
    )
    assert got.shape == ref.shape
    assert got.dtype == ref.dtype
    assert rel_err(got, ref) < RTOL


@pytest.mark.parametrize("stride,padding", [(1, "same"), (2, "valid")])
def test_keras_signature_channels_first(stride, padding):
    rng = np.random.default_rng(7)
    x = jnp.asarray(rng.standard_normal((2, 5, 11, 9), np.float32))  # (N, C, H, W)
    w = jnp.asarray(rng.standard_normal((3, 3, 5, 2), np.float32))
    ref = lax_depthwise(x, w, stride, padding, 1, channels_first=True)
    got = depthwise.keras_depthwise_conv(x, w, stride, padding, "channels_first", 1)
    assert got.shape == ref.shape
    assert rel_err(got, ref) < RTOL


def test_explicit_padding_pairs():
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.standard_normal((2, 9, 8, 4), np.float32))
    w = jnp.asarray(rng.standard_normal((3, 3, 4, 1), np.float32))
    pads = [(2, 0), (1, 3)]
    ref = lax.conv_general_dilated(
        x,
        w.reshape(3, 3, 1, 4),
        (2, 1),
        pads,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=4,
    )
    got = depthwise.depthwise_conv_taps(x, w, (2, 1), pads)
    assert rel_err(got, ref) < RTOL


def test_bfloat16_accumulates_in_float32():
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.standard_normal((2, 8, 8, 4), np.float32))
    w = jnp.asarray(rng.standard_normal((3, 3, 4, 1), np.float32))
    ref = lax_depthwise(x, w, 1, "same", 1)
    got = depthwise.depthwise_conv_taps(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16), 1, "same")
    assert got.dtype == jnp.bfloat16
    assert rel_err(got.astype(jnp.float32), ref) < 2e-2


def test_env_var_selects_form(monkeypatch):
    monkeypatch.setenv(depthwise.ENV_VAR, "lax")
    assert not depthwise.taps_wanted("cpu")
    monkeypatch.setenv(depthwise.ENV_VAR, "taps")
    assert depthwise.taps_wanted("gpu")
    monkeypatch.setenv(depthwise.ENV_VAR, "auto")
    assert depthwise.taps_wanted("cpu") and not depthwise.taps_wanted("gpu")
    monkeypatch.setenv(depthwise.ENV_VAR, "fast")
    with pytest.raises(ValueError, match=depthwise.ENV_VAR):
        depthwise.taps_wanted("cpu")


def test_override_is_scoped_and_restored():
    module = importlib.import_module(depthwise.KERAS_JAX_NN)
    original = module.depthwise_conv
    with depthwise.keras_depthwise_override():
        assert module.depthwise_conv is depthwise.keras_depthwise_conv
    assert module.depthwise_conv is original
    with pytest.raises(RuntimeError, match="boom"), depthwise.keras_depthwise_override():
        raise RuntimeError("boom")
    assert module.depthwise_conv is original
    with depthwise.keras_depthwise_override(enabled=False):
        assert module.depthwise_conv is original


def _depthwise_model():
    keras = import_keras()
    inp = keras.Input((21, 21, 3))
    h = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    h = keras.layers.ZeroPadding2D(((0, 1), (0, 1)))(h)
    h = keras.layers.DepthwiseConv2D(3, strides=2, padding="valid", activation="relu6")(h)
    h = keras.layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2, dilation_rate=2)(h)
    h = keras.layers.SeparableConv2D(12, 3, padding="same", name="sep")(h)
    h = keras.layers.Conv2D(6, 1, name="last")(h)
    model = keras.Model(inp, h)
    rng = np.random.default_rng(11)
    model.set_weights([rng.standard_normal(w.shape).astype(np.float32) for w in model.weights])
    return model


def test_keras_model_traced_with_taps_matches_stock(monkeypatch):
    """from_keras traces with the taps form on CPU; the stock path (env lax) is the reference."""
    model = _depthwise_model()
    x = jnp.asarray(np.random.default_rng(12).random((4, 21, 21, 3), np.float32))
    module = importlib.import_module(depthwise.KERAS_JAX_NN)
    original = module.depthwise_conv

    def activations(mode: str) -> tuple[np.ndarray, str]:
        monkeypatch.setenv(depthwise.ENV_VAR, mode)
        fx = from_keras(model, ["sep", "last"])
        jaxpr = str(jax.make_jaxpr(fx.apply)(fx.params, x))
        out = jax.jit(fx.apply)(fx.params, x).activations
        assert module.depthwise_conv is original
        return [np.asarray(a) for a in out], jaxpr

    stock, stock_jaxpr = activations("lax")
    taps, taps_jaxpr = activations("taps")
    assert "feature_group_count=8" in stock_jaxpr
    assert "feature_group_count=8" not in taps_jaxpr
    for a, ref in zip(taps, stock, strict=True):
        assert a.shape == ref.shape
        assert float(np.max(np.abs(a - ref)) / np.max(np.abs(ref))) < RTOL
