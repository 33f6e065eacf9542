"""Flax front-ends: a linen CNN and an NNX CNN explained, their activations equal to a NumPy
computation of the same layers from the same weights (convolution, BatchNorm, ReLU)."""

from __future__ import annotations

import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from fastfem.converters import load

import fastfem

pytestmark = pytest.mark.skipif(importlib.util.find_spec("flax") is None, reason="needs flax")

SHAPE = (20, 20, 3)


def conv(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray, padding: str) -> np.ndarray:
    """NHWC stride-1 convolution in float64 NumPy ('VALID' or 'SAME' for odd kernels)."""
    kh, kw = kernel.shape[:2]
    if padding == "SAME":
        x = np.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    n, h, w, _ = x.shape
    oh, ow = h - kh + 1, w - kw + 1
    out = np.zeros((n, oh, ow, kernel.shape[-1]))
    for i in range(kh):
        for j in range(kw):
            out += np.einsum("nhwc,cd->nhwd", x[:, i : i + oh, j : j + ow], kernel[i, j])
    return out + bias


def batchnorm(x, mean, var, scale, bias, eps):
    return (x - mean) / np.sqrt(var + eps) * scale + bias


def manual(x, conv_a, bn, conv_b):
    """(conv_a out, relu(bn(conv_a)) , conv_b out) in float64; args are dicts of arrays."""
    a = conv(x.astype(np.float64), conv_a["kernel"], conv_a["bias"], "VALID")
    r = np.maximum(batchnorm(a, bn["mean"], bn["var"], bn["scale"], bn["bias"], bn["eps"]), 0)
    b = conv(r, conv_b["kernel"], conv_b["bias"], "SAME")
    return a, r, b


def close(a, ref, rtol=1e-5):
    np.testing.assert_allclose(np.asarray(a), ref, rtol=0, atol=rtol * np.abs(ref).max())


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(5).random((6, *SHAPE), dtype=np.float32)


def randomize(tree, seed):
    """Signed normal weights; positive BatchNorm scales and variances."""
    rng = np.random.default_rng(seed)

    def value(path, v):
        name = jax.tree_util.keystr(path)
        if "var" in name or "scale" in name:
            return jnp.asarray(rng.uniform(0.5, 1.5, np.shape(v)), jnp.float32)
        return jnp.asarray(rng.normal(0.0, 0.5, np.shape(v)), jnp.float32)

    return jax.tree_util.tree_map_with_path(value, tree)


def test_linen_cnn(images):
    import flax.linen as nn

    class CNN(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool = False):
            x = nn.Conv(8, (3, 3), padding="VALID", name="conv_a")(x)
            x = nn.BatchNorm(use_running_average=not train, name="bn")(x)
            x = nn.relu(x)
            self.sow("intermediates", "features", x)
            x = nn.Conv(12, (3, 3), padding="SAME", name="conv_b")(x)
            return nn.Dense(3, name="head")(x.mean((1, 2)))

    module = CNN()
    variables = module.init(jax.random.key(0), jnp.zeros((1, *SHAPE)))
    variables = {
        "params": randomize(variables["params"], 1),
        "batch_stats": randomize(variables["batch_stats"], 2),
    }
    p, s = variables["params"], variables["batch_stats"]
    a, r, b = manual(
        images,
        {k: np.asarray(v) for k, v in p["conv_a"].items()},
        {
            "mean": s["bn"]["mean"],
            "var": s["bn"]["var"],
            "scale": p["bn"]["scale"],
            "bias": p["bn"]["bias"],
            "eps": 1e-5,
        },
        {k: np.asarray(v) for k, v in p["conv_b"].items()},
    )
    ext = fastfem.converters.from_flax(
        module,
        variables,
        [None, "conv_a", "features"],
        input_shape=SHAPE,
        include_output=True,
        apply_kwargs={"train": False},
    )
    assert ext.layer_names == ("conv_b", "conv_a", "features")
    assert "linen" in ext.source
    feats = jax.jit(ext.apply)(ext.params, images)
    for got, ref in zip(feats.activations, (b, a, r), strict=True):
        close(got, ref)
    close(feats.output, np.asarray(module.apply(variables, images)))
    # explained via load((module, variables)) with the default layer (conv_b)
    fem = fastfem.FEM(load((module, variables), input_shape=SHAPE)).explain(images)
    ref_maps = fastfem.FEM(fastfem.converters.from_fn(lambda _, x: b, None, SHAPE)).explain(images)
    close(fem, ref_maps, rtol=1e-4)
    assert np.ptp(fem) > 0
    with pytest.raises(ValueError, match="'conv_a', 'conv_b'"):
        fastfem.converters.from_flax(module, variables, "nope", input_shape=SHAPE)


def test_nnx_cnn(images):
    from flax import nnx

    class CNN(nnx.Module):
        def __init__(self, rngs):
            self.conv_a = nnx.Conv(3, 8, (3, 3), padding="VALID", rngs=rngs)
            self.bn = nnx.BatchNorm(8, rngs=rngs)
            self.conv_b = nnx.Conv(8, 12, (3, 3), padding="SAME", rngs=rngs)
            self.head = nnx.Linear(12, 3, rngs=rngs)

        def __call__(self, x):
            x = nnx.relu(self.bn(self.conv_a(x)))
            self.sow(nnx.Intermediate, "features", x)
            return self.head(self.conv_b(x).mean((1, 2)))

    model = CNN(nnx.Rngs(0))
    rng = np.random.default_rng(3)
    model.bn.mean.set_value(jnp.asarray(rng.normal(0, 0.2, 8), jnp.float32))
    model.bn.var.set_value(jnp.asarray(rng.uniform(0.5, 1.5, 8), jnp.float32))
    model.bn.scale.set_value(jnp.asarray(rng.uniform(0.5, 1.5, 8), jnp.float32))
    model.eval()
    a, r, b = manual(
        images,
        {
            "kernel": np.asarray(model.conv_a.kernel.get_value()),
            "bias": np.asarray(model.conv_a.bias.get_value()),
        },
        {
            "mean": np.asarray(model.bn.mean.get_value()),
            "var": np.asarray(model.bn.var.get_value()),
            "scale": np.asarray(model.bn.scale.get_value()),
            "bias": np.asarray(model.bn.bias.get_value()),
            "eps": model.bn.epsilon,
        },
        {
            "kernel": np.asarray(model.conv_b.kernel.get_value()),
            "bias": np.asarray(model.conv_b.bias.get_value()),
        },
    )
    ext = load(model, [None, "conv_a", "features"], input_shape=SHAPE, include_output=True)
    assert ext.layer_names == ("conv_b", "conv_a", "features") and "nnx" in ext.source
    feats = jax.jit(ext.apply)(ext.params, images)
    for got, ref in zip(feats.activations, (b, a, r), strict=True):
        close(got, ref)
    head = model.head
    close(feats.output, b.mean((1, 2)) @ head.kernel.get_value() + head.bias.get_value())
    fem = fastfem.FEM(fastfem.converters.from_flax(model, input_shape=SHAPE)).explain(images)
    ref_maps = fastfem.FEM(fastfem.converters.from_fn(lambda _, x: b, None, SHAPE)).explain(images)
    close(fem, ref_maps, rtol=1e-4)
    assert np.ptp(fem) > 0


def test_plain_jax_function_pair(images):
    kernel = np.random.default_rng(0).normal(size=(3, 3, 3, 5)).astype(np.float32)

    def apply(params, x):
        y = jax.lax.conv_general_dilated(
            x, params["k"], (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        return jax.nn.relu(y)

    ext = load((apply, {"k": kernel}), input_shape=SHAPE, layer_names=("relu",))
    assert ext.layer_names == ("relu",) and ext.source == "jax function"
    ref = np.maximum(conv(images, kernel, 0.0, "VALID"), 0)
    close(jax.jit(ext.apply)(ext.params, images).activations[0], ref)
