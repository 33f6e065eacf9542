"""The per-batch metrics computation of `fastfem.evaluate`: a chain of jitted stages.

`metrics_stages` turns a `StagePlan` (what to compute for one batch shape) into the stages a
`fastfem.engine.runner.Runner` runs; their carry (images, maps, targets) never leaves the
devices, only per-sample numbers come back.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp

from fastfem.converters import Features
from fastfem.engine.step import CARRY
from fastfem.evaluation.config import FAITHFULNESS_METRICS, MetricsConfig
from fastfem.kernels.resize import resize_batch
from fastfem.metrics import faithfulness as F
from fastfem.metrics import localisation as Loc


@dataclasses.dataclass(frozen=True)
class StagePlan:
    """What the metrics stages compute for one batch shape (static, hashable by identity).

    ``explain``: the fused explanation's step function (its params are the scorer's), or None
    when the maps come with the batch; ``resize``: bring the batch's maps (h, w) to the image
    size (bilinear) first.
    """

    metrics: tuple[str, ...]
    cfg: MetricsConfig
    scorer: F.Scorer | None
    image_hw: tuple[int, int]
    explain: Any = None
    resize: bool = False
    return_maps: bool = False

    @property
    def localisation(self) -> list[str]:
        return [m for m in self.metrics if m in ("pointing_game", "energy_pointing_game", "iou")]

    @property
    def drop_increase(self) -> bool:
        return any(m in self.metrics for m in ("average_drop", "increase_in_confidence"))

    @property
    def curves(self) -> list[str]:
        return [m.split("_")[0] for m in self.metrics if m in ("deletion_auc", "insertion_auc")]

    @property
    def faithfulness(self) -> bool:
        return any(m in FAITHFULNESS_METRICS for m in self.metrics)


def prepare_stage(plan: StagePlan, params: Any, batch: dict[str, Any]) -> dict[str, Any]:
    """Stage 1: the maps (from the fused explanation's forward pass, which also gives the
    clean scores, or from the batch), the localisation metrics, the masked input ``x * L`` and
    the references' embeddings (similarity scorers)."""
    x = batch["x"]
    carry: dict[str, Any] = {"x": x}
    if plan.explain is not None:
        res = plan.explain(params, {"x": x})
        maps = res["maps"]
        carry["f_clean"] = plan.scorer.from_features(Features((), res["output"]))
    else:
        maps = batch["maps"].astype(jnp.float32)
        if plan.resize:
            maps = resize_batch(maps, plan.image_hw, "bilinear")
    out: dict[str, Any] = {}
    if plan.return_maps:
        out["maps"] = maps
    if plan.localisation:
        cfg = plan.cfg
        res = Loc.localisation_metrics(maps, batch["boxes"], cfg.threshold, cfg.normalize, cfg.ties)
        out.update({name: getattr(res, name) for name in plan.localisation})
    if plan.faithfulness:
        if plan.curves:
            carry["maps"] = maps  # curves rank the raw map (Xplique, Quantus)
        if plan.drop_increase:
            saliency = F.normalized_maps(maps, plan.cfg.normalize)
            carry["masked"] = jax.vmap(F.masked_input)(x, saliency)
        if plan.scorer.kind == "class":
            carry["given"] = batch["targets"]
        else:  # the references' embeddings: their forward pass, in this stage
            carry["target"] = plan.scorer.targets(params, None, batch["targets"])
    out[CARRY] = carry
    return out


def _clean_and_masked(plan: StagePlan, params: Any, carry: dict) -> tuple[Any, Any]:
    """Features of ``x`` (unless the fused explanation has them) and of ``x * L``: one forward
    pass of 2B images (sample-major) when both are needed."""
    scorer, x = plan.scorer, carry["x"]
    f_clean = carry.get("f_clean")
    if not plan.drop_increase:
        return (scorer.features(params, x) if f_clean is None else f_clean), None
    if f_clean is not None:
        return f_clean, scorer.features(params, carry["masked"])
    b = x.shape[0]
    pair = jnp.stack([x, carry["masked"]], axis=1).reshape(2 * b, *x.shape[1:])
    f = scorer.features(params, pair)
    f = f.reshape(b, 2, *f.shape[1:])
    return f[:, 0], f[:, 1]


def score_stage(plan: StagePlan, params: Any, carry: dict[str, Any]) -> dict[str, Any]:
    """Stage 2: base scores, targets, and the model on ``x * L`` (average drop, increase in
    confidence)."""
    scorer = plan.scorer
    f_clean, f_masked = _clean_and_masked(plan, params, carry)
    if scorer.kind == "class":
        target = scorer.targets(params, f_clean, carry["given"])
    else:
        target = carry["target"]
    y = scorer.value(f_clean, target)
    out: dict[str, Any] = {"base_score": y}
    if scorer.kind == "class":
        out["target"] = target
    if f_masked is not None:
        o = scorer.value(f_masked, target)
        out["masked_score"] = o
        out["average_drop"] = F.average_drop(y, o)
        out["increase_in_confidence"] = F.increase_in_confidence(y, o)
    nxt = {"x": carry["x"], "target": target}
    if plan.curves:
        nxt["maps"] = carry["maps"]
    out[CARRY] = nxt
    return out


def curve_stage(plan: StagePlan, mode: str, params: Any, carry: dict[str, Any]) -> dict:
    """Stage 3+: one deletion or insertion curve, chunked forward passes in a `jax.lax.map`."""
    cfg = plan.cfg
    curve = F.perturbation_curves(
        plan.scorer,
        params,
        carry["x"],
        carry["maps"],
        carry["target"],
        cfg.steps,
        mode,  # type: ignore[arg-type]
        cfg.baseline,
        cfg.max_images,
    )
    return {f"{mode}_curve": curve, f"{mode}_auc": F.curve_auc(curve), CARRY: carry}


def metrics_stages(plan: StagePlan) -> list[Any]:
    """The per-batch metrics computation as a chain of stages (`fastfem.engine.runner.Runner`).

    1. `prepare_stage`; 2. `score_stage` (with faithfulness metrics); 3. one `curve_stage` per
    curve. Every stage runs at most one forward pass of the model (the curve's loop body one
    per group): XLA:CPU runs two forward passes compiled into ONE module 2-4x slower than as
    two modules on this machine, so a stage boundary is where a second pass starts; the carry
    never leaves the devices.
    """
    if (plan.faithfulness or plan.explain is not None) and plan.scorer is None:
        raise ValueError("a scorer is needed for the faithfulness metrics or a fused explanation")
    stages: list[Any] = [functools.partial(prepare_stage, plan)]
    if plan.faithfulness:
        stages.append(functools.partial(score_stage, plan))
        stages.extend(functools.partial(curve_stage, plan, mode) for mode in plan.curves)
    return stages
