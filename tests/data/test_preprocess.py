"""`fastfem.data.preprocess` against Keras's own ``preprocess_input`` on the same decoded pixels."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import keras
import numpy as np
import pytest
from fastfem.converters import from_fn

from fastfem.data.preprocess import PREPROCESS, preprocess_fn, preprocess_name, with_preprocessing

PIXELS = np.random.default_rng(0).integers(0, 256, (3, 5, 7, 3), dtype=np.uint8)

#: each mode and the keras.applications models that use it
KERAS = {
    "caffe": keras.applications.resnet50.preprocess_input,
    "tf": keras.applications.mobilenet_v2.preprocess_input,
    "torch": keras.applications.densenet.preprocess_input,
}


@pytest.mark.parametrize("mode", sorted(KERAS))
def test_modes_equal_keras_preprocess_input(mode):
    want = np.asarray(KERAS[mode](PIXELS.astype(np.float32).copy()))
    by_mode = np.asarray(
        keras.applications.imagenet_utils.preprocess_input(
            PIXELS.astype(np.float32).copy(), mode=mode
        )
    )
    np.testing.assert_allclose(by_mode, want, rtol=0, atol=1e-6)
    got = np.asarray(jax.jit(preprocess_fn(mode))(jnp.asarray(PIXELS)))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-5)
    # the same pixels as floats in [0, 1] give the same model input
    floats = np.asarray(preprocess_fn(mode)(PIXELS.astype(np.float32) / 255.0))
    np.testing.assert_allclose(floats, want, rtol=1e-5, atol=1e-4)


def test_unit_and_raw():
    unit = np.asarray(preprocess_fn("unit")(jnp.asarray(PIXELS)))
    np.testing.assert_array_equal(unit, PIXELS.astype(np.float32) / 255.0)  # bit-identical
    floats = np.random.default_rng(1).random((2, 3, 3, 3), dtype=np.float32)
    np.testing.assert_array_equal(np.asarray(preprocess_fn("unit")(floats)), floats)
    np.testing.assert_array_equal(
        np.asarray(preprocess_fn("raw")(jnp.asarray(PIXELS))), PIXELS.astype(np.float32)
    )


def test_errors_and_names():
    with pytest.raises(ValueError, match="unknown preprocess 'imagenet'"):
        preprocess_fn("imagenet")
    with pytest.raises(ValueError, match="needs RGB"):
        preprocess_fn("caffe")(jnp.zeros((1, 2, 2, 1), jnp.uint8))
    assert preprocess_name("caffe") == "caffe" and set(PREPROCESS) >= set(KERAS)

    def mine(x):
        return x / 255.0

    assert preprocess_name(mine).startswith("function ") and "mine" in preprocess_name(mine)


def test_with_preprocessing_runs_inside_the_extractor():
    seen = []

    def apply(params, x):
        seen.append(x.dtype)
        return x * params

    ext = with_preprocessing(from_fn(apply, 2.0, (5, 7, 3)), "tf")
    out = jax.jit(ext.apply)(ext.params, jnp.asarray(PIXELS)).activations[0]
    np.testing.assert_allclose(out, 2.0 * (PIXELS / 127.5 - 1.0), rtol=1e-6, atol=1e-6)
    assert seen == [jnp.float32] and "preprocess tf" in ext.source
