"""Flax front-end: linen modules and NNX modules, activations by module path.

Linen: ``from_flax(module, variables, layers="Conv_1")``. ``apply(params, x)`` runs
``module.apply(params, x, capture_intermediates=<only the chosen paths>,
mutable=["intermediates"])``; ``params`` is the variables dict (``{"params": ...,
"batch_stats": ...}``). A layer is a module path joined by ``/`` (``"block2/conv"``): its
``__call__`` output; or a value the model ``sow``s into the ``"intermediates"`` collection, named
by its module path and sow name (``"block2/features"``).

NNX: ``from_flax(model, layers="conv_b")``. The model is split once into its graph definition and
state (``nnx.split``); ``apply(state, x)`` merges them and runs the model under
``nnx.capture(..., nnx.Intermediate, method_outputs=nnx.Intermediate)``, which records every
sub-module's ``__call__`` output (and ``sow``n ``nnx.Intermediate`` values) by attribute path.
Put the model in inference mode first (``model.eval()``: BatchNorm running averages, no dropout).

Default layer (``layers=None``), as Xplique's "last layer with ``filters``": the last ``Conv``
module with a 4-D output, in call order (linen) or attribute order (NNX, i.e. as assigned in
``__init__``). Module paths are listed in the error when a name is wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from .feature_extractor import FeatureExtractor, Features

CONV_CLASSES = ("Conv", "ConvLocal", "ConvTranspose")


def is_linen_module(obj: Any) -> bool:
    return any(c.__module__.startswith("flax.linen") for c in type(obj).__mro__)


def is_nnx_module(obj: Any) -> bool:
    return any(c.__module__.startswith("flax.nnx") for c in type(obj).__mro__)


def _as_list(layers: Any) -> list:
    if layers is None or isinstance(layers, str):
        return [layers]
    return list(layers)


def _spec_shape(input_shape: Sequence[int]) -> jax.ShapeDtypeStruct:
    if any(d is None for d in input_shape):
        raise ValueError(f"input_shape must be fully known (H, W, C); got {tuple(input_shape)}")
    return jax.ShapeDtypeStruct((1, *input_shape), jnp.float32)


def _resolve(
    specs: list, paths: dict[str, tuple], default_order: list[str], what: str
) -> list[str]:
    """Map layer specs to captured paths; ``paths``: path -> output shape."""
    four_d = [p for p, shape in paths.items() if len(shape) == 4]
    listing = ", ".join(repr(p) for p in four_d) or "(none)"
    out = []
    for spec in specs:
        if spec is None:
            if not default_order:
                raise ValueError(
                    f"{what} has no Conv module with a 4-D output; pass layers= one of: {listing}"
                )
            out.append(default_order[-1])
            continue
        if not isinstance(spec, str):
            raise TypeError(f"Flax layers are module paths like 'block1/conv'; got {spec!r}")
        name = spec.strip("/")
        if name not in paths:
            raise ValueError(
                f"no module path or sown value {spec!r} in {what}; 4-D ones: {listing}"
            )
        if len(paths[name]) != 4:
            raise ValueError(
                f"{spec!r} outputs shape {paths[name]}, not (N, h, w, C); 4-D ones: {listing}"
            )
        out.append(name)
    return out


# ------------------------------------------------------------------------------------------------
# linen
# ------------------------------------------------------------------------------------------------


def _flatten_linen(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Captured intermediates -> ``{path: value}``.

    ``{"conv": {"__call__": (y,)}, "block": {"feat": (v,)}}`` -> ``{"conv": y, "block/feat": v}``.
    """
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if key == "__call__":
            out[prefix.rstrip("/")] = value[-1]
        elif isinstance(value, tuple):
            out[prefix + key] = value[-1]
        elif hasattr(value, "items"):
            out.update(_flatten_linen(value, prefix + key + "/"))
    return out


def from_linen(
    module: Any,
    variables: Any,
    input_shape: Sequence[int],
    layers: str | Sequence[str] | None = None,
    include_output: bool = False,
    apply_kwargs: dict | None = None,
) -> FeatureExtractor:
    """A `FeatureExtractor` for a ``flax.linen`` module and its variables."""
    kwargs = dict(apply_kwargs or {})
    order: list[tuple[str, str]] = []

    def record(mdl: Any, method: str) -> bool:
        if method == "__call__":
            order.append(("/".join(mdl.path), type(mdl).__name__))
        return method == "__call__"

    def probe(v: Any, x: jax.Array) -> Any:
        _, state = module.apply(
            v, x, capture_intermediates=record, mutable=["intermediates"], **kwargs
        )
        return state.get("intermediates", {})

    shapes = jax.eval_shape(probe, variables, _spec_shape(input_shape))
    paths = {p: tuple(a.shape) for p, a in _flatten_linen(shapes).items() if p}
    convs = [p for p, cls in order if cls in CONV_CLASSES and len(paths.get(p, ())) == 4]
    names = _resolve(_as_list(layers), paths, convs, f"linen module {type(module).__name__}")
    wanted = set(names)

    def capture(mdl: Any, method: str) -> bool:
        return method == "__call__" and "/".join(mdl.path) in wanted

    def apply(p: Any, x: jax.Array) -> Features:
        out, state = module.apply(
            p, x, capture_intermediates=capture, mutable=["intermediates"], **kwargs
        )
        flat = _flatten_linen(state.get("intermediates", {}))
        return Features(
            activations=tuple(flat[n] for n in names), output=out if include_output else None
        )

    return FeatureExtractor(
        apply=apply,
        params=variables,
        input_shape=tuple(input_shape),
        layer_names=tuple(names),
        has_output=include_output,
        source="flax.linen (module.apply, capture_intermediates)",
    )


# ------------------------------------------------------------------------------------------------
# NNX
# ------------------------------------------------------------------------------------------------


def _flatten_nnx(state: Any) -> dict[str, Any]:
    """Captured ``nnx.State`` -> ``{"conv_b": y, "block/feat": v}`` (last call of each)."""
    from flax import nnx

    out: dict[str, Any] = {}
    for path, leaf in nnx.to_flat_state(state):
        value = leaf.get_value() if hasattr(leaf, "get_value") else getattr(leaf, "value", leaf)
        keys = [str(k) for k in path]
        if keys and keys[-1] == "__call__":
            keys = keys[:-1]
        elif keys and keys[-1].isdigit():  # a sow tuple flattened by index
            continue
        if isinstance(value, tuple):
            value = value[-1]
        out["/".join(keys)] = value
    return out


def from_nnx(
    model: Any,
    input_shape: Sequence[int],
    layers: str | Sequence[str] | None = None,
    include_output: bool = False,
) -> FeatureExtractor:
    """A `FeatureExtractor` for a ``flax.nnx`` module (its state becomes ``params``)."""
    from flax import nnx

    graphdef, state = nnx.split(model)

    def run(s: Any, x: jax.Array) -> tuple[Any, dict[str, Any]]:
        m = nnx.merge(graphdef, s)
        out, captured = nnx.capture(m, nnx.Intermediate, method_outputs=nnx.Intermediate)(x)
        return out, _flatten_nnx(captured)

    _, shapes = jax.eval_shape(run, state, _spec_shape(input_shape))
    paths = {p: tuple(a.shape) for p, a in shapes.items() if p}
    convs = [
        "/".join(str(k) for k in path)
        for path, node in nnx.iter_graph(model)
        if type(node).__name__ in CONV_CLASSES and isinstance(node, nnx.Module)
    ]
    convs = [p for p in convs if len(paths.get(p, ())) == 4]
    names = _resolve(_as_list(layers), paths, convs, f"NNX module {type(model).__name__}")

    def apply(s: Any, x: jax.Array) -> Features:
        out, flat = run(s, x)
        return Features(
            activations=tuple(flat[n] for n in names), output=out if include_output else None
        )

    return FeatureExtractor(
        apply=apply,
        params=state,
        input_shape=tuple(input_shape),
        layer_names=tuple(names),
        has_output=include_output,
        source="flax.nnx (split/merge, nnx.capture)",
    )


def from_flax(
    model: Any,
    variables: Any = None,
    layers: str | Sequence[str] | None = None,
    input_shape: Sequence[int] | None = None,
    include_output: bool = False,
    apply_kwargs: dict | None = None,
) -> FeatureExtractor:
    """A `FeatureExtractor` for a Flax model.

    Args:
      model: a ``flax.linen.Module`` (with ``variables``) or a ``flax.nnx.Module``.
      variables: linen only: the variables dict from ``module.init`` / training.
      layers: module path(s) (``"block1/conv"``) or sown value name(s); None -> the last Conv.
      input_shape: per-sample (H, W, C); required (Flax modules do not record it).
      include_output: also return the model's output.
      apply_kwargs: linen only: extra keyword arguments for ``module.apply`` (e.g.
        ``{"train": False}``).
    """
    if input_shape is None:
        raise ValueError("from_flax needs input_shape=(H, W, C): Flax modules do not record it")
    if is_nnx_module(model):
        if variables is not None:
            raise ValueError("an NNX module carries its own state; do not pass variables")
        return from_nnx(model, input_shape, layers, include_output)
    if is_linen_module(model):
        if variables is None:
            raise ValueError("a linen module needs its variables (from module.init or training)")
        return from_linen(model, variables, input_shape, layers, include_output, apply_kwargs)
    raise TypeError(f"expected a flax.linen or flax.nnx Module; got {type(model).__name__}")
