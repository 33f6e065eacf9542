"""The audit's jitted step: an explainer's `fastfem.engine.step.Step` plus what the store keeps.

One step per batch does everything on the devices: the model's preprocessing (inside the
extractor, `fastfem.data.preprocess`), ONE forward pass (the explained layer(s) and, when the model
has one, its output), the explanation map (the explainer's own step at its own resolution), the
map's statistics (`fastfem.kernels.map_stats`), the prediction and its confidence, the
finiteness flags and, with ground-truth boxes, the localisation metrics
(`fastfem.metrics.localisation`). Only per-image numbers and the stored map leave the devices.

Stored maps: the method's own step's (``resize=False``): feature resolution (h, w) for the
one-layer methods, the fused map at the input size (H, W) for MLFEM. A method adds its own
columns through its audit hooks (`fastfem.explainers.method.AuditHooks.outputs`).

Localisation metrics are computed on the map at the input size,
resized the way the method's explainer resizes (``explainer.resize_maps``: FEM the variant's
resize, e.g. bicubic for ``xplique``; FAM bilinear) — exactly what `fastfem.evaluate` scores for
that explainer — with `evaluate`'s defaults: ``normalize="relu_minmax"``, IoU threshold
``t = 0.5``, pointing-game ties ``"mean"``. An image with several boxes is scored against the
union of their masks.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from fastfem.engine.step import StepFn
from fastfem.kernels.map_stats import map_stats
from fastfem.metrics import localisation as Loc

#: Localisation settings of the audit (`fastfem.evaluate`'s defaults).
IOU_THRESHOLD = 0.5
NORMALIZE: Loc.Normalize = "relu_minmax"
TIES: Loc.Ties = "mean"
LOCALISATION_COLUMNS: tuple[str, ...] = ("pointing_game", "energy_pointing_game", "iou")


@dataclass(frozen=True)
class AuditSpec:
    """What one audit step computes beside the explanation (hashable).

    ``outputs``: the method's columns from its step's outputs (`AuditHooks.outputs`);
    ``boxes``: boxes per image in the batch (0: no localisation metrics); ``image_hw``: the
    model input size.
    """

    outputs: Callable[[Mapping[str, jax.Array]], dict[str, jax.Array]]
    image_hw: tuple[int, int]
    boxes: int = 0


def localisation_columns(
    maps: jax.Array, boxes: jax.Array, has_box: jax.Array
) -> dict[str, jax.Array]:
    """`fastfem.metrics.localisation_metrics` of each map (B, H, W) against the union of its
    boxes (B, K, 4); NaN (a null in the store) for images without boxes."""
    res = Loc.localisation_metrics(maps, boxes, IOU_THRESHOLD, NORMALIZE, TIES)
    return {name: jnp.where(has_box, getattr(res, name), jnp.nan) for name in LOCALISATION_COLUMNS}


def probabilities(output: jax.Array) -> jax.Array:
    """The model's output (B, ...) as class probabilities (B, K).

    K > 1 outputs: a row is taken as it is when it is in [0, 1] and sums to 1 (within 1e-3),
    else as logits (softmax). A single output (K = 1, a binary classifier) is ``P(class 1)``
    when the whole batch lies in [0, 1] (a sigmoid unit), else a logit (sigmoid), and becomes
    ``[1 - p, p]``: decided per batch, since one logit row may well fall in [0, 1]."""
    logits = output.reshape(output.shape[0], -1).astype(jnp.float32)
    if logits.shape[1] == 1:
        p = logits[:, 0]
        p = jnp.where(jnp.all((p >= 0) & (p <= 1)), p, jax.nn.sigmoid(p))
        return jnp.stack([1.0 - p, p], axis=1)
    is_prob = jnp.all((logits >= 0) & (logits <= 1), axis=1) & (
        jnp.abs(jnp.sum(logits, axis=1) - 1) < 1e-3
    )
    return jnp.where(is_prob[:, None], logits, jax.nn.softmax(logits, axis=1))


def prediction_columns(output: jax.Array) -> dict[str, jax.Array]:
    """Predicted class and its probability (`probabilities`)."""
    probs = probabilities(output)
    return {
        "prediction": jnp.argmax(probs, axis=1).astype(jnp.int32),
        "confidence": jnp.max(probs, axis=1),
    }


def make_audit_step(
    explain: StepFn, spec: AuditSpec, resize_maps: Callable[[jax.Array, Any], jax.Array]
) -> StepFn:
    """``(params, batch) -> {map, <map stats>, finite (B, 2), [prediction, confidence],
    [the method's columns], [localisation]}`` around an explainer's step
    function ``explain`` (run at the method's own resolution; ``resize_maps`` is the
    explainer's own resize to the input size, used for the localisation metrics).

    ``batch``: ``x`` (B, H, W, C) uint8 or float, plus what ``explain`` reads (FAM:
    ``target``); with boxes ``boxes`` (B, K, 4) and ``has_box`` (B,).
    """

    def step(params: Any, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        out = explain(params, batch)
        maps = out["maps"]
        res = {"map": maps, "finite": out["finite"], **jax.vmap(map_stats)(maps)._asdict()}
        res.update(spec.outputs(out))
        if "output" in out:
            res.update(prediction_columns(out["output"]))
        if spec.boxes:
            full = resize_maps(maps, spec.image_hw)
            res.update(localisation_columns(full, batch["boxes"], batch["has_box"]))
        return res

    return step


@functools.lru_cache(maxsize=8)
def audit_step_fn(
    explain: StepFn, spec: AuditSpec, resize_maps: Callable[[jax.Array, Any], jax.Array]
) -> StepFn:
    """`make_audit_step`, built once per (explainer step function, spec, resize): the same
    function object is what lets the runner reuse its compiled code."""
    return make_audit_step(explain, spec, resize_maps)
