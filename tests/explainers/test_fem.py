"""The user-facing `fastfem.FEM` explainer: Xplique's behaviours, inputs, errors, batching."""

import jax
import keras
import numpy as np
import pytest
from fastfem.converters import Features, from_fn
from fem_reference import numpy_fem, numpy_fem_resized
from tiny_models import small_cnn

import fastfem


@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3)])
def test_output_shape_like_xplique(shape):
    model = small_cnn(shape)
    x = np.random.default_rng(0).random((5, *shape), dtype=np.float32)
    maps = fastfem.FEM(model).explain(x)
    assert maps.shape == (5, shape[0], shape[1], 1)
    assert maps.dtype == np.float32
    assert np.ptp(maps) > 0


def test_layer_selection_like_xplique(cnn32, images32):
    x = images32[:4]
    default = fastfem.FEM(cnn32)
    assert default.layer_name == "conv_b"  # last layer with `filters`
    by_index = fastfem.FEM(cnn32, conv_layer=1)  # model.layers[1] == conv_a (layers[0] is Input)
    assert by_index.layer_name == cnn32.layers[1].name == "conv_a"
    by_name = fastfem.FEM(cnn32, conv_layer="relu_a")  # a non-conv layer by name
    assert by_name.layer_name == "relu_a"
    np.testing.assert_array_equal(default.explain(x), fastfem.FEM(cnn32, conv_layer=-4).explain(x))
    assert by_name.explain(x).shape == (4, 32, 32, 1)


def test_unknown_layer_lists_conv_candidates(cnn32):
    with pytest.raises(ValueError, match=r"no layer named 'nope'.*'conv_a', 'conv_b'"):
        fastfem.FEM(cnn32, conv_layer="nope")
    with pytest.raises(ValueError, match="out of range"):
        fastfem.FEM(cnn32, conv_layer=99)
    with pytest.raises(ValueError, match=r"not \(N, h, w, C\)"):
        fastfem.FEM(cnn32, conv_layer="dense")


def test_model_without_conv_layer():
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(inputs)))
    with pytest.raises(ValueError, match="has no convolutional layer"):
        fastfem.FEM(model)


def test_bad_inputs(cnn32, images32):
    fem = fastfem.FEM(cnn32)
    with pytest.raises(ValueError, match="single image"):
        fem.explain(images32[0])
    with pytest.raises(ValueError, match="rank 4"):
        fem.explain(images32[None])
    with pytest.raises(ValueError, match="grayscale image where the model expects 3 channels"):
        fem.explain(images32[..., :1])
    with pytest.raises(ValueError, match="image is 30x32, the model expects 32x32"):
        fem.explain(images32[:, :30])
    with pytest.raises(ValueError, match="empty"):
        fem.explain(images32[:0])
    with pytest.raises(TypeError, match="cannot read images from a object"):
        fem.explain(object())
    with pytest.raises(ValueError, match="unknown FEM variant"):
        fastfem.FEM(cnn32, variant="nope")


def test_nan_input_raises_naming_the_index(cnn32, images32):
    x = images32[:40].copy()
    x[3, 5, 5, 0] = np.nan
    x[37, 0, 0, 2] = np.inf
    # fails fast: the first batch with a bad input raises, naming its bad inputs
    with pytest.raises(
        ValueError,
        match=r"inputs or in their activations .* index\(es\) 3 \(input\);.*on_nonfinite='nan'",
    ):
        fastfem.FEM(cnn32, batch_size=32).explain(x)
    fem = fastfem.FEM(cnn32, batch_size=32, on_nonfinite="nan")
    maps = fem.explain(x)
    assert maps.shape == (40, 32, 32, 1)  # nothing dropped
    np.testing.assert_array_equal(fem.last_nonfinite, [3, 37])
    assert np.isnan(maps[[3, 37]]).all()
    clean = np.delete(np.arange(40), [3, 37])
    np.testing.assert_array_equal(maps[clean], fastfem.FEM(cnn32).explain(x[clean]))


def traced_extractor(model):
    """``model``'s extractor with every trace of its ``apply`` recorded: ``(extractor, traces)``
    (the input shape of each trace)."""
    traces = []
    base = fastfem.converters.from_keras(model)

    def apply(params, x):
        traces.append(x.shape)
        return base.apply(params, x)

    return from_fn(apply, base.params, base.input_shape, base.layer_names), traces


def test_batching_padding_and_one_trace(cnn32, images32):
    extractor, traces = traced_extractor(cnn32)
    fem = fastfem.FEM(extractor, batch_size=32)
    maps = fem.explain(images32)  # 70 = 32 + 32 + 6 (padded to 32)
    # ONE trace of the step (no shape probe: the resize matrices come from the traced shapes):
    # the last batch of 6 is padded to 32, not retraced
    assert traces == [(32, 32, 32, 3)], traces
    whole = fastfem.FEM(cnn32, batch_size=70).explain(images32)
    np.testing.assert_allclose(maps, whole, rtol=0, atol=1e-6 * np.abs(whole).max())
    fem.explain(images32[:50])
    assert len(traces) == 1  # a second call with another N reuses the compiled step


def test_explainers_with_one_model_and_settings_share_one_compiled_step(cnn32, images32):
    """Steps are cached by (extractor, settings) in `fastfem.engine.cache`, not in explainers:
    a second FEM on the same extractor with the same k traces nothing; another k is its own."""
    extractor, traces = traced_extractor(cnn32)
    first, second = (fastfem.FEM(extractor, batch_size=8) for _ in range(2))
    other_k = fastfem.FEM(extractor, batch_size=8, k=1.0)
    shape = images32.shape[1:]
    assert first.step(shape).fn is second.step(shape).fn
    assert first.runner(first.step(shape)) is second.runner(second.step(shape))
    assert other_k.step(shape).fn is not first.step(shape).fn
    np.testing.assert_array_equal(first.explain(images32[:8]), second.explain(images32[:8]))
    assert len(traces) == 1
    assert not any(isinstance(v, dict) for v in vars(first).values())  # no cache of its own


@pytest.mark.parametrize("variant", ["original", "gradcam"])
def test_variants_against_numpy_and_cv2(cnn32, images32, variant):
    x = images32[:6]
    # post-ReLU layer: with random weights the pre-ReLU gradcam sum is negative (map all 0)
    maps = fastfem.FEM(cnn32, conv_layer="relu_b", variant=variant).explain(x)
    acts = np.asarray(keras.Model(cnn32.inputs, cnn32.get_layer("relu_b").output)(x))
    for i in range(len(x)):
        ref = numpy_fem_resized(acts[i], 2.0, variant, (32, 32))
        assert np.abs(maps[i, ..., 0] - ref).max() <= 1e-5 * max(np.abs(ref).max(), 1e-6)
        assert np.ptp(ref) > 0
        if variant == "gradcam":  # min-maxed after the resize (pytorch-grad-cam's last step)
            assert ref.min() == 0 and abs(ref.max() - 1) < 1e-6


def test_feature_resolution_maps(cnn32, images32):
    fem = fastfem.FEM(cnn32)
    low = fem.explain(images32[:3], resize=False)
    acts = np.asarray(keras.Model(cnn32.inputs, cnn32.get_layer("conv_b").output)(images32[:3]))
    assert low.shape == (3, 15, 15)
    want = np.stack([numpy_fem(a, 2.0, "xplique") for a in acts])
    np.testing.assert_allclose(low, want, atol=1e-5 * np.abs(want).max())


def test_array_types_and_targets(cnn32, images32):
    import tensorflow as tf

    x = images32[:5]
    want = fastfem.FEM(cnn32).explain(x)
    fem = fastfem.FEM(cnn32)
    np.testing.assert_array_equal(fem.explain(jax.numpy.asarray(x)), want)
    np.testing.assert_array_equal(fem.explain(tf.constant(x)), want)
    np.testing.assert_array_equal(fem.explain(x.tolist()), want)
    np.testing.assert_array_equal(fem(x, targets=np.eye(3)[[0, 1, 2, 0, 1]]), want)
    ds = tf.data.Dataset.from_tensor_slices((x, np.arange(5)))
    np.testing.assert_array_equal(fem.explain(ds.batch(2)), want)
    np.testing.assert_array_equal(fem.explain(ds), want)
    # pixels as given (the model sees these numbers): uint8 and int64 as their float32 values
    u8 = (x * 255).astype(np.uint8)
    as_float = fem.explain(u8.astype(np.float32))
    assert np.ptp(as_float) > 0
    np.testing.assert_array_equal(fem.explain(u8), as_float)
    np.testing.assert_array_equal(fem.explain(u8.astype(np.int64)), as_float)


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_model_from_file(tmp_path, cnn32, images32, suffix):
    path = tmp_path / f"model{suffix}"
    cnn32.save(path)
    np.testing.assert_allclose(
        fastfem.FEM(str(path)).explain(images32[:4]),
        fastfem.FEM(cnn32).explain(images32[:4]),
        atol=1e-6,
    )
    with pytest.raises(FileNotFoundError):
        fastfem.FEM(tmp_path / "missing.keras")


def test_model_output_in_the_same_forward_pass(cnn32, images32):
    ext = fastfem.converters.from_keras(cnn32, layers=["conv_a", "conv_b"], include_output=True)
    feats = jax.jit(ext.apply)(ext.params, images32[:4])
    assert isinstance(feats, Features)
    assert [a.shape for a in feats.activations] == [(4, 30, 30, 8), (4, 15, 15, 16)]
    np.testing.assert_allclose(feats.output, np.asarray(cnn32(images32[:4])), atol=1e-5)
    with pytest.raises(ValueError, match="exactly one"):
        fastfem.FEM(ext)


@pytest.mark.parametrize("k", [float("nan"), float("inf"), -1.0, "2"])
def test_k_must_be_finite_and_non_negative(cnn32, k):
    with pytest.raises(ValueError, match="k must be a finite number >= 0"):
        fastfem.FEM(cnn32, k=k)


@pytest.mark.parametrize("batch_size", [2.5, None, "8", 0, -5, True])
def test_batch_size_must_be_a_positive_integer(cnn32, batch_size):
    for make in (
        lambda: fastfem.FEM(cnn32, batch_size=batch_size),
        lambda: fastfem.MLFEM(cnn32, batch_size=batch_size),
        lambda: fastfem.FAM(cnn32, batch_size=batch_size),
    ):
        with pytest.raises(ValueError, match="batch_size must be a positive integer"):
            make()


def test_cli_refuses_bad_numbers(capsys):
    from fastfem.cli import main

    for argv in (["--batch-size", "0"], ["--batch-size", "-5"], ["--k", "nan"], ["--k", "inf"]):
        with pytest.raises(SystemExit) as err:
            main(["audit", "--out", "unused", *argv])
        assert err.value.code == 2
        assert "error" in capsys.readouterr().err
