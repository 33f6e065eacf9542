"""The reliance test's jitted step: every image of a batch under every probe, one forward each.

``(params, batch) -> {prediction (B,), drop, dose (B, P)}``
where, for image ``x_i``
with predicted class ``y_i`` (from the unprobed forward pass of the same step, or given: see
below) and probe ``p`` (`fastfem.kernels.occlusion.probe_image`, mask and fill in ``params``),

    drop[i, p]  = P(y_i | x_i) - P(y_i | probe_p(x_i))
    dose[i, p]  = mean |probe_p(x_i) - x_i|        (how much the probe changed the image)

A batch that carries ``pred`` (B,) int32 and ``base`` (B,) float32 — the audit's stored
prediction and confidence ``P(y_i | x_i)`` of the same images through the same extractor —
skips the unprobed forward pass: one forward per probe, none more.

The probes run one after the other (``lax.map``), each a forward pass of the whole batch, so
memory is one batch whatever the number of probes; the batch is sharded over the devices by the
runner like every step. Images arrive as the audit decodes them (uint8 0..255 or float in
[0, 1]) and are probed in [0, 1]; the model's own preprocessing (inside the extractor) runs on
the probed float images, which it reads in the same [0, 1] convention.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from fastfem.audit.steps import probabilities
from fastfem.converters import FeatureExtractor
from fastfem.data.preprocess import pixels_255
from fastfem.engine.step import StepFn
from fastfem.kernels.occlusion import FillParams, probe_image


class ProbeParams(NamedTuple):
    """The probes: ``masks`` (P, H, W) float32, ``fills`` (P,) int32 indices into
    `fastfem.kernels.occlusion.FILLS`, and the fills' `FillParams`."""

    masks: jax.Array
    fills: jax.Array
    fill: FillParams


def make_probe_step(extractor: FeatureExtractor) -> StepFn:
    """The step of the module docstring for ``extractor`` (which must return the model's
    output); its params are ``(extractor.params, ProbeParams)``."""

    def classify(model_params: Any, x: jax.Array) -> jax.Array:
        return probabilities(extractor.apply(model_params, x).output)

    def step(params: Any, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        model_params, probes = params
        x = pixels_255(batch["x"]) / 255.0
        if "base" in batch:
            pred, base = batch["pred"], batch["base"]
        else:
            p0 = classify(model_params, x)
            pred = jnp.argmax(p0, axis=1)
            base = jnp.take_along_axis(p0, pred[:, None], axis=1)[:, 0]

        def one_probe(probe: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, ...]:
            mask, fill = probe
            xs = jax.vmap(probe_image, in_axes=(0, None, None, None))(x, mask, fill, probes.fill)
            p = classify(model_params, xs)
            kept = jnp.take_along_axis(p, pred[:, None], axis=1)[:, 0]
            dose = jnp.mean(jnp.abs(xs - x), axis=(1, 2, 3))
            return base - kept, dose

        drop, dose = jax.lax.map(one_probe, (probes.masks, probes.fills))  # (P, B)
        return {"prediction": pred.astype(jnp.int32), "drop": drop.T, "dose": dose.T}

    return step
