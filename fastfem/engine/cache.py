"""Compiled steps, cached by hashable settings in one place (big_vision's ``get_eval_fn``).

`cached_step` returns the step function of ``(model, settings)``: the model is its extractor's
pure ``apply`` (compared by identity; the weights are the step's params, not part of the key)
and ``settings`` every hashable value the step is built from (method, layer options, output
size, ...). Two explainers on the same extractor with the same settings get the same function
object, so `runner_for` gives them one `fastfem.engine.runner.Runner` and JAX compiles once. No
explainer carries a cache of its own.

Both caches keep the `KEPT` most recently used entries: a built step closes over its model, so
an unbounded cache would hold every model a process ever explained.
"""

from __future__ import annotations

import collections
import functools
from collections.abc import Callable, Hashable

from jax.sharding import Mesh

from fastfem.engine.runner import Runner
from fastfem.engine.step import StepFn

#: Entries kept by each cache (least recently used dropped first).
KEPT = 64

_steps: collections.OrderedDict[Hashable, StepFn] = collections.OrderedDict()


def cached_step(model: Callable, settings: Hashable, build: Callable[[], StepFn]) -> StepFn:
    """``build()`` for ``(model, settings)``, built on the first call and returned as the same
    object afterwards (until `KEPT` newer entries push it out). ``model``: the extractor's
    ``apply``; ``settings``: everything else the built function depends on."""
    key = (model, settings)
    fn = _steps.pop(key, None)
    if fn is None:
        fn = build()
    _steps[key] = fn
    while len(_steps) > KEPT:
        _steps.popitem(last=False)
    return fn


@functools.lru_cache(maxsize=KEPT)
def runner_for(fn: StepFn, batch_size: int, mesh: Mesh) -> Runner:
    """The `Runner` of ``fn`` at ``batch_size`` on ``mesh``, made once (it jits ``fn``)."""
    return Runner(fn, batch_size, mesh)
