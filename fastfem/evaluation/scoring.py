"""Which model score the faithfulness metrics use, and when the explanation can share its pass.

* `make_scorer`: the `fastfem.metrics.Scorer` of an explainer — the similarity of a FAM-like
  explainer (``explains_pairs``: FAM) to its reference, else the class score of ``model=``,
  ``explainer.model`` or an extractor built with the model output.
* `fused_explanation`: the scorer and the explainer's step on the scorer's extractor, when the
  scored model contains the explainer's weights (`same_weights`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from fastfem.converters import FeatureExtractor, load
from fastfem.engine.step import Step
from fastfem.metrics import faithfulness as F


def make_scorer(explainer: Any, model: Any = None, activation: F.Activation = None) -> F.Scorer:
    """The `Scorer` `fastfem.evaluate` uses for ``explainer`` (`fastfem.evaluation`)."""
    if getattr(explainer, "explains_pairs", False) and model is None:
        head = getattr(explainer, "head_function", None)
        return F.similarity_scorer(
            explainer.extractor,
            pooling=getattr(explainer, "pooling", "gap"),
            similarity=explainer.similarity,
            head=head() if callable(head) else None,
        )
    source = model if model is not None else getattr(explainer, "model", None)
    if source is None:
        ext = getattr(explainer, "extractor", None)
        if isinstance(ext, FeatureExtractor) and ext.has_output:
            source = ext
    if source is None:
        raise ValueError(
            "the faithfulness metrics need the model's scores: pass model= (a Keras model, a "
            ".keras path, or a FeatureExtractor built with include_output=True)"
        )
    if isinstance(source, FeatureExtractor):
        if not source.has_output:
            where = "model=" if model is not None else "the explainer's model"
            raise ValueError(
                f"{where} is a FeatureExtractor without the model output, so the faithfulness "
                "metrics cannot score it: pass model= (a Keras model or a .keras path) or build "
                "the extractor with include_output=True"
            )
        return F.class_scorer(source, activation)
    return F.class_scorer(load(source, include_output=True), activation)


def fused_explanation(
    explainer: Any, model: Any, activation: F.Activation
) -> tuple[F.Scorer, Any] | None:
    """``(class scorer, make_step)`` when ``explainer``'s maps can come from the scoring
    forward pass, else None.

    That needs an explainer whose ``step(sample_shape, resize=True, extractor=...)`` accepts
    another extractor of its ``layer_names`` (`fastfem.FEM`, `fastfem.MLFEM`, the
    mean-of-activations baseline), and a scoring model (``model``, else the explainer's own
    ``model``) that is either the explainer's own extractor with the model's output (as the
    command line builds it, its preprocessing inside) or a model that is not a fixed
    `FeatureExtractor` and whose weights contain the explainer's (checked: `same_weights`).
    ``make_step(sample_shape)`` returns the explainer's `Step` on the scorer's extractor: its
    params ARE the scorer's.
    """
    layers = getattr(explainer, "layer_names", None)
    extractor = getattr(explainer, "extractor", None)
    step = getattr(explainer, "step", None)
    if layers is None or step is None or not isinstance(extractor, FeatureExtractor):
        return None
    if getattr(explainer, "explains_pairs", False):
        return None
    source = model if model is not None else getattr(explainer, "model", None)
    if source is extractor and extractor.has_output:
        scoring = extractor
    elif source is None or isinstance(source, FeatureExtractor):
        return None
    else:
        scoring = load(source, layers=list(layers), include_output=True)
        if not same_weights(extractor.params, scoring.params):
            return None

    def make_step(sample_shape: Sequence[int]) -> Step:
        return step(sample_shape, resize=True, extractor=scoring)

    return F.class_scorer(scoring, activation), make_step


def fingerprints(params: Any) -> list[tuple[Any, ...]]:
    """``(shape, sum, sum of squares)`` of every parameter array of a pytree (float32 sums)."""
    out = []
    for leaf in jax.tree.leaves(params):
        a = jnp.asarray(leaf, jnp.float32)
        out.append((a.shape, float(jnp.sum(a)), float(jnp.sum(a * a))))
    return out


def same_weights(sub: Any, full: Any) -> bool:
    """Every parameter array of ``sub`` is also in ``full`` (compared by `fingerprints`, as a
    multiset): the explainer's extractor is part of the scored model."""
    pool: dict[tuple[Any, ...], int] = {}
    for key in fingerprints(full):
        pool[key] = pool.get(key, 0) + 1
    for key in fingerprints(sub):
        if pool.get(key, 0) <= 0:
            return False
        pool[key] -= 1
    return True
