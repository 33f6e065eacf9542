"""Parity of the matrix resize (`fastfem.kernels.resize`) with TensorFlow and OpenCV."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fastfem.kernels.resize import (
    METHODS,
    bicubic_matrix,
    bilinear_matrix,
    resize_batch,
    resize_map,
    resize_matrices,
)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

#: Parity bound, relative to max |map|. Measured: <= 3e-7 for both methods (float32 round-off).
RTOL = 1e-6

# (in_hw, out_hw): integer and non-integer ratios, up and down, square and not.
PAIRS = [
    ((2, 2), (28, 28)),
    ((3, 3), (32, 32)),
    ((7, 7), (64, 64)),
    ((7, 7), (224, 224)),
    ((14, 14), (224, 224)),
    ((13, 13), (50, 50)),
    ((16, 16), (64, 64)),
    ((5, 5), (37, 37)),
    ((8, 8), (8, 8)),
    ((64, 64), (7, 7)),
    ((50, 50), (13, 13)),
    ((3, 5), (28, 40)),
    ((17, 23), (100, 77)),
    ((10, 10), (331, 331)),
]

# 1-D (in, out) pairs whose matrices must equal TF's bit for bit. (49, 187) is a size where
# float64 source coordinates would round to a different table entry than TF's float32 ones
# (a weight error of ~1.4e-3), so it checks the float32 emulation.
SIZES_1D = [
    (1, 5),
    (2, 28),
    (3, 32),
    (5, 37),
    (7, 224),
    (13, 50),
    (49, 187),
    (64, 7),
    (50, 13),
    (9, 1000),
    (300, 299),
    (6, 6),
]


@pytest.fixture(scope="module")
def tf():
    return pytest.importorskip("tensorflow")


def _tf_resize(tf, m: np.ndarray, out_hw: tuple[int, int], method: str) -> np.ndarray:
    """``tf.image.resize`` of one (h, w) map, as float32 (H, W)."""
    out = tf.image.resize(m[None, :, :, None], out_hw, method=method)
    return out.numpy()[0, :, :, 0]


def _tf_matrix(tf, in_size: int, out_size: int, method: str) -> np.ndarray:
    """TF's 1-D resize matrix, read off by resizing the one-hot columns (exact in float32)."""
    eye = np.eye(in_size, dtype=np.float32)[:, :, None, None]  # in_size images of (in_size, 1)
    out = tf.image.resize(eye, (out_size, 1), method=method).numpy()[:, :, 0, 0]
    return out.T


def _random_map(rng: np.random.Generator, hw: tuple[int, int]) -> np.ndarray:
    """Signed map with a non-zero offset and a large range (FEM maps are not normalised)."""
    return (rng.normal(size=hw) * 3.0 - 1.0).astype(np.float32)


def _rel_err(a: np.ndarray, b: np.ndarray, m: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(m)))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("in_hw", "out_hw"), PAIRS)
def test_matches_tf_image_resize(tf, method, in_hw, out_hw):
    rng = np.random.default_rng([*in_hw, *out_hw])
    m = _random_map(rng, in_hw)
    rh, rw = resize_matrices(in_hw, out_hw, method)
    ours = resize_map(jnp.asarray(m), jnp.asarray(rh), jnp.asarray(rw))
    assert ours.shape == out_hw and ours.dtype == jnp.float32
    assert _rel_err(ours, _tf_resize(tf, m, out_hw, method), m) <= RTOL


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("in_size", "out_size"), SIZES_1D)
def test_matrix_is_tf_bit_for_bit(tf, method, in_size, out_size):
    build = {"bicubic": bicubic_matrix, "bilinear": bilinear_matrix}[method]
    np.testing.assert_array_equal(
        build(in_size, out_size), _tf_matrix(tf, in_size, out_size, method)
    )


def test_jax_image_resize_differs_from_tf(tf):
    """Why this module exists: jax's exact Keys kernel is not TF's 1/1024-table kernel."""
    in_hw, out_hw = (5, 5), (37, 37)  # non-integer ratio
    m = _random_map(np.random.default_rng(0), in_hw)
    ref = _tf_resize(tf, m, out_hw, "bicubic")
    ours = resize_batch(jnp.asarray(m), out_hw, "bicubic")
    theirs = jax.image.resize(jnp.asarray(m), out_hw, method="cubic")
    ours_err, jax_err = _rel_err(ours, ref, m), _rel_err(theirs, ref, m)
    assert jax_err > 1e-4  # measured ~1.4e-3 of max |map|
    assert jax_err > 100 * max(ours_err, 1e-8)


@pytest.mark.parametrize(("in_hw", "out_hw"), PAIRS)
def test_bilinear_matches_cv2(in_hw, out_hw):
    cv2 = pytest.importorskip("cv2")
    m = _random_map(np.random.default_rng(1), in_hw)
    rh, rw = resize_matrices(in_hw, out_hw, "bilinear")
    ours = resize_map(jnp.asarray(m), jnp.asarray(rh), jnp.asarray(rw))
    ref = cv2.resize(m, (out_hw[1], out_hw[0]), interpolation=cv2.INTER_LINEAR)
    # cv2 computes source coordinates in float64, TF (and we) in float32: measured <= 2.2e-6.
    assert _rel_err(ours, ref, m) <= 1e-5


@pytest.mark.parametrize("method", METHODS)
def test_rows_are_partitions_of_unity(method):
    for in_size, out_size in SIZES_1D:
        r = resize_matrices((in_size, 1), (out_size, 1), method)[0]
        assert r.shape == (out_size, in_size) and r.dtype == np.float32
        np.testing.assert_allclose(r.sum(axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize("method", METHODS)
def test_same_size_is_identity(method):
    rh, rw = resize_matrices((8, 5), (8, 5), method)
    np.testing.assert_array_equal(rh, np.eye(8, dtype=np.float32))
    np.testing.assert_array_equal(rw, np.eye(5, dtype=np.float32))


def test_resize_matrices_cached_and_read_only():
    a = resize_matrices((7, 7), (224, 224), "bicubic")
    b = resize_matrices([7, 7], (np.int64(224), 224), "bicubic")
    assert a[0] is b[0] and a[1] is b[1]
    assert a[0].shape == (224, 7) and a[1].shape == (224, 7)
    for r in a:
        assert not r.flags.writeable
        with pytest.raises(ValueError):
            r[0, 0] = 1.0


def test_unknown_method_raises():
    with pytest.raises(ValueError, match="bicubic.*bilinear"):
        resize_matrices((7, 7), (224, 224), "nearest")
    with pytest.raises(ValueError, match="bicubic.*bilinear"):
        resize_batch(jnp.zeros((2, 7, 7)), (224, 224), "lanczos3")


def test_invalid_sizes_raise():
    with pytest.raises(ValueError, match="positive"):
        bicubic_matrix(0, 5)
    with pytest.raises(ValueError, match="positive"):
        bilinear_matrix(5, 0)


def test_resize_map_jit_and_vmap(tf):
    in_hw, out_hw = (3, 5), (28, 40)
    maps = np.stack([_random_map(np.random.default_rng(i), in_hw) for i in range(4)])
    rh, rw = (jnp.asarray(r) for r in resize_matrices(in_hw, out_hw, "bicubic"))

    batched = jax.jit(jax.vmap(resize_map, in_axes=(0, None, None)))(jnp.asarray(maps), rh, rw)
    assert batched.shape == (4, *out_hw)
    single = jax.jit(resize_map)(jnp.asarray(maps[2]), rh, rw)
    np.testing.assert_allclose(batched[2], single, rtol=0, atol=1e-6)

    ref = tf.image.resize(maps[..., None], out_hw, method="bicubic").numpy()[..., 0]
    assert _rel_err(batched, ref, maps) <= RTOL
    assert _rel_err(resize_batch(jnp.asarray(maps), out_hw, "bicubic"), ref, maps) <= RTOL


def test_resize_batch_under_jit():
    maps = jnp.asarray(np.random.default_rng(3).normal(size=(2, 3, 7, 7)), jnp.float32)
    fn = jax.jit(resize_batch, static_argnums=(1, 2))
    out = fn(maps, (64, 48), "bilinear")
    assert out.shape == (2, 3, 64, 48) and out.dtype == jnp.float32
    rh, rw = resize_matrices((7, 7), (64, 48), "bilinear")
    np.testing.assert_allclose(out[1, 2], resize_map(maps[1, 2], rh, rw), rtol=0, atol=1e-6)
