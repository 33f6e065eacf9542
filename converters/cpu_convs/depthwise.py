"""Depthwise convolution as a sum of shifted, strided slices: the fast form on XLA:CPU.

XLA:CPU lowers ``lax.conv_general_dilated(..., feature_group_count=C)`` (how the Keras JAX
backend runs ``DepthwiseConv2D`` and the depthwise half of ``SeparableConv2D``) to a grouped
convolution that is slow on CPU: 6-40x slower than the formulation below on MobileNetV2's
depthwise shapes (batch 32, 2-core CPU; see ``benchmarks/probe_depthwise.py``).

For an input ``x`` of shape (N, *S, C) (channels last), a kernel ``w`` of shape (*K, C, M)
(M = depth multiplier), strides ``s``, dilation ``d`` and zero padding ``p`` (``xp`` = padded x)::

    y[n, o, c*M + m] = sum_{t in K} xp[n, o*s + t*d, c] * w[t, c, m]

Each tap ``t`` is a strided slice of ``xp`` shaped like the output, times a per-channel vector,
so the whole sum is elementwise multiply-adds that XLA fuses into one loop over the output. The
sum runs over the taps in row-major order; results match ``lax.conv_general_dilated`` to float32
rounding (relative error ~1e-7), not bit for bit.

`fastfem.converters.cpu_convs.conv_forms` puts it in place of every depthwise
``conv_general_dilated`` of a feature extractor traced for a CPU device.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

Padding = str | Sequence[tuple[int, int]]


def _spatial_tuple(value: int | Sequence[int], rank: int) -> tuple[int, ...]:
    """An int or a length-``rank`` sequence as a ``rank``-tuple of ints."""
    if isinstance(value, int):
        return (value,) * rank
    out = tuple(int(v) for v in value)
    if len(out) != rank:
        raise ValueError(f"expected {rank} spatial values, got {out}")
    return out


def _pads(
    in_shape: Sequence[int],
    kernel_shape: Sequence[int],
    strides: Sequence[int],
    dilation: Sequence[int],
    padding: Padding,
) -> list[tuple[int, int]]:
    """(low, high) zero padding per spatial dim, exactly as ``lax.conv_general_dilated``.

    The dilated kernel spans ``(k - 1) * d + 1`` pixels; string paddings go through
    ``lax.padtype_to_pads`` (SAME puts the odd pixel on the high side).
    """
    if isinstance(padding, str):
        span = [(k - 1) * d + 1 for k, d in zip(kernel_shape, dilation, strict=True)]
        return [
            (int(lo), int(hi)) for lo, hi in lax.padtype_to_pads(in_shape, span, strides, padding)
        ]
    return [(int(lo), int(hi)) for lo, hi in padding]


def _out_size(n_padded: int, k: int, s: int, d: int) -> int:
    """Output length of a strided, dilated window: ``floor((n_padded - (k-1)*d - 1) / s) + 1``."""
    return (n_padded - (k - 1) * d - 1) // s + 1


def _accumulation_dtype(dtype: Any) -> Any:
    """float32 for half-precision inputs (one rounding at the end, like a conv), else ``dtype``."""
    return jnp.float32 if jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16) else dtype


def depthwise_conv_taps(
    x: jax.Array,
    kernel: jax.Array,
    strides: int | Sequence[int] = 1,
    padding: Padding = "valid",
    dilation: int | Sequence[int] = 1,
) -> jax.Array:
    """Channels-last depthwise convolution as a sum of strided slices (module docstring).

    Args:
      x: (N, *S, C) input, any number of spatial dims.
      kernel: (*K, C, M) depthwise kernel (Keras layout; M = depth multiplier).
      strides, dilation: int or one per spatial dim.
      padding: "valid", "same" (any case, as ``lax``), or explicit (low, high) pairs.

    Returns:
      (N, *O, C*M); output channel ``c*M + m`` comes from input channel ``c`` (as Keras/lax).
    """
    rank = x.ndim - 2
    k_shape = kernel.shape[:rank]
    channels, mult = kernel.shape[rank], kernel.shape[rank + 1]
    if x.shape[-1] != channels:
        raise ValueError(f"input has {x.shape[-1]} channels, the kernel expects {channels}")
    s = _spatial_tuple(strides, rank)
    d = _spatial_tuple(dilation, rank)
    pads = _pads(x.shape[1:-1], k_shape, s, d, padding)
    out_dtype = jnp.result_type(x, kernel)
    acc_dtype = _accumulation_dtype(out_dtype)
    xp = jnp.pad(x.astype(acc_dtype), [(0, 0), *pads, (0, 0)])
    w = kernel.astype(acc_dtype)
    out = [_out_size(xp.shape[1 + i], k_shape[i], s[i], d[i]) for i in range(rank)]
    if mult > 1:  # (N, *S, C, 1) * (C, M) -> (N, *O, C, M) -> (N, *O, C*M)
        xp = xp[..., None]
    acc = None
    for tap in itertools.product(*(range(k) for k in k_shape)):
        start = [t * di for t, di in zip(tap, d, strict=True)]
        limit = [st + (o - 1) * si + 1 for st, o, si in zip(start, out, s, strict=True)]
        trailing = xp.shape[1 + rank :]
        piece = lax.slice(
            xp,
            (0, *start, *(0 for _ in trailing)),
            (xp.shape[0], *limit, *trailing),
            (1, *s, *(1 for _ in trailing)),
        )
        term = piece * (w[tap] if mult > 1 else w[tap][:, 0])
        acc = term if acc is None else acc + term
    return acc.reshape(x.shape[0], *out, channels * mult).astype(out_dtype)
