"""The reliance test's jitted step: every image of a batch under every probe, one forward each.

``(params, batch) -> {prediction (B,), drop, dose, top (B, P)}``
where, for image ``x_i``
with predicted class ``y_i`` (from the unprobed forward pass of the same step, or given: see
below) and probe ``p`` (`fastfem.kernels.occlusion.probe_image`, mask and fill in ``params``),

    drop[i, p]  = P(y_i | x_i) - P(y_i | probe_p(x_i))
    dose[i, p]  = mean |probe_p(x_i) - x_i|        (how much the probe changed the image;
                                                    size-weighted for a ``no <hue>``: `probed`)
    top[i, p]   = argmax_k P(k | probe_p(x_i))     (the class it goes to)

A batch that carries ``pred`` (B,) int32 and ``base`` (B,) float32 — the audit's stored
prediction and confidence ``P(y_i | x_i)`` of the same images through the same extractor —
skips the unprobed forward pass: one forward per probe, none more.

A probe that *follows the peak* (``follow`` in the params) hides on each image its own region:
the square of ``side`` px around the image's map peak, ``peak`` (B, 2) int32 (row, column) in
the batch (`peak_windows`); the others hide their one mask on every image.

The probes run one after the other (``lax.map``), each a forward pass of the whole batch, so
memory is one batch whatever the number of probes; the batch is sharded over the devices by the
runner like every step. Images arrive as the audit decodes them (uint8 0..255 or float in
[0, 1]) and are probed in [0, 1]; the model's own preprocessing (inside the extractor) runs on
the probed float images, which it reads in the same [0, 1] convention.

The *transplant* step (`make_transplant_step`) asks the converse: is what a region shows
*enough* to move another image to a class? For an image ``x_i``, a donor image ``d_i`` and a
region mask ``m`` and class ``c`` in its params,

    x'_i    = x_i + m * (d_i - x_i)                (the donor's region pasted into x_i)
    rise_i  = P(c | x'_i) - P(c | x_i)
    turned_i = argmax P(. | x'_i) == c  and  argmax P(. | x_i) != c

two forwards per row (the image and the pasted image in one batch).

The *peak* step (`make_peak_step`) runs the one probe that follows each image's map peak
through the audit's own map step (its method, layer and settings: ``explain``), on the image
and on the image with its window hidden, two forwards per row:

    drop[i]             as above
    contrast[i]         = C(x_i)              C: the map's peak contrast
    contrast_hidden[i]  = C(probe(x_i))       (`fastfem.kernels.map_stats.peak_contrast`)

The *dose* step (`make_dose_step`) gives ``dose`` alone, with no forward: the member pass's
screen, which runs the model only on the rows whose dose can reach a global candidate's floor.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from fastfem.audit.steps import probabilities
from fastfem.converters import FeatureExtractor
from fastfem.data.preprocess import pixels_255
from fastfem.engine.step import StepFn
from fastfem.kernels.map_stats import peak_contrast
from fastfem.kernels.occlusion import FILLS, HUE_FILLS, FillParams, probe_image


class ProbeParams(NamedTuple):
    """The probes: ``masks`` (P, H, W) float32, ``fills`` (P,) int32 indices into
    `fastfem.kernels.occlusion.FILLS`, the fills' `FillParams`, ``follow`` (P,) float32 (1: the
    probe hides each image's peak window instead of its mask) and the windows' ``side`` (px)."""

    masks: jax.Array
    fills: jax.Array
    fill: FillParams
    follow: jax.Array
    side: jax.Array


def peak_windows(peak: jax.Array, h: int, w: int, side: jax.Array) -> jax.Array:
    """(B, H, W) float32: for each image the square of ``side`` px whose centre pixel is its
    peak ``peak`` (B, 2) int32 (row, column; top-left of the centre for an even side), clipped
    to the image."""
    lo = peak - side // 2
    ys = jnp.arange(h)[None, :]
    xs = jnp.arange(w)[None, :]
    in_y = (ys >= lo[:, :1]) & (ys < lo[:, :1] + side)
    in_x = (xs >= lo[:, 1:]) & (xs < lo[:, 1:] + side)
    return (in_y[:, :, None] & in_x[:, None, :]).astype(jnp.float32)


def probed(
    x: jax.Array,
    mask: jax.Array,
    fill: jax.Array,
    p: FillParams,
    windows: jax.Array | None = None,
    follow: jax.Array | None = None,
) -> tuple[jax.Array, ...]:
    """The batch ``x`` (B, H, W, C) in [0, 1] under one probe — its ``mask``, or where
    ``follow`` is 1 each image's own window of ``windows`` (B, H, W) — and each image's dose
    (B,): ``mean |probe(x_i) - x_i|``, and for a ``no <hue>`` fill the size-weighted change
    ``sum d^2 / sum d`` (``d = |probe(x_i) - x_i|``): a small mark of a vivid colour changes
    few pixels by much, and its mean change is lost among an image's many small ones. A
    background of the colour changes many pixels by a little, and its weighted change is no
    larger than a vivid object's: the ``no <hue> area`` fill, the same image, keeps the mean.
    Two probes, not one dose of both: counted together, the images with much of the hue
    would dilute a small mark's rows (a red stamp over the shapes' centre: its class's share
    of the dosed rows 2.95 times the other classes' by vividness, 1.80 by the larger of the
    two against their sample means)."""
    if windows is None:
        xs = jax.vmap(probe_image, in_axes=(0, None, None, None))(x, mask, fill, p)
    else:
        masks = jnp.where(follow > 0, windows, mask[None])
        xs = jax.vmap(probe_image, in_axes=(0, 0, None, None))(x, masks, fill, p)
    d = jnp.abs(xs - x)
    mean = jnp.mean(d, axis=(1, 2, 3))
    weighted = jnp.sum(d * d, axis=(1, 2, 3)) / jnp.maximum(jnp.sum(d, axis=(1, 2, 3)), 1e-12)
    is_hue = jnp.asarray([f in HUE_FILLS for f in FILLS])[fill]
    return xs, jnp.where(is_hue, weighted, mean)


def batch_windows(batch: dict[str, jax.Array], x: jax.Array, probes: ProbeParams):
    """The batch's peak windows (`peak_windows`) where it carries ``peak``, else None."""
    if "peak" not in batch:
        return None
    return peak_windows(batch["peak"], x.shape[1], x.shape[2], probes.side)


def make_dose_step() -> StepFn:
    """The dose step of the module docstring; its params are a `ProbeParams`."""

    def step(probes: ProbeParams, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        x = pixels_255(batch["x"]) / 255.0
        windows = batch_windows(batch, x, probes)
        dose = jax.lax.map(
            lambda q: probed(x, q[0], q[1], probes.fill, windows, q[2])[1],
            (probes.masks, probes.fills, probes.follow),
        )
        return {"dose": dose.T}

    return step


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

        windows = batch_windows(batch, x, probes)

        def one_probe(probe: tuple[jax.Array, ...]) -> tuple[jax.Array, ...]:
            mask, fill, follow = probe
            xs, dose = probed(x, mask, fill, probes.fill, windows, follow)
            p = classify(model_params, xs)
            kept = jnp.take_along_axis(p, pred[:, None], axis=1)[:, 0]
            return base - kept, dose, jnp.argmax(p, axis=1).astype(jnp.int32)

        probed_all = (probes.masks, probes.fills, probes.follow)
        drop, dose, top = jax.lax.map(one_probe, probed_all)  # (P, B) each
        return {"prediction": pred.astype(jnp.int32), "drop": drop.T, "dose": dose.T, "top": top.T}

    return step


def make_transplant_step(extractor: FeatureExtractor) -> StepFn:
    """The transplant step of the module docstring for ``extractor``; its params are
    ``(extractor.params, (mask (H, W) float32, cls () int32))``, its batch ``x`` and
    ``donor`` (B, H, W, C) in the audit's pixel convention, and optionally ``mask`` (B, H, W):
    each pair's own region (a donor's peak window), in place of the params' one."""

    def step(params: Any, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        model_params, (mask, cls) = params
        x = pixels_255(batch["x"]) / 255.0
        donor = pixels_255(batch["donor"]) / 255.0
        m = batch["mask"][..., None] if "mask" in batch else mask[None, :, :, None]
        pasted = x + m * (donor - x)
        p = probabilities(extractor.apply(model_params, jnp.concatenate([x, pasted])).output)
        before, after = jnp.split(p, 2)
        turned = (jnp.argmax(after, axis=1) == cls) & (jnp.argmax(before, axis=1) != cls)
        return {"rise": after[:, cls] - before[:, cls], "turned": turned}

    return step


def make_peak_step(explain: StepFn) -> StepFn:
    """The peak step of the module docstring around ``explain``, the audit's map step
    (``(params, {"x"}) -> {maps, output, ...}``, images in [0, 1]); its params are
    ``(explain's params, ProbeParams)`` whose first probe follows the peak, its batch ``x``
    and ``peak`` (B, 2). Outputs ``prediction`` (B,), ``drop`` (B, 1), ``contrast`` and
    ``contrast_hidden`` (B,)."""

    def step(params: Any, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        explain_params, probes = params
        x = pixels_255(batch["x"]) / 255.0
        windows = batch_windows(batch, x, probes)
        xs, _ = probed(x, probes.masks[0], probes.fills[0], probes.fill, windows, probes.follow[0])
        out = explain(explain_params, {"x": jnp.concatenate([x, xs])})
        before, after = jnp.split(probabilities(out["output"]), 2)
        pred = jnp.argmax(before, axis=1)
        kept = jnp.take_along_axis(after - before, pred[:, None], axis=1)
        clean, hidden = jnp.split(jax.vmap(peak_contrast)(out["maps"]), 2)
        return {
            "prediction": pred.astype(jnp.int32),
            "drop": -kept,
            "contrast": clean,
            "contrast_hidden": hidden,
        }

    return step
