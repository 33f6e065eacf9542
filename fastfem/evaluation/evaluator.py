"""`Evaluator` and `evaluate`: read the inputs, run the metrics stages, gather the result.

The explanation comes from the explainer (``explain``) or from the metrics step itself
(`fastfem.evaluation.scoring.fused_explanation`); the stages are those of
`fastfem.evaluation.stages`; the largest-connected-component box IoU runs on the host.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fastfem.data.boxes import check_box
from fastfem.engine.parallel import data_mesh
from fastfem.engine.runner import Runner, collect
from fastfem.evaluation.config import FAITHFULNESS_METRICS, MetricsConfig, resolve_metrics
from fastfem.evaluation.scoring import fused_explanation, make_scorer
from fastfem.evaluation.stages import StagePlan, metrics_stages
from fastfem.explainers.base import check_positive_int
from fastfem.metrics import faithfulness as F
from fastfem.metrics import localisation as Loc


@dataclasses.dataclass
class EvaluationResult:
    """What `evaluate` returns.

    Attributes:
      per_sample: metric name -> float32 (N,) (NaN where a metric is undefined for a sample,
        e.g. average drop with a non-positive base score).
      means: metric name -> mean over the samples where it is finite (NaN if none).
      curves: ``"deletion"`` / ``"insertion"`` -> (N, T + 1) scores, when computed.
      targets: the class targets used (N,) int (classifiers), else None.
      base_scores: the target score on each clean image (N,), when a scorer was used.
      seconds: wall time of the explanation and of the metrics.
      config: the settings, for reports.
    """

    per_sample: dict[str, np.ndarray]
    means: dict[str, float]
    curves: dict[str, np.ndarray]
    targets: np.ndarray | None
    base_scores: np.ndarray | None
    seconds: dict[str, float]
    config: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        """JSON-ready means, counts, timings and settings."""
        return {
            "means": {k: _json_float(v) for k, v in self.means.items()},
            "finite": {k: int(np.isfinite(v).sum()) for k, v in self.per_sample.items()},
            "n": int(next(iter(self.per_sample.values())).shape[0]) if self.per_sample else 0,
            "seconds": {k: round(v, 4) for k, v in self.seconds.items()},
            "config": self.config,
        }


def _json_float(v: float) -> float | None:
    return None if not np.isfinite(v) else float(v)


def _as_maps(maps: Any, n: int) -> np.ndarray:
    maps = np.asarray(maps, np.float32)
    if maps.ndim == 4:
        maps = maps[..., 0] if maps.shape[-1] == 1 else maps.mean(axis=-1)
    if maps.ndim != 3 or maps.shape[0] != n:
        raise ValueError(f"maps must be (N, H, W[, C]) with N = {n}; got shape {maps.shape}")
    return maps


def _as_boxes(boxes: Any, n: int, image_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(on-device form, xyxy for the host IoU): xyxy (N, 4), each checked by
    `fastfem.data.boxes.check_box` (finite, ``x1 > x0``, ``y1 > y0``), or masks (N, H, W)."""
    boxes = np.asarray(boxes)
    if boxes.ndim == 2 and boxes.shape == (n, 4):
        xyxy = np.stack([check_box(b, f"boxes[{i}]") for i, b in enumerate(boxes)])
        return xyxy, xyxy
    if boxes.ndim == 3 and boxes.shape == (n, *image_hw):
        masks = boxes.astype(bool)
        xyxy = np.zeros((n, 4), np.float32)
        for i, m in enumerate(masks):
            rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
            if rows.size:
                xyxy[i] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
        return masks, xyxy
    raise ValueError(
        f"boxes must be xyxy (N, 4) or masks (N, H, W) = ({n}, {image_hw[0]}, {image_hw[1]}); "
        f"got shape {boxes.shape}"
    )


def _class_targets(targets: Any, n: int, num_classes: int) -> np.ndarray:
    """Class indices (N,) int32 in [0, num_classes), -1 for "the predicted class" (None)."""
    if targets is None:
        return np.full((n,), -1, np.int32)
    t = np.asarray(targets)
    if t.ndim == 2:
        if t.shape[1] != num_classes:
            raise ValueError(
                f"targets: one-hot rows have {t.shape[1]} columns; the model has {num_classes} "
                "classes"
            )
        t = t.argmax(axis=-1)
    t = t.reshape(-1)
    if t.shape[0] != n:
        raise ValueError(f"targets: expected {n} class indices; got {t.shape[0]}")
    if t.dtype.kind not in "iu" and not (t.dtype.kind == "f" and np.all(t == np.round(t))):
        raise ValueError(f"targets: class indices must be integers; got dtype {t.dtype}")
    bad = (t < 0) | (t >= num_classes)
    if bad.any():
        raise ValueError(
            f"targets: class indices must be in [0, {num_classes}) (the model's classes); got "
            f"{sorted(set(t[bad].tolist()))[:10]}"
        )
    return t.astype(np.int32)


class Evaluator:
    """`evaluate` with its compiled steps kept: build once, call on many batches of images.

    ``Evaluator(explainer, metrics=None, model=None, scorer=None, batch_size=64, fuse=True,
    devices=None, **settings)(images, boxes=None, targets=None, maps=None)``; the arguments are
    those of `evaluate`, ``settings`` the fields of `MetricsConfig`. The jitted metrics step
    is cached per (metrics, image shape, map shape, kind of boxes), so later calls with the
    same shapes do not recompile. `fused` tells whether the explanation runs inside the step.
    """

    def __init__(
        self,
        explainer: Any = None,
        metrics: Sequence[str] | str | None = None,
        *,
        model: Any = None,
        scorer: F.Scorer | None = None,
        batch_size: int = 64,
        fuse: bool = True,
        devices: Sequence[jax.Device] | None = None,
        **settings: Any,
    ):
        self.config = MetricsConfig(**settings)
        activation = self.config.activation
        self.explainer = explainer
        self.metrics = [metrics] if isinstance(metrics, str) else metrics
        if self.metrics is not None:
            resolve_metrics(self.metrics, True, True)  # names only; data checked per call
        pairs = getattr(explainer, "explains_pairs", False)
        self.similarity = scorer is None and model is None and pairs
        self.make_step = None
        wants_score = self.metrics is None or any(m in FAITHFULNESS_METRICS for m in self.metrics)
        # fused with model=, or with the explainer's own model when a metric needs scores
        if fuse and scorer is None and not pairs and (model is not None or wants_score):
            fused = fused_explanation(explainer, model, activation)
            if fused is not None:
                scorer, self.make_step = fused
        self.scorer_error: ValueError | None = None
        if wants_score and scorer is None:
            try:
                scorer = make_scorer(explainer, model, activation)
            except ValueError as err:
                if self.metrics is not None:
                    raise
                self.scorer_error = err
        self.scorer = scorer
        self.batch_size = check_positive_int(batch_size)
        self.mesh = data_mesh(devices)
        self._runners: dict[tuple[Any, ...], Runner] = {}

    @property
    def fused(self) -> bool:
        """Whether the explanation is computed inside the metrics step (one forward pass of
        ``x`` gives the maps and the base scores)."""
        return self.make_step is not None

    def _runner(self, plan_key: tuple[Any, ...], plan: StagePlan) -> Runner:
        if plan_key not in self._runners:
            self._runners[plan_key] = Runner(metrics_stages(plan), self.batch_size, self.mesh)
        return self._runners[plan_key]

    def _maps(self, x: np.ndarray, targets: Any, maps: Any, seconds: dict) -> np.ndarray:
        """The explanation maps (N, h, w) of the images, computed apart (not fused)."""
        if maps is None:
            if self.explainer is None:
                raise ValueError("no explainer: pass maps= or build the Evaluator with one")
            start = time.perf_counter()
            if targets is not None:
                maps = self.explainer.explain(x, targets)
            else:
                maps = self.explainer.explain(x)
            seconds["explain"] = time.perf_counter() - start
        return _as_maps(maps, x.shape[0])

    def _targets(self, targets: Any, n: int, shape: tuple[int, ...]) -> np.ndarray:
        """Class indices (-1: the predicted class), or the reference images (similarity)."""
        if self.scorer.kind == "class":
            spec = jax.ShapeDtypeStruct((1, *shape), jnp.float32)
            classes = jax.eval_shape(self.scorer.features, self.scorer.params, spec).shape[-1]
            return _class_targets(targets, n, int(classes))
        refs = np.asarray(targets, np.float32)
        if refs.ndim != 4 or refs.shape[0] != n:
            raise ValueError(
                f"targets: expected {n} reference images (N, H, W, C); got {refs.shape}"
            )
        return refs

    def __call__(
        self,
        images: Any,
        boxes: Any = None,
        targets: Any = None,
        maps: Any = None,
        progress: bool = False,
    ) -> EvaluationResult:
        """Evaluate on ``images`` (N, H, W, C); see `evaluate` for the arguments."""
        x = np.asarray(images, np.float32)
        if x.ndim != 4 or x.shape[0] == 0:
            raise ValueError(f"images: expected a non-empty (N, H, W, C) batch; got {x.shape}")
        n, h, w, _ = x.shape
        if self.similarity and targets is None:
            raise ValueError(
                "this explainer scores similarities (FAM): pass targets= the reference images"
            )
        chosen = resolve_metrics(self.metrics, boxes is not None, self.scorer is not None)
        faith = any(m in FAITHFULNESS_METRICS for m in chosen)
        fused = self.fused and maps is None
        seconds: dict[str, float] = {}
        arrays: dict[str, np.ndarray] = {"x": x}
        map_hw = (h, w)
        if not fused:
            arrays["maps"] = self._maps(x, targets, maps, seconds)
            map_hw = tuple(arrays["maps"].shape[1:3])  # type: ignore[assignment]
        xyxy = None
        if boxes is not None:
            arrays["boxes"], xyxy = _as_boxes(boxes, n, (h, w))
        if faith:
            arrays["targets"] = self._targets(targets, n, x.shape[1:])
        start = time.perf_counter()
        merged = self._device_metrics(chosen, arrays, fused, map_hw, progress)
        if "iou_box" in chosen:
            box_maps = merged.pop("maps") if fused else arrays["maps"]
            scale = np.array([box_maps.shape[2] / w, box_maps.shape[1] / h] * 2, np.float32)
            merged["iou_box"] = Loc.iou_box_batch(
                box_maps, xyxy * scale, self.config.threshold, self.config.normalize
            )
        seconds["explain+metrics" if fused else "metrics"] = time.perf_counter() - start
        return self._result(chosen, merged, seconds, fused, faith)

    def _device_metrics(
        self,
        chosen: tuple[str, ...],
        arrays: dict[str, np.ndarray],
        fused: bool,
        map_hw: tuple[int, int],
        progress: bool,
    ) -> dict[str, np.ndarray]:
        """Run the metrics stages over the images; per-sample results, concatenated."""
        device_metrics = tuple(m for m in chosen if m != "iou_box")
        if not device_metrics and not fused:
            return {}
        x = arrays["x"]
        n, h, w, _ = x.shape
        faith = any(m in FAITHFULNESS_METRICS for m in chosen)
        scorer = self.scorer if (faith or fused) else None
        step = self.make_step(x.shape[1:]) if fused else None
        plan = StagePlan(
            metrics=device_metrics + (("iou_box",) if "iou_box" in chosen else ()),
            cfg=self.config,
            scorer=scorer,
            image_hw=(h, w),
            explain=None if step is None else step.fn,
            resize=not fused and map_hw != (h, w),
            return_maps=fused and "iou_box" in chosen,
        )
        boxes_kind = None if "boxes" not in arrays else arrays["boxes"].ndim
        key = (plan.metrics, scorer is not None, fused, (h, w), map_hw, boxes_kind)
        runner = self._runner(key, plan)
        params = scorer.params if scorer is not None else ()
        batches = [{k: v for k, v in arrays.items()}]
        return collect(runner.run(params, batches, n), n, progress=progress, desc="metrics")

    def _result(
        self, chosen: tuple[str, ...], merged: dict, seconds: dict, fused: bool, faith: bool
    ) -> EvaluationResult:
        per_sample = {name: merged[name].astype(np.float32) for name in chosen}
        means = {
            k: float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
            for k, v in per_sample.items()
        }
        curves = {
            m: merged[f"{m}_curve"] for m in ("deletion", "insertion") if f"{m}_curve" in merged
        }
        config = {
            "metrics": list(chosen),
            **self.config.as_dict(),
            "score": self.scorer.description if faith else None,
            "explainer": type(self.explainer).__name__ if self.explainer is not None else None,
            "fused": fused,
        }
        return EvaluationResult(
            per_sample=per_sample,
            means=means,
            curves=curves,
            targets=merged.get("target"),
            base_scores=merged.get("base_score"),
            seconds=seconds,
            config=config,
        )


def evaluate(
    explainer: Any,
    images: Any,
    boxes: Any = None,
    targets: Any = None,
    metrics: Sequence[str] | str | None = None,
    *,
    maps: Any = None,
    progress: bool = False,
    **options: Any,
) -> EvaluationResult:
    """Evaluate an explainer's maps on ``images`` (N, H, W, C): per-sample scores and means.

    Args:
      explainer: anything with ``explain(images[, targets]) -> (N, H, W[, 1])`` maps (FEM,
        MLFEM, FAM, the baselines of `fastfem.metrics.baselines`); may be None with ``maps``.
      images: (N, H, W, C) array.
      boxes: ground truth for the localisation metrics: xyxy (N, 4) in pixels (exclusive
        ends; finite, ``x1 >= x0``, ``y1 >= y0``) or boolean masks (N, H, W).
      targets: class indices (N,) in [0, K) or one-hot (N, K) (default: the predicted class),
        or for a similarity explainer (FAM) the reference images (N, H, W, C).
      metrics: names from `METRICS`; None -> all that the inputs allow (localisation with
        boxes, faithfulness when a model's scores are available).
      maps: precomputed maps (N, h, w[, 1]); skips the explanation. Maps at another resolution
        than the images are resized bilinearly on device.
      progress: show a progress bar for the metrics.
      options: the `Evaluator`'s keyword arguments:

        * ``model``: the scored model for classifiers (default ``explainer.model``);
          ``scorer``: a custom `fastfem.metrics.Scorer` (overrides ``model``);
        * ``fuse`` (default True): for an explainer whose step can run on the explained
          model's extractor (`fastfem.FEM`, `fastfem.MLFEM`, the mean-of-activations baseline)
          with ``model=`` the explained model (checked: its weights must contain the
          explainer's), compute the maps inside the metrics step: one forward pass of ``x``
          gives the explained layer(s) (-> the maps, the same kernel and resize as
          ``explain``) and the output (-> the base scores), and maps never leave the device.
          False: call ``explainer.explain`` first. (Fused, a NaN input gives NaN metrics
          instead of FEM's error.)
        * ``batch_size`` (images per device step, default 64), ``devices`` (default all);
        * the `MetricsConfig` settings: ``threshold``, ``normalize``, ``ties``, ``steps``,
          ``baseline``, ``activation``, ``max_images``.

    Each call compiles its step; use `Evaluator` to evaluate many batches with one compile.
    """
    evaluator = Evaluator(explainer, metrics, **options)
    return evaluator(images, boxes=boxes, targets=targets, maps=maps, progress=progress)
