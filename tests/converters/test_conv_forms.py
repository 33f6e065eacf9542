"""CPU forms of convolutions, rewritten in any feature extractor
(`fastfem.converters.cpu_convs.conv_forms`).

* `conv_in_cpu_form` equals ``lax.conv_general_dilated`` for 1x1 (1D/2D, stride 1/2, explicit
  pads, channels last/first, OIHW kernels) and depthwise convolutions (multiplier 1/2, stride,
  dilation); it keeps every other convolution (returns None).
* `cpu_conv_forms(fn)` gives ``fn``'s outputs (pytrees in and out) with the convolutions inside
  nested jits and custom-derivative functions rewritten, tracing ``fn`` once.
* Every front-end gets it: a Keras-JAX model (3x3, 1x1, depthwise, separable), a tf_keras model
  converted by tf2jax, and a Flax linen module give the same activations with the CPU forms on
  as off (``FASTFEM_CPU_CONVS``), and their jaxprs keep only the convolutions XLA:CPU runs well.
"""

from __future__ import annotations

import importlib.util
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from fastfem.converters import from_fn, from_keras, import_keras
from fastfem.converters.cpu_convs import conv_forms
from jax import lax

RTOL = 1e-5


def rel_err(a, ref) -> float:
    a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
    return float(np.max(np.abs(a - ref)) / np.max(np.abs(ref)))


def conv_count(fn, *args) -> int:
    """Convolutions left in the jaxpr of ``fn`` (nested jaxprs included)."""
    return str(jax.make_jaxpr(fn)(*args)).count("conv_general_dilated")


def conv_params(fmt: str, kernel_fmt: str, **kw):
    """``conv_general_dilated`` keyword arguments as they appear in a jaxpr equation."""
    rank = len(fmt) - 2
    x_shape = kw.pop("x_shape")
    w_shape = kw.pop("w_shape")
    dn = lax.conv_dimension_numbers(x_shape, w_shape, (fmt, kernel_fmt, fmt))
    return {
        "window_strides": kw.get("strides", (1,) * rank),
        "padding": kw.get("padding", [(0, 0)] * rank),
        "lhs_dilation": kw.get("lhs_dilation", (1,) * rank),
        "rhs_dilation": kw.get("rhs_dilation", (1,) * rank),
        "dimension_numbers": dn,
        "feature_group_count": kw.get("groups", 1),
        "batch_group_count": 1,
    }


def reference(x, w, params):
    return lax.conv_general_dilated(
        x,
        w,
        params["window_strides"],
        params["padding"],
        lhs_dilation=params["lhs_dilation"],
        rhs_dilation=params["rhs_dilation"],
        dimension_numbers=params["dimension_numbers"],
        feature_group_count=params["feature_group_count"],
    )


LAYOUTS = [("NHWC", "HWIO"), ("NCHW", "OIHW"), ("NHWC", "OIHW")]


@pytest.mark.parametrize(
    "layout,stride,pads", list(itertools.product(LAYOUTS, (1, 2), ([(0, 0)] * 2, [(1, 0), (0, 2)])))
)
def test_pointwise_matches_lax(layout, stride, pads):
    fmt, kfmt = layout
    rng = np.random.default_rng(stride)
    x_shape = (3, 11, 8, 7) if fmt == "NHWC" else (3, 7, 11, 8)
    w_shape = {"HWIO": (1, 1, 7, 5), "OIHW": (5, 7, 1, 1)}[kfmt]
    x = jnp.asarray(rng.standard_normal(x_shape, np.float32))
    w = jnp.asarray(rng.standard_normal(w_shape, np.float32))
    p = conv_params(
        fmt, kfmt, x_shape=x_shape, w_shape=w_shape, strides=(stride, stride), padding=pads
    )
    ref = reference(x, w, p)
    got = conv_forms.conv_in_cpu_form(x, w, **p)
    assert got is not None and got.shape == ref.shape and got.dtype == ref.dtype
    assert rel_err(got, ref) < RTOL


def test_pointwise_1d():
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((2, 9, 4), np.float32))
    w = jnp.asarray(rng.standard_normal((1, 4, 6), np.float32))
    p = conv_params("NWC", "WIO", x_shape=x.shape, w_shape=w.shape, strides=(2,))
    assert rel_err(conv_forms.conv_in_cpu_form(x, w, **p), reference(x, w, p)) < RTOL


@pytest.mark.parametrize(
    "layout,mult,stride,dilation",
    list(itertools.product(LAYOUTS[:2], (1, 2), (1, 2), (1, 2))),
)
def test_depthwise_matches_lax(layout, mult, stride, dilation):
    fmt, kfmt = layout
    c = 5
    rng = np.random.default_rng(mult * 10 + stride + dilation)
    x_shape = (2, 13, 10, c) if fmt == "NHWC" else (2, c, 13, 10)
    w_shape = {"HWIO": (3, 3, 1, c * mult), "OIHW": (c * mult, 1, 3, 3)}[kfmt]
    x = jnp.asarray(rng.standard_normal(x_shape, np.float32))
    w = jnp.asarray(rng.standard_normal(w_shape, np.float32))
    pads = lax.padtype_to_pads((13, 10), (1 + 2 * dilation,) * 2, (stride, stride), "SAME")
    p = conv_params(
        fmt,
        kfmt,
        x_shape=x_shape,
        w_shape=w_shape,
        strides=(stride, stride),
        padding=pads,
        rhs_dilation=(dilation, dilation),
        groups=c,
    )
    ref = reference(x, w, p)
    got = conv_forms.conv_in_cpu_form(x, w, **p)
    assert got is not None and got.shape == ref.shape
    assert rel_err(got, ref) < RTOL


@pytest.mark.parametrize(
    "w_shape,kw",
    [
        ((3, 3, 4, 6), {}),  # an ordinary 3x3 convolution
        ((1, 1, 2, 6), {"groups": 2}),  # grouped 1x1, groups of 2 channels
        ((3, 3, 2, 4), {"groups": 2}),  # grouped 3x3
        ((1, 1, 4, 6), {"lhs_dilation": (2, 2)}),  # transposed-convolution style
    ],
)
def test_other_convolutions_are_kept(w_shape, kw):
    x = jnp.ones((1, 6, 6, 4))
    p = conv_params("NHWC", "HWIO", x_shape=x.shape, w_shape=w_shape, **kw)
    assert conv_forms.conv_in_cpu_form(x, jnp.ones(w_shape), **p) is None


def test_env_var_selects(monkeypatch):
    monkeypatch.setenv(conv_forms.ENV_VAR, "off")
    assert not conv_forms.cpu_forms_wanted("cpu")
    monkeypatch.setenv(conv_forms.ENV_VAR, "on")
    assert conv_forms.cpu_forms_wanted("gpu")
    monkeypatch.setenv(conv_forms.ENV_VAR, "auto")
    assert conv_forms.cpu_forms_wanted("cpu") and not conv_forms.cpu_forms_wanted("gpu")
    monkeypatch.setenv(conv_forms.ENV_VAR, "fast")
    with pytest.raises(ValueError, match=conv_forms.ENV_VAR):
        conv_forms.cpu_forms_wanted("cpu")


def _net(params, x):
    """Pytree in, pytree out; 1x1 and depthwise convs inside a nested jit, relu (custom_jvp)."""

    @jax.jit
    def block(h, w1, wd):
        h = lax.conv_general_dilated(
            h, w1, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        h = jax.nn.relu(h)
        return lax.conv_general_dilated(
            h, wd, (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=6
        )

    h = lax.conv_general_dilated(
        x, params["w3"], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    y = block(jax.nn.relu(h), params["w1"], params["wd"])
    return {"y": y, "mean": jnp.mean(y, axis=(1, 2))}, [h]


def test_rewrite_reaches_nested_jits_and_keeps_pytrees():
    rng = np.random.default_rng(0)
    params = {
        "w3": jnp.asarray(rng.standard_normal((3, 3, 3, 4), np.float32)),
        "w1": jnp.asarray(rng.standard_normal((1, 1, 4, 6), np.float32)),
        "wd": jnp.asarray(rng.standard_normal((3, 3, 1, 6), np.float32)),
    }
    x = jnp.asarray(rng.standard_normal((2, 9, 9, 3), np.float32))
    fast = conv_forms.cpu_conv_forms(_net)
    ref, got = _net(params, x), jax.jit(fast)(params, x)
    assert jax.tree.structure(got) == jax.tree.structure(ref)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(ref), strict=True):
        assert a.shape == b.shape and rel_err(a, b) < RTOL
    assert conv_count(_net, params, x) == 3 and conv_count(fast, params, x) == 1  # the 3x3


def test_the_function_is_traced_once():
    calls = []

    def plain(x):
        calls.append(1)
        return jnp.sin(x) * 2

    out = jax.jit(conv_forms.cpu_conv_forms(plain))(jnp.ones(3))
    np.testing.assert_allclose(out, np.sin(1.0) * 2 * np.ones(3), rtol=1e-6)
    assert len(calls) == 1


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


def _on_and_off(monkeypatch, make, x):
    """(activations, convolutions in the jaxpr) of the extractor ``make()`` with the forms off
    (the reference) and on."""
    out = {}
    for mode in ("off", "on"):
        monkeypatch.setenv(conv_forms.ENV_VAR, mode)
        fx = make()
        acts = jax.jit(fx.apply)(fx.params, x).activations
        out[mode] = ([np.asarray(a) for a in acts], conv_count(fx.apply, fx.params, x))
    for a, ref in zip(out["on"][0], out["off"][0], strict=True):
        assert a.shape == ref.shape and rel_err(a, ref) < RTOL
    return out["off"][1], out["on"][1]


def test_keras_model(monkeypatch):
    model = _mobile_model()
    x = jnp.asarray(np.random.default_rng(12).random((4, 21, 21, 3), np.float32))
    stock, fast = _on_and_off(monkeypatch, lambda: from_keras(model, ["sep", "last"]), x)
    assert stock == 7  # 3x3, 3 depthwise, 3 1x1
    assert fast == 1  # the first 3x3 Conv2D only


@pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("tensorflow", "tf_keras", "tf2jax")),
    reason="tensorflow, tf_keras and tf2jax are needed",
)
def test_tf2jax_converted_model(monkeypatch):
    import tf_keras
    from fastfem.converters import from_tf

    L = tf_keras.layers
    inp = tf_keras.Input((17, 17, 3))
    h = L.Conv2D(8, 3, padding="same", activation="relu")(inp)
    h = L.DepthwiseConv2D(3, strides=2, padding="same", activation="relu")(h)
    h = L.Conv2D(16, 1, name="project")(h)
    model = tf_keras.Model(inp, h)
    rng = np.random.default_rng(2)
    model.set_weights([rng.standard_normal(w.shape).astype(np.float32) for w in model.weights])
    x = jnp.asarray(rng.random((3, 17, 17, 3), np.float32))
    stock, fast = _on_and_off(monkeypatch, lambda: from_tf(model, "project"), x)
    assert stock == 3 and fast == 1


@pytest.mark.skipif(importlib.util.find_spec("flax") is None, reason="flax is needed")
def test_flax_linen_module(monkeypatch):
    import flax.linen as nn
    from fastfem.converters import from_flax

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.relu(nn.Conv(8, (3, 3), name="c3")(x))
            x = nn.Conv(8, (3, 3), feature_group_count=8, strides=2, name="dw")(x)
            return nn.Conv(10, (1, 1), name="pw")(x)

    x = jnp.asarray(np.random.default_rng(4).random((2, 16, 16, 3), np.float32))
    variables = Net().init(jax.random.key(0), x)
    stock, fast = _on_and_off(
        monkeypatch, lambda: from_flax(Net(), variables, layers="pw", input_shape=(16, 16, 3)), x
    )
    assert stock == 3 and fast == 1


def test_plain_function_extractor(monkeypatch):
    rng = np.random.default_rng(5)
    w = jnp.asarray(rng.standard_normal((1, 1, 3, 4), np.float32))

    def apply(p, x):
        return lax.conv_general_dilated(
            x, p, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )

    x = jnp.asarray(rng.random((2, 5, 5, 3), np.float32))
    stock, fast = _on_and_off(monkeypatch, lambda: from_fn(apply, w, (5, 5, 3)), x)
    assert stock == 1 and fast == 0
