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

import jax
import jax.numpy as jnp
import numpy as np


def rows_finite(x: jax.Array) -> jax.Array:
    """(N,) bool: every element of ``x[n]`` is finite (no NaN, no +-inf)."""
    flat = x.reshape(x.shape[0], -1)
    return jnp.isfinite(jnp.sum(flat - flat, axis=1))


def input_and_activation_finite(x: jax.Array, activations: jax.Array) -> jax.Array:
    """(N, 2) bool: column 0 every input pixel is finite, column 1 every activation is."""
    return jnp.stack([rows_finite(x), rows_finite(activations)], axis=1)


def raise_on_nonfinite(
    finite: np.ndarray, offset: int, layer: str, what: str = "inputs", hint: str = ""
) -> None:
    """Raise a ValueError naming the samples whose pixels or activations are NaN/inf.

    ``finite`` is the host copy of `input_and_activation_finite` for one batch, (N, 2) bool;
    ``offset`` is the batch's first index in the whole input. Both columns are checked because
    a NaN pixel does not always reach the activations (XLA's max-pooling can drop it), which
    would give a finite map computed from a corrupt image. ``hint`` ends the message (e.g. the
    option that returns NaN maps instead).
    """
    bad = np.flatnonzero(~finite.all(axis=1))
    if bad.size:
        shown = ", ".join(
            f"{offset + int(i)} ({'input' if not finite[i, 0] else 'activations'})"
            for i in bad[:20]
        )
        more = f" and {bad.size - 20} more" if bad.size > 20 else ""
        raise ValueError(
            f"non-finite values (NaN or inf) in the {what} or in their activations at layer "
            f"{layer!r}, at index(es) {shown}{more}; fix those images{hint}"
        )
