"""The registry of methods: ONE tuple lists them, ONE factory builds their explainers.

Adding a method is one new module (its explainer and its `fastfem.explainers.method.Method`)
and one line in `METHODS`; the CLI's ``--method`` choices and options, the audit and the
evaluation read everything else from the record.

`make_explainer` builds a method's explainer on a model (a path, a Keras model, a
`FeatureExtractor`); `cached_explainer` keeps the last few built on model FILES, keyed by
hashable settings (the file's stamp, the method, its layers and settings, the batch size, the
preprocessing, the devices), so a second call in one process reuses the loaded model and the
compiled steps it holds (big_vision's ``get_eval_fn`` pattern).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Hashable, Mapping
from typing import Any

import jax

from fastfem.converters import FeatureExtractor
from fastfem.data.preprocess import Preprocess, with_preprocessing
from fastfem.explainers import fam, fem, mean_activation, mlfem
from fastfem.explainers.method import Explainer, Method

METHODS: tuple[Method, ...] = (
    fem.METHOD,
    mlfem.METHOD,
    fam.METHOD,
    mean_activation.METHOD,
)


def method_named(name: str, methods: tuple[Method, ...] = METHODS) -> Method:
    """The method called ``name``; a ValueError naming the known ones."""
    for method in methods:
        if method.name == name:
            return method
    raise ValueError(f"unknown method {name!r}; expected one of {[m.name for m in methods]}")


def users_of(setting: str, methods: tuple[Method, ...] = METHODS) -> str:
    """``method='a'/'b'``: the methods that have ``setting`` (for error messages)."""
    names = [m.name for m in methods if any(s.name == setting for s in m.settings)]
    return "method=" + "/".join(repr(n) for n in names)


def check_settings(
    method: Method,
    given: Mapping[str, Any],
    spell: Callable[[str], str] = lambda name: f"{name}=",
) -> dict[str, Any]:
    """``method``'s settings from ``given`` (None: not given -> the default); a ValueError
    naming a setting given that the method does not have (as ``spell`` writes it: ``k=``,
    ``--k``) and the methods that have it."""
    own = {s.name for s in method.settings}
    for name, value in given.items():
        if value is not None and name not in own:
            raise ValueError(f"{spell(name)} is only used by {users_of(name)}")
    return method.values(given)


def layer_list(layer: Any) -> list[Any] | None:
    """``layer`` as a list of layer names/indices: None, one name/index, ``"a,b"`` or a
    sequence."""
    if layer is None:
        return None
    if isinstance(layer, str):
        return [t.strip() for t in layer.split(",") if t.strip()]
    if isinstance(layer, int):
        return [layer]
    return list(layer)


def make_explainer(
    name: str,
    model: Any,
    layer: Any = None,
    batch_size: int = 32,
    settings: Mapping[str, Any] | None = None,
    *,
    include_output: bool = False,
    preprocess: str | Preprocess | None = None,
) -> Explainer:
    """The explainer of method ``name`` on ``model`` (path, Keras model, `FeatureExtractor`).

    ``layer``: the explained layer(s) (`layer_list`; None: the method's default);
    ``settings``: the method's settings (`check_settings`); ``include_output``: the extractor
    also returns the model's output; ``preprocess``: the model's input preprocessing applied
    inside the extractor (`fastfem.data.preprocess`; None: none, the inputs are the model's).
    """
    method = method_named(name)
    values = check_settings(method, settings or {})
    layers = layer_list(layer)
    if isinstance(model, FeatureExtractor):
        if layers is not None:
            raise ValueError("layer= cannot re-select the layers of a FeatureExtractor")
        extractor = model
    else:
        extractor = method.load(model, layers, include_output)
    if preprocess is not None:
        extractor = with_preprocessing(extractor, preprocess)
    return method.build(extractor, batch_size, values)


def cached_explainer(
    name: str,
    model: Any,
    model_key: Hashable | None,
    layer: Any,
    batch_size: int,
    settings: Mapping[str, Any],
    preprocess: str | Preprocess,
) -> Explainer:
    """`make_explainer` with the model's output, kept (the last 4) when ``model_key`` (a
    model file's stamp) is given and the preprocessing is named; else built anew."""
    if model_key is None or not isinstance(preprocess, str):
        return make_explainer(
            name, model, layer, batch_size, settings, include_output=True, preprocess=preprocess
        )
    frozen = tuple(sorted((k, _hashable(v)) for k, v in settings.items()))
    devices = tuple(str(d) for d in jax.local_devices())
    return _cached(
        name, model, model_key, _hashable(layer), batch_size, frozen, preprocess, devices
    )


@functools.lru_cache(maxsize=4)
def _cached(name, model, model_key, layer, batch_size, frozen, preprocess, devices) -> Explainer:  # noqa: ANN001
    """`cached_explainer`'s store: every argument is part of the key."""
    del model_key, devices
    return make_explainer(
        name, model, layer, batch_size, dict(frozen), include_output=True, preprocess=preprocess
    )


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, (list, tuple)) else value
