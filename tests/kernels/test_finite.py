"""`fastfem.kernels.finite`: the subtract-and-sum flags equal ``all(isfinite)`` per sample."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fastfem.kernels.finite import input_and_activation_finite, rows_finite


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_rows_finite_matches_all_isfinite(dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((12, 9, 7, 3)).astype(np.float32) * 1e30  # big, but finite
    for n, value, where in [
        (1, np.nan, (0, 0, 0)),
        (4, np.inf, (8, 6, 2)),
        (5, -np.inf, (3, 3, 1)),
        (7, np.nan, (8, 6, 2)),
        (7, np.inf, (0, 1, 0)),
    ]:
        x[(n, *where)] = value
    xj = jnp.asarray(x).astype(dtype)
    expected = np.asarray(jnp.all(jnp.isfinite(xj), axis=(1, 2, 3)))
    got = np.asarray(jax.jit(rows_finite)(xj))
    np.testing.assert_array_equal(got, expected)
    assert list(np.flatnonzero(~got)) == [1, 4, 5, 7]


def test_input_and_activation_columns():
    x = np.ones((3, 4, 4, 3), np.float32)
    a = np.ones((3, 2, 2, 5), np.float32)
    x[0, 1, 1, 1] = np.nan
    a[2, 0, 0, 4] = -np.inf
    flags = np.asarray(input_and_activation_finite(jnp.asarray(x), jnp.asarray(a)))
    np.testing.assert_array_equal(flags, [[False, True], [True, True], [True, False]])
