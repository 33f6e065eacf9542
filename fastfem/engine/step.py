"""The step contract: what every explainer hands to the code that runs it.

A `Step` is a pure, jittable function of ``(params, batch)`` and the params it is called
with (the anchor is optax's ``GradientTransformation``: a record of pure functions)::

    fn(params, batch: dict[str, Array (B, ...)]) -> dict[str, Array (B, ...)]

``batch`` holds per-example arrays (``"x"``: the images (B, H, W, C); other keys for methods
that need more, e.g. FAM's ``"reference"``), named in ``inputs``; every output is per example
(leading axis B). The explainers' ``step(sample_shape, *, resize=...)`` return one;
`fastfem.engine.runner.Runner` runs it batch by batch (padded, sharded, jitted once); the audit, the
metrics and the TF SavedModel export consume it without knowing which method made it.

Keys every explainer's step returns: ``"maps"`` (B, H, W) at the input size (``resize=True``)
or (B, h, w) at the method's own resolution, and ``"finite"`` (B, 2) bool (input pixels,
activations; `fastfem.kernels.finite`); ``"output"`` (B, ...) when the extractor returns the
model's output (the same forward pass).

A multi-stage computation is a list of step functions sharing one params pytree: a stage may
return its successor's batch under the key `CARRY` (it stays on the devices, never fetched).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax

#: Key under which a stage hands its successor's batch (kept on the devices).
CARRY = "carry"

Batch = dict[str, jax.Array]
StepFn = Callable[[Any, Batch], dict[str, Any]]


class Step(NamedTuple):
    """A pure per-batch function and its parameters.

    Attributes:
      fn: ``(params, batch) -> dict`` of per-example arrays; jittable, no side effects.
      params: the pytree ``fn`` is called with (model weights, resize matrices, prototypes...).
      inputs: the keys of ``batch`` that ``fn`` reads, in the order a caller supplies them.
    """

    fn: StepFn
    params: Any
    inputs: tuple[str, ...] = ("x",)
