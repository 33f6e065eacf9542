"""The taps form of depthwise convolution (`fastfem.converters.cpu_convs.depthwise`).

`depthwise_conv_taps` matches ``lax.conv_general_dilated(feature_group_count=C)`` (what the Keras
JAX backend runs) to float32 rounding for 1D/2D, stride 1/2, valid/same, dilation, depth
multiplier 1/2, kernel 3/5, odd and even sizes, explicit pads and bfloat16 (other layouts:
tests/converters/test_conv_forms.py).
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from fastfem.converters.cpu_convs import depthwise
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
