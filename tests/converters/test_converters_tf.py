"""TensorFlow front-ends in this process: tf_keras (Keras 2) models, .h5 files, SavedModels,
tf.functions; the call_tf fallback; safety refusals; `load`'s choice of path.

tf_keras is Keras 2 and independent of Keras 3's backend, so these run beside Keras-JAX here.
References: the TF model's own activations, and FEM maps from them with fastfem's kernel.
"""

from __future__ import annotations

import importlib.util

import jax
import numpy as np
import pytest
from fastfem.converters import load
from tf_models import tf_keras_cnn

import fastfem
from fastfem.explainers.fem import FEM

pytestmark = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("tensorflow", "tf_keras", "tf2jax")),
    reason="tensorflow, tf_keras and tf2jax are needed",
)

SHAPE = (28, 28, 3)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(3).random((5, *SHAPE), dtype=np.float32)


@pytest.fixture(scope="module")
def tfk_model():
    return tf_keras_cnn()


@pytest.fixture(scope="module")
def saved(tfk_model, tmp_path_factory):
    d = tmp_path_factory.mktemp("tfk")
    tfk_model.save(d / "model.h5")
    tfk_model.save(d / "savedmodel", save_format="tf")
    return d


def tf_activations(model, layers, x):
    import tf_keras

    sub = tf_keras.Model(model.inputs, [model.get_layer(n).output for n in layers])
    out = sub(x, training=False)
    return [np.asarray(a) for a in (out if isinstance(out, list) else [out])]


def kernel_maps(acts: np.ndarray, out_hw) -> np.ndarray:
    """FEM maps (N, H, W, 1) of given activations with the explainer's step."""
    from fastfem.converters import FeatureExtractor, Features

    h, w = acts.shape[1:3]
    fixed = FeatureExtractor(lambda p, x: Features((p,)), None, (h, w, 1), ("given",))
    step = FEM(fixed, k=2.0, variant="xplique").step((*out_hw, 1), resize=True)
    out = jax.jit(step.fn)(acts, {"x": np.zeros((acts.shape[0], 1, 1, 1), np.float32)})
    return np.asarray(out["maps"])[..., None]


def close(a, ref, rtol=1e-5):
    np.testing.assert_allclose(np.asarray(a), ref, rtol=0, atol=rtol * np.abs(ref).max())


def test_tf_keras_model_and_h5_through_tf2jax(tfk_model, saved, images):
    ref_b, ref_a = tf_activations(tfk_model, ["conv_b", "relu_a"], images)
    for model in (tfk_model, saved / "model.h5"):
        ext = fastfem.converters.from_tf(model, [None, "relu_a"], include_output=True)
        assert "tf2jax" in ext.source
        assert ext.layer_names == ("conv_b", "relu_a") and ext.input_shape == SHAPE
        feats = jax.jit(ext.apply)(ext.params, images)
        close(feats.activations[0], ref_b)
        close(feats.activations[1], ref_a)
        close(feats.output, np.asarray(tfk_model(images, training=False)))
    # explained: FEM on the converted model = FEM of TF's own activations
    maps = fastfem.FEM(fastfem.converters.from_tf(saved / "model.h5")).explain(images)
    assert maps.shape == (5, *SHAPE[:2], 1) and np.ptp(maps) > 0
    close(maps, kernel_maps(ref_b, SHAPE[:2]), rtol=1e-4)
    # load() reads the .h5 with Keras 3 (the native path) and gets the same maps
    native = load(saved / "model.h5")
    assert native.source.startswith("keras-jax")
    close(fastfem.FEM(native).explain(images), maps, rtol=1e-4)


def test_savedmodel_tensor_by_name(tfk_model, saved, images):
    sm = saved / "savedmodel"
    ref_b, ref_a = tf_activations(tfk_model, ["conv_b", "relu_a"], images)
    ext = fastfem.converters.from_savedmodel(sm, [None, "relu_a"], include_output=True)
    assert "SavedModel" in ext.source and "tf2jax" in ext.source
    assert ext.layer_names == ("tfk_cnn/conv_b", "relu_a")
    feats = jax.jit(ext.apply)(ext.params, images)
    close(feats.activations[0], ref_b)
    close(feats.activations[1], ref_a)
    close(feats.output, np.asarray(tfk_model(images, training=False)))
    # the weights are params (fed back), not constants in the program
    assert (
        sum(np.size(a) for a in jax.tree_util.tree_leaves(ext.params)) == tfk_model.count_params()
    )
    # a full tensor name and a call_tf extractor give the same activations
    full = fastfem.converters.from_savedmodel(sm, "tfk_cnn/conv_b/BiasAdd", method="call_tf")
    assert "call_tf" in full.source
    close(jax.jit(full.apply)(full.params, images).activations[0], ref_b)
    # explained through load() and the explainers
    maps = fastfem.FEM(sm, conv_layer="conv_b").explain(images)
    close(maps, kernel_maps(ref_b, SHAPE[:2]), rtol=1e-4)
    fam = fastfem.FAM(sm, conv_layer="relu_a").explain(images, images[::-1])
    assert fam.shape == (5, *SHAPE[:2], 1) and np.isfinite(fam).all()
    ml = fastfem.MLFEM(sm, layers=["relu_a", "conv_b"]).explain(images)
    assert ml.shape == (5, *SHAPE[:2], 1) and np.isfinite(ml).all()


def test_savedmodel_errors_list_candidates(saved):
    sm = saved / "savedmodel"
    assert load(sm, layer="relu_a").layer_names == ("relu_a",)  # load's layer= alias
    with pytest.raises(ValueError, match=r"no 4-D tensor or layer named 'nope'.*'tfk_cnn/conv_a'"):
        fastfem.converters.from_savedmodel(sm, "nope")
    with pytest.raises(ValueError, match=r"not 4-D float"):
        fastfem.converters.from_savedmodel(sm, "tfk_cnn/gap/Mean")
    with pytest.raises(ValueError, match=r"signatures: \['serving_default'\]"):
        fastfem.converters.from_savedmodel(sm, signature="serve")


def test_call_tf_fallback_for_an_op_tf2jax_lacks(images):
    model = tf_keras_cnn(activation="softsign")  # tf2jax 0.3.8 has no Softsign
    (ref,) = tf_activations(model, ["act_b"], images)
    ext = fastfem.converters.from_tf(model, "act_b")
    assert "call_tf" in ext.source and "Softsign" in ext.source
    assert jax.tree_util.tree_leaves(ext.params), "weights must stay arguments under call_tf"
    close(jax.jit(ext.apply)(ext.params, images).activations[0], ref)
    maps = fastfem.FEM(ext, batch_size=4).explain(images)  # jitted step with call_tf inside
    close(maps, kernel_maps(ref, SHAPE[:2]), rtol=1e-4)
    with pytest.raises(ValueError, match="Softsign"):
        fastfem.converters.from_tf(model, "act_b", method="tf2jax")


def test_tf_function_tensors_by_scope(images):
    import tensorflow as tf

    rng = np.random.default_rng(0)
    k1 = tf.Variable(rng.normal(size=(3, 3, 3, 4)).astype(np.float32))
    k2 = tf.Variable(rng.normal(size=(3, 3, 4, 6)).astype(np.float32))

    @tf.function(autograph=False)
    def net(x):
        with tf.name_scope("block1"):
            h = tf.nn.relu(tf.nn.conv2d(x, k1, 1, "SAME"))
        with tf.name_scope("block2"):
            h = tf.nn.conv2d(h, k2, 2, "VALID")
        return tf.reduce_mean(h, axis=(1, 2))

    ext = fastfem.converters.from_tf(net, [None, "block1"], input_shape=SHAPE)
    assert ext.layer_names == ("block2", "block1")
    feats = jax.jit(ext.apply)(ext.params, images)
    h1 = tf.nn.relu(tf.nn.conv2d(images, k1, 1, "SAME"))
    close(feats.activations[1], h1.numpy())
    close(feats.activations[0], tf.nn.conv2d(h1, k2, 2, "VALID").numpy())
    assert len(jax.tree_util.tree_leaves(ext.params)) == 2


def test_lambda_h5_refused_unless_unsafe(tmp_path):
    import tf_keras

    inputs = tf_keras.Input((8, 8, 3))
    x = tf_keras.layers.Conv2D(2, 3, name="conv")(inputs)
    x = tf_keras.layers.Lambda(lambda t: t * 2.0, name="double")(x)
    path = tmp_path / "lambda.h5"
    tf_keras.Model(inputs, x).save(path)
    for loader in (load, fastfem.converters.from_tf, fastfem.FEM):
        with pytest.raises(ValueError, match=r"Lambda.*safe_mode=False"):
            loader(path)
    ext = fastfem.converters.from_tf(path, "conv", safe_mode=False)
    assert ext.layer_names == ("conv",)


def test_savedmodel_with_file_ops_refused(tmp_path):
    import tensorflow as tf

    class Writer(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec((None, 8, 8, 3), tf.float32)])
        def __call__(self, x):
            tf.io.write_file(str(tmp_path / "pwned"), "x")
            return {"y": x * 2.0}

    m = Writer()
    tf.saved_model.save(m, str(tmp_path / "sm"), signatures={"serving_default": m.__call__})
    with pytest.raises(ValueError, match=r"WriteFile.*safe_mode=False"):
        load(tmp_path / "sm")
    assert not (tmp_path / "pwned").exists()


def test_keras3_lambda_refused(tmp_path):
    import keras

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(2, 3)(inputs)
    x = keras.layers.Lambda(lambda t: t * 2.0)(x)
    path = tmp_path / "lambda.keras"
    keras.Model(inputs, x).save(path)
    with pytest.raises(ValueError, match=r"safe_mode=False.*fastfem convert --unsafe"):
        load(path)
