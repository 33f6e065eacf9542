"""The FEM formula (fastfem.kernels.fem) against a NumPy reference written from the formula in
its module docstring (tests/support/fem_reference.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from fem_reference import numpy_fem, scale_cam

from fastfem.kernels.fem import channel_stats, fem_map, fem_resize, fem_sample, post_resize
from fastfem.kernels.fusion import unit_normalize
from fastfem.kernels.mlfem import layer_map
from fastfem.kernels.resize import resize_batch


def random_activations(seed, shape=(4, 9, 11, 16), relu=False):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=shape).astype(np.float32) * rng.uniform(0.1, 3, size=shape[-1])
    a += rng.normal(size=shape[-1]).astype(np.float32)  # channel offsets: negative means too
    return np.maximum(a, 0) if relu else a


@pytest.mark.parametrize("variant", ["xplique", "original", "gradcam"])
@pytest.mark.parametrize("k", [2.0, 1.0, 0.5])
@pytest.mark.parametrize("relu", [False, True])
def test_matches_numpy_reference(variant, k, relu):
    acts = random_activations(int(k * 10) + relu, relu=relu)
    got = np.asarray(jax.jit(fem_map, static_argnames="variant")(acts, k, variant))
    want = np.stack([numpy_fem(a, k, variant) for a in acts])
    assert got.shape == want.shape == acts.shape[:3]
    scale = max(np.abs(want).max(), 1e-6)
    assert np.abs(got - want).max() <= 1e-5 * scale
    assert np.ptp(want) > 0  # a map with structure, so the comparison can fail


def test_xplique_weights_example():
    # Xplique's own unit test: channel 0 constant 1 (sigma 0, all on), channel 1 peaks at (1, 1).
    a = np.array([[[1, 0], [1, 0]], [[1, 0], [1, 4]]], np.float32)
    np.testing.assert_array_equal(np.asarray(fem_sample(a, k=1.0)), [[1, 1], [1, 2]])


def test_degenerate_channel_rounding_is_treated_as_zero_sigma():
    # 0.1 is not representable: the float32 std of a constant 0.1 channel may be a tiny non-zero
    # value, which would switch the whole channel off under `A >= mu + k sigma`.
    a = np.full((7, 5, 2), 0.1, np.float32)
    a[..., 1] = np.arange(35, dtype=np.float32).reshape(7, 5)
    stats = channel_stats(jnp.asarray(a))
    assert float(stats.std[0]) == 0.0
    fem = np.asarray(fem_sample(a, k=2.0))
    # channel 0 is on everywhere with weight mean(0.1 channel)
    assert fem.min() >= np.float32(0.1) * 0.999


def test_bf16_activations_accumulate_in_float32():
    acts = random_activations(3, shape=(2, 14, 14, 64), relu=True)
    bf16 = jnp.asarray(acts, dtype=jnp.bfloat16)
    got = np.asarray(fem_map(bf16))
    assert got.dtype == np.float32
    rounded = np.asarray(bf16.astype(jnp.float32))
    want = np.stack([numpy_fem(a, 2.0, "xplique") for a in rounded])
    assert np.abs(got - want).max() <= 1e-5 * np.abs(want).max()


def test_leading_axes_and_vmap():
    acts = random_activations(4, shape=(2, 3, 6, 6, 4))
    got = np.asarray(fem_map(acts))
    assert got.shape == (2, 3, 6, 6)
    per = np.asarray(jax.vmap(jax.vmap(fem_sample))(jnp.asarray(acts)))
    np.testing.assert_allclose(got, per, rtol=0, atol=0)


def test_k_can_be_traced():
    acts = random_activations(5)
    f = jax.jit(lambda a, k: fem_map(a, k))
    np.testing.assert_allclose(np.asarray(f(acts, 1.5)), np.asarray(fem_map(acts, 1.5)), atol=0)


@pytest.mark.parametrize("variant", ["xplique", "original", "gradcam"])
def test_constant_and_zero_activations_are_finite(variant):
    for a in (np.zeros((5, 5, 3), np.float32), np.full((5, 5, 3), -2.0, np.float32)):
        out = np.asarray(fem_sample(a, variant=variant))
        assert np.all(np.isfinite(out))


def test_original_all_negative_map_is_not_divided():
    a = -np.abs(random_activations(6, shape=(8, 8, 4))) - 1
    np.testing.assert_allclose(
        np.asarray(fem_sample(a, variant="original")), numpy_fem(a, 2, "original"), rtol=1e-6
    )


def test_post_resize_min_maxes_gradcam_only():
    rng = np.random.default_rng(7)
    maps = (rng.random((3, 9, 13)) * 0.6 + 0.2).astype(np.float32)  # in [0.2, 0.8]
    maps[1] = 0.0  # an all-zero map stays 0 (eps in the denominator)
    maps[2, 0, 0] = -0.1  # a negative value is clipped before the min-max
    got = np.asarray(jax.jit(post_resize, static_argnames="variant")(maps, "gradcam"))
    want = np.stack([scale_cam(np.maximum(m.astype(np.float64), 0)) for m in maps])
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert got[0].min() == 0 and abs(got[0].max() - 1) < 1e-6
    np.testing.assert_array_equal(got[1], 0)
    for variant in ("xplique", "original"):
        np.testing.assert_array_equal(np.asarray(post_resize(maps, variant)), maps)
    with pytest.raises(ValueError, match="unknown FEM variant 'foo'"):
        post_resize(maps, "foo")
    # fem_resize = the variant's resize, then post_resize
    low = np.abs(random_activations(8, shape=(2, 5, 7, 1)))[..., 0]
    big = np.asarray(fem_resize(low, (12, 16), "gradcam"))
    bilinear = np.asarray(resize_batch(low, (12, 16), "bilinear"))
    np.testing.assert_allclose(big, np.stack([scale_cam(m) for m in bilinear]), atol=1e-6)
    np.testing.assert_array_equal(np.asarray(fem_resize(low, (12, 16), "original")), bilinear)


def test_layer_map_per_variant():
    m = np.array([[-0.2, 0.1], [0.3, 0.6]], np.float32)
    np.testing.assert_allclose(layer_map(m, "gradcam"), np.maximum(m, 0))
    for variant in ("xplique", "original"):
        np.testing.assert_allclose(layer_map(m, variant), unit_normalize(m))
    with pytest.raises(ValueError, match="unknown FEM variant"):
        layer_map(m, "max")


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown FEM variant 'foo'"):
        fem_map(np.zeros((1, 4, 4, 2), np.float32), variant="foo")
    with pytest.raises(ValueError, match=r"\(\.\.\., h, w, C\)"):
        fem_map(np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError, match=r"\(h, w, C\)"):
        fem_sample(np.zeros((1, 4, 4, 2), np.float32))
