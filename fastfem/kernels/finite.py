"""Per-sample finiteness flags as one float reduction (fused and vectorised by XLA).

For a batch ``x`` of shape (N, ...)::

    finite[n] = isfinite( sum_i (x[n, i] - x[n, i]) )

``x - x`` is exactly 0 for a finite element and NaN for NaN or +-inf, and a sum of zeros stays
0 while any NaN makes it NaN, so ``finite[n]`` is True iff every element of sample ``n`` is
finite: the same flags as ``all(isfinite(x), axis=1..)``. On XLA:CPU this runs as one fused
subtract-and-sum loop, 3x faster than ``all(isfinite)`` (a boolean array and a reduce-window:
64x64x64x3 float32, 0.43 ms -> 0.14 ms on a 2-core CPU). It relies on IEEE semantics (XLA's
default); with fast-math flags that assume no NaN/inf, neither form can be trusted.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp


def rows_finite(x: jax.Array) -> jax.Array:
    """(N,) bool: every element of ``x[n]`` is finite (no NaN, no +-inf)."""
    flat = x.reshape(x.shape[0], -1)
    return jnp.isfinite(jnp.sum(flat - flat, axis=1))


def input_and_activation_finite(
    x: jax.Array, activations: jax.Array | Sequence[jax.Array]
) -> jax.Array:
    """(N, 2) bool: column 0 every input pixel is finite, column 1 every activation is (of
    every layer, when several are given).

    Both are checked because a NaN pixel does not always reach the activations (XLA's
    max-pooling can drop it), which would give a finite map computed from a corrupt image.
    This is fastfem's one finiteness rule: every explainer's step returns these flags as
    ``finite`` and the host decides what to do with them (`fastfem.engine.nonfinite`).
    """
    layers = list(activations) if isinstance(activations, (list, tuple)) else [activations]
    acts = rows_finite(layers[0])
    for a in layers[1:]:
        acts = acts & rows_finite(a)
    return jnp.stack([rows_finite(x), acts], axis=1)
