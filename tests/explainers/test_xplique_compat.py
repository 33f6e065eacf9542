"""`fastfem.integrations.xplique.FEM` as a drop-in for ``xplique.attributions.FEM``.

In a subprocess with Keras on TensorFlow (an Xplique user's process; the cut model goes through
tf2jax), the two classes side by side on the same model: layer choice, attributes, maps for
every input kind and batch size, the static helpers, and WHEN each bad argument fails
(construction or explain). In this process (Keras on JAX): the same API without Xplique, against
`fastfem.FEM` and a NumPy k-sigma written here.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from subprocess_runs import run_json

import fastfem

tf = pytest.importorskip("tensorflow")
from fastfem.integrations.xplique import FEM  # noqa: E402  (needs TensorFlow)

#: Maps: ``max |fastfem - xplique| <= RTOL * max |xplique|`` (as test_xplique_parity.py).
RTOL = 1e-4

SIDE_BY_SIDE = r"""
import json
import numpy as np
import tensorflow as tf
import keras
from xplique.attributions import FEM as XpliqueFEM
from fastfem.integrations.xplique import FEM

assert keras.backend.backend() == "tensorflow", keras.backend.backend()
L = keras.layers
model = keras.Sequential([
    keras.Input((20, 18, 3)),
    L.Conv2D(6, 3, activation="relu", name="c1"),
    L.Conv2D(5, 3, name="c2"),
    L.MaxPooling2D(2, name="pool"),
    L.Flatten(name="flatten"),
    L.Dense(4, name="dense"),
])
no_conv = keras.Sequential([keras.Input((8, 8, 3)), L.Flatten(), L.Dense(2)])
rng = np.random.default_rng(0)
model.set_weights([rng.normal(size=w.shape).astype("f4") * 0.5 for w in model.get_weights()])
x = rng.random((7, 20, 18, 3), dtype=np.float32)
y = np.eye(4, dtype=np.float32)[rng.integers(0, 4, 7)]
inputs = {
    "numpy": x,
    "tensor": tf.constant(x),
    "dataset": tf.data.Dataset.from_tensor_slices((x, y)),
    "batched_dataset": tf.data.Dataset.from_tensor_slices((x, y)).batch(3),
}
out = {"cases": {}, "helpers": {}, "errors": {}}
cases = {
    "default": {},
    "index0": {"conv_layer": 0},
    "name_k1": {"conv_layer": "c1", "k": 1.0},
    "batch_none": {"batch_size": None},
    "batch_1": {"batch_size": 1, "conv_layer": "c2", "k": 0.5},
}
for name, kwargs in cases.items():
    ref, ours = XpliqueFEM(model, **kwargs), FEM(model, **kwargs)
    want = ref.explain(x).numpy()
    case = {
        "same_layer": ours.conv_layer is ref.conv_layer,
        "layer": ours.conv_layer.name,
        "model_output": [list(ours.model.output.shape), list(ref.model.output.shape)],
        "model_is_keras": isinstance(ours.model, keras.Model),
        "batch_size": [ours.batch_size, ref.batch_size],
        "k": [float(ours.k), float(ref.k), ours.k.dtype.name],
        "scale": float(np.abs(want).max()),
        "ptp": float(np.ptp(want)),
        "shape": list(want.shape),
        "diff": {},
    }
    for kind, inp in inputs.items():
        got = ours.explain(inp, None if "dataset" in kind else y)
        assert isinstance(got, tf.Tensor) and got.dtype == tf.float32, (kind, type(got))
        case["diff"][kind] = float(np.abs(got.numpy() - want).max())
    case["diff"]["call"] = float(np.abs(ours(x, y).numpy() - want).max())
    out["cases"][name] = case

for shape in [(2, 5, 6, 4), (2, 3, 4, 5, 3)]:
    fm = rng.normal(size=shape).astype(np.float32)
    k = tf.constant(1.5, tf.float32)
    (wx, mx), (wf, mf) = XpliqueFEM._compute_weights(fm, k), FEM._compute_weights(fm, k)
    ax, af = XpliqueFEM._apply_weights(wx, mx), FEM._apply_weights(wf, mf)
    out["helpers"][str(shape)] = {
        "types": all(isinstance(t, tf.Tensor) for t in (wf, mf, af)),
        "shapes": [list(wf.shape), list(wx.shape), list(mf.shape), list(mx.shape),
                   list(af.shape), list(ax.shape)],
        "weights": float(np.abs(wf.numpy() - wx.numpy()).max()),
        "masks": float(np.abs(mf.numpy() - mx.numpy()).max()),
        "mask_on": float(mx.numpy().mean()),
        "applied": float(np.abs(af.numpy() - ax.numpy()).max()),
    }

def when(cls, m, **kwargs):
    try:
        explainer = cls(m, **kwargs)
    except Exception as err:
        return ["init", type(err).__name__]
    try:
        explainer.explain(x if m is model else x[:, :8, :8])
    except Exception as err:
        return ["explain", type(err).__name__, str(err)[:300]]
    return ["ok"]

bad = {
    "flatten": (model, {"conv_layer": "flatten"}),
    "unknown_name": (model, {"conv_layer": "nope"}),
    "index_out_of_range": (model, {"conv_layer": 99}),
    "float_layer": (model, {"conv_layer": 1.5}),
    "no_conv_layer": (no_conv, {}),
}
for name, (m, kwargs) in bad.items():
    out["errors"][name] = {
        "xplique": when(XpliqueFEM, m, **kwargs), "fastfem": when(FEM, m, **kwargs)
    }
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def side_by_side():
    if importlib.util.find_spec("xplique") is None:
        pytest.skip("xplique is needed for the side-by-side run")
    return run_json(SIDE_BY_SIDE, env={"KERAS_BACKEND": "tensorflow"}, timeout=600)


def test_same_layer_attributes_and_maps_as_xplique(side_by_side):
    cases = side_by_side["cases"]
    assert [cases[c]["layer"] for c in cases] == ["c2", "c1", "c1", "c2", "c2"]
    for name, case in cases.items():
        assert case["same_layer"], name  # the very layer object Xplique picks
        assert case["model_is_keras"] and case["model_output"][0] == case["model_output"][1]
        assert case["batch_size"][0] == case["batch_size"][1]
        assert case["k"][0] == case["k"][1] and case["k"][2] == "float32"
        assert case["shape"] == [7, 20, 18, 1]
        assert case["ptp"] > 0.1 * case["scale"] > 0, name  # maps with structure
        for kind, diff in case["diff"].items():
            assert diff <= RTOL * case["scale"], (name, kind, diff, case["scale"])


def test_static_helpers_equal_xplique(side_by_side):
    for shape, h in side_by_side["helpers"].items():
        assert h["types"], shape
        wf, wx, mf, mx, af, ax = h["shapes"]
        assert wf == wx and mf == mx and af == ax, (shape, h["shapes"])
        assert 0 < h["mask_on"] < 0.5, shape  # masks that can tell a wrong threshold
        assert h["weights"] <= 1e-6 and h["masks"] == 0 and h["applied"] <= 1e-5, (shape, h)


def test_errors_raised_when_xplique_raises_them(side_by_side):
    errors = side_by_side["errors"]
    for name, e in errors.items():
        assert e["fastfem"][0] == e["xplique"][0], (name, e)
    assert errors["flatten"]["xplique"][0] == "explain"  # constructs, fails in explain
    assert errors["flatten"]["fastfem"][1] == "ValueError"
    message = errors["flatten"]["fastfem"][2]
    assert "'flatten' outputs shape (None, 280), not (N, h, w, C)" in message
    for name in ("unknown_name", "index_out_of_range", "float_layer", "no_conv_layer"):
        assert errors[name]["xplique"][0] == "init" and errors[name]["fastfem"][1] in (
            errors[name]["xplique"][1],
            "ValueError",
        ), (name, errors[name])


# ---------------------------------------------------------------- Keras on JAX (this process)


def numpy_weights_and_masks(a: np.ndarray, k: float):
    """Xplique's helpers from their definition, float64: channel means over every spatial axis
    (kept as size-1 axes) and the masks ``A >= mean + k std`` (population std)."""
    a = a.astype(np.float64)
    axes = tuple(range(1, a.ndim - 1))
    mean = a.mean(axis=axes, keepdims=True)
    std = a.std(axis=axes, keepdims=True)
    return mean, (a >= mean + k * std).astype(np.float64)


def test_attributes_and_layer_choice(cnn32):
    fem = FEM(cnn32)
    assert fem.conv_layer is cnn32.get_layer("conv_b")  # last layer with `filters`
    assert fem.batch_size == 32
    assert isinstance(fem.k, tf.Tensor) and fem.k.dtype == tf.float32 and float(fem.k) == 2.0
    assert fem.model.inputs[0] is cnn32.inputs[0]
    assert tuple(fem.model.output.shape) == (None, 15, 15, 16)
    assert FEM(cnn32, conv_layer=1).conv_layer is cnn32.layers[1]  # index into model.layers
    assert FEM(cnn32, conv_layer="relu_a").conv_layer is cnn32.get_layer("relu_a")
    assert FEM(cnn32, batch_size=None, k=1).batch_size is None


def test_maps_are_fastfem_maps_as_tf_tensors(cnn32, images32):
    x = images32[:9]
    want = fastfem.FEM(cnn32, conv_layer="relu_a", k=1.5).explain(x)
    fem = FEM(cnn32, batch_size=4, conv_layer="relu_a", k=1.5)
    y = np.eye(3, dtype=np.float32)[np.arange(9) % 3]
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    for inp in (x, tf.constant(x), ds, ds.batch(2)):
        got = fem.explain(inp)
        assert isinstance(got, tf.Tensor) and got.dtype == tf.float32
        np.testing.assert_array_equal(got.numpy(), want)
    np.testing.assert_array_equal(fem(x, y).numpy(), want)
    np.testing.assert_array_equal(fem(x).numpy(), want)
    assert np.ptp(want) > 0


def test_batch_size_none_is_one_batch(cnn32, images32):
    x = images32[:5]
    fem = FEM(cnn32, batch_size=None)
    want = fastfem.FEM(cnn32).explain(x)
    np.testing.assert_allclose(fem.explain(x).numpy(), want, atol=1e-6 * np.abs(want).max())
    engine = fem._engine(5)  # its step and runner: the ones the call used (fastfem.engine.cache)
    assert engine.runner(engine.step(x.shape[1:]))._sizes == {5}  # all five in one step
    ds = tf.data.Dataset.from_tensor_slices((x, np.zeros(5))).batch(2)
    np.testing.assert_allclose(fem.explain(ds).numpy(), want, atol=1e-6 * np.abs(want).max())


def test_attributes_are_read_at_explain(cnn32, images32):
    x = images32[:3]
    fem = FEM(cnn32)
    fem.k = tf.constant(0.5)
    fem.batch_size = 2
    want = fastfem.FEM(cnn32, k=0.5).explain(x)
    np.testing.assert_array_equal(fem.explain(x).numpy(), want)


@pytest.mark.parametrize("shape", [(3, 6, 7, 5), (2, 4, 3, 5, 2), (2, 9, 4)])
def test_static_helpers_against_numpy(shape):
    rng = np.random.default_rng(sum(shape))
    a = (rng.normal(size=shape) + rng.normal(size=shape[-1])).astype(np.float32)
    weights, masks = FEM._compute_weights(a, tf.constant(1.0))
    want_w, want_m = numpy_weights_and_masks(a, 1.0)
    assert isinstance(weights, tf.Tensor) and isinstance(masks, tf.Tensor)
    np.testing.assert_allclose(weights.numpy(), want_w, atol=1e-6)
    np.testing.assert_array_equal(masks.numpy(), want_m)
    assert 0 < want_m.mean() < 0.5
    applied = FEM._apply_weights(weights, masks)
    np.testing.assert_allclose(applied.numpy(), (want_m * want_w).sum(-1), atol=1e-5)


def test_static_helpers_small_example():
    # one 3x3 sample, 2 channels: channel 0 is constant 2 (std 0: on everywhere, weight 2);
    # channel 1 is 0 except 9 at the centre (mean 1, std sqrt(8): with k = 2 only 9 >= 6.66)
    a = np.zeros((1, 3, 3, 2), np.float32)
    a[..., 0] = 2.0
    a[0, 1, 1, 1] = 9.0
    weights, masks = FEM._compute_weights(a, 2.0)
    np.testing.assert_allclose(weights.numpy().reshape(-1), [2.0, 1.0], rtol=1e-6)
    want = np.full((3, 3), 2.0, np.float32)
    want[1, 1] = 3.0
    np.testing.assert_allclose(FEM._apply_weights(weights, masks).numpy()[0], want, rtol=1e-6)


def test_bad_arguments_fail_when_xplique_fails(cnn32, images32):
    with pytest.raises(ValueError, match="nope"):
        FEM(cnn32, conv_layer="nope")
    with pytest.raises(IndexError):
        FEM(cnn32, conv_layer=99)
    with pytest.raises(ValueError, match="Could not find any layer 1.5"):
        FEM(cnn32, conv_layer=1.5)
    import keras

    layers = keras.layers
    dense = keras.Sequential([keras.Input((4, 4, 3)), layers.Flatten(), layers.Dense(2)])
    with pytest.raises(ValueError, match="requires a convolutional layer"):
        FEM(dense)
    fem = FEM(cnn32, conv_layer="flatten")  # constructs, as Xplique's
    assert fem.conv_layer is cnn32.get_layer("flatten")
    with pytest.raises(ValueError, match=r"'flatten' outputs shape \(None, 3600\), not \(N, h, w"):
        fem.explain(images32[:2])
    with pytest.raises(ValueError, match="add a batch axis"):
        FEM(cnn32).explain(images32[0])
