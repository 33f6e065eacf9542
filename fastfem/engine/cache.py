"""Compiled steps, cached by hashable settings in one place (big_vision's ``get_eval_fn``).

`cached_step` keys a step function by its model (the extractor's pure ``apply``, by identity;
the weights are the step's params) and every hashable setting it is built from, so explainers
of one model with the same settings share one function, one `runner_for` and one compilation;
no explainer carries a cache. Both keep the `KEPT` most recently used entries: a built step
closes over its model and a runner keeps its weights on the devices, so an unbounded cache
would hold every model a process explained."""

from __future__ import annotations

import collections
import functools
from collections.abc import Callable, Hashable

from jax.sharding import Mesh

from fastfem.engine.runner import Runner
from fastfem.engine.step import StepFn

#: Entries kept by each cache (least recently used dropped first).
KEPT = 16

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
