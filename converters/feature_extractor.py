"""`FeatureExtractor`: what every model front-end is converted to.

A feature extractor is a *pure* function ``apply(params, x) -> Features`` plus the parameters
pytree it closes over nothing else, and a description of what it expects. The explainers jit it
once together with the explanation kernel, so whatever the model was (Keras 3, a TF graph, Flax,
plain JAX), activation extraction runs under ``jax.jit`` and can be sharded.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax

from .cpu_convs.conv_forms import cpu_conv_forms_when_wanted


class Features(NamedTuple):
    """What ``apply`` returns for a batch.

    activations: one array per requested layer, each (N, h, w, C), in the order of
        `FeatureExtractor.layer_names`.
    output: the model's output (N, ...) when the extractor was built with the output, else None.
    """

    activations: tuple[jax.Array, ...]
    output: jax.Array | None = None


Apply = Callable[[Any, jax.Array], Features]


def features_apply(
    call: Callable[[Any, jax.Array], Any], n_layers: int, include_output: bool
) -> Apply:
    """``apply(params, x) -> Features`` of a ``call`` returning [activations..., output] (a
    list or tuple; one array alone is the one activation)."""

    def apply(p: Any, x: jax.Array) -> Features:
        out = call(p, x)
        out = list(out) if isinstance(out, (list, tuple)) else [out]
        return Features(
            activations=tuple(out[:n_layers]),
            output=out[n_layers] if include_output else None,
        )

    return apply


@dataclasses.dataclass(frozen=True)
class FeatureExtractor:
    """A pure ``apply(params, x) -> Features`` with its params and input spec.

    Attributes:
      apply: pure function of (params, x); x is a batch (N, H, W, C) float32. Stored wrapped by
        `fastfem.converters.cpu_convs.conv_forms.cpu_conv_forms_when_wanted`: on CPU its 1x1 and
        depthwise convolutions run in their fast forms (``FASTFEM_CPU_CONVS=off`` keeps them
        as written), whatever front-end made it.
      params: pytree of arrays passed as the first argument of ``apply`` (replicated on devices).
      input_shape: per-sample input shape (H, W, C); None for a dimension the model leaves free.
      layer_names: names of the layers whose activations ``apply`` returns, in order.
      has_output: whether ``Features.output`` is filled.
      source: how the extractor was made (e.g. "keras-jax (stateless_call)"), for logs/manifests.
    """

    apply: Apply
    params: Any
    input_shape: tuple[int | None, ...]
    layer_names: tuple[str, ...]
    has_output: bool = False
    source: str = "jax function"

    def __post_init__(self) -> None:
        object.__setattr__(self, "apply", cpu_conv_forms_when_wanted(self.apply))

    @property
    def layer_name(self) -> str:
        """The single explained layer; a ValueError if the extractor returns several."""
        if len(self.layer_names) != 1:
            raise ValueError(
                f"this extractor returns {len(self.layer_names)} layers {self.layer_names}; "
                "a single-layer method needs exactly one"
            )
        return self.layer_names[0]


def from_fn(
    apply: Callable[[Any, jax.Array], Any],
    params: Any,
    input_shape: Sequence[int | None],
    layer_names: Sequence[str] = ("activations",),
    has_output: bool = False,
) -> FeatureExtractor:
    """Wrap a plain JAX function ``apply(params, x)`` as a `FeatureExtractor`.

    ``apply`` may return a `Features`, a single activation array (N, h, w, C), or a tuple/list of
    activation arrays (one per name in ``layer_names``).
    """
    names = tuple(layer_names)

    def wrapped(p: Any, x: jax.Array) -> Features:
        out = apply(p, x)
        if isinstance(out, Features):
            return out
        if isinstance(out, (tuple, list)):
            return Features(activations=tuple(out))
        return Features(activations=(out,))

    return FeatureExtractor(
        apply=wrapped,
        params=params,
        input_shape=tuple(input_shape),
        layer_names=names,
        has_output=has_output,
        source="jax function",
    )
