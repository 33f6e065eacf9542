"""`evaluate`: explanation quality of any explainer on a set of images, metrics fused on device.

``evaluate(explainer, images, boxes=None, targets=None, metrics=None)`` gets the maps
(``explainer.explain``; or, for an explainer whose ``step`` can run on the scoring model's
extractor — `fastfem.FEM`, `fastfem.MLFEM`, the mean-of-activations baseline — from the same
forward pass that gives the base scores), then runs a few jitted,
sharded stages per batch whose intermediates never leave the devices: normalise the maps,
rasterise the boxes, localisation metrics, the model on ``x * L`` (average drop, increase in
confidence), the deletion/insertion curves (chunked forward passes); only per-sample numbers
are fetched. The largest-connected-component box IoU runs on the host (SciPy) from the maps.
Definitions: `fastfem.metrics.localisation` and `fastfem.metrics.faithfulness`.

Scores:

* classifiers: ``targets`` are class indices (or one-hot rows); default the class predicted on
  the clean image. The model comes from ``model=`` (a Keras model, a path, or a
  `FeatureExtractor` built with ``include_output=True``), else from ``explainer.model``.
* similarity explainers (FAM): recognised by duck typing, an explainer with a string attribute
  ``similarity`` and a single-layer ``extractor`` (plus optional ``pooling``, default ``gap``,
  and ``head_function()``, its head as a JAX function). ``targets`` are then the reference
  images, the maps come from ``explainer.explain(images, targets)``, and the score is the
  similarity of the (masked or perturbed) query to its reference at the explained layer.
* anything else: pass ``scorer=`` (a `fastfem.metrics.Scorer`).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fastfem.converters import FeatureExtractor, Features, load
from fastfem.data.boxes import check_box
from fastfem.engine.parallel import data_mesh
from fastfem.engine.runner import Runner, collect
from fastfem.engine.step import CARRY, Step
from fastfem.explainers.base import check_positive_int
from fastfem.kernels.resize import resize_batch
from fastfem.metrics import faithfulness as F
from fastfem.metrics import localisation as Loc

LOCALISATION_METRICS: tuple[str, ...] = ("pointing_game", "energy_pointing_game", "iou", "iou_box")
FAITHFULNESS_METRICS: tuple[str, ...] = (
    "average_drop",
    "increase_in_confidence",
    "deletion_auc",
    "insertion_auc",
)
METRICS: tuple[str, ...] = LOCALISATION_METRICS + FAITHFULNESS_METRICS
#: Direction of each metric (True: higher is better).
HIGHER_IS_BETTER: dict[str, bool] = {
    "pointing_game": True,
    "energy_pointing_game": True,
    "iou": True,
    "iou_box": True,
    "average_drop": False,
    "increase_in_confidence": True,
    "deletion_auc": False,
    "insertion_auc": True,
}


@dataclasses.dataclass(frozen=True)
class MetricsConfig:
    """The evaluation's settings, validated once and passed through (hashable).

    Attributes:
      threshold: t of IoU@t and of the component box, in [0, 1].
      normalize, ties: map normalisation and pointing-game tie rule
        (`fastfem.metrics.localisation`).
      steps, baseline: T and the baseline (a number or ``"mean"``) of deletion/insertion.
      activation: None, ``"softmax"`` or ``"sigmoid"`` on the model output (class scorer).
      max_images: images per forward pass in the curves.
    """

    threshold: float = 0.5
    normalize: Loc.Normalize = "relu_minmax"
    ties: Loc.Ties = "mean"
    steps: int = 16
    baseline: F.Baseline = 0.0
    activation: F.Activation = None
    max_images: int = 256

    def __post_init__(self) -> None:
        Loc.check_normalize(self.normalize)
        if self.ties not in Loc.TIES:
            raise ValueError(f"unknown ties rule {self.ties!r}; expected one of {Loc.TIES}")
        if not (isinstance(self.threshold, (int, float)) and 0.0 <= float(self.threshold) <= 1.0):
            raise ValueError(f"threshold must be a number in [0, 1]; got {self.threshold!r}")
        check_positive_int(self.steps, "steps")
        check_positive_int(self.max_images, "max_images")
        if isinstance(self.baseline, str) and self.baseline != "mean":
            raise ValueError(f"baseline must be a number or 'mean'; got {self.baseline!r}")
        if self.activation not in (None, "softmax", "sigmoid"):
            raise ValueError(
                f"activation must be None, 'softmax' or 'sigmoid'; got {self.activation!r}"
            )

    def as_dict(self) -> dict[str, Any]:
        """The settings for reports (JSON-ready)."""
        return dataclasses.asdict(self)


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


def resolve_metrics(
    metrics: Sequence[str] | str | None, has_boxes: bool, can_score: bool
) -> tuple[str, ...]:
    """Validate metric names; None -> every metric that the given data allows."""
    if metrics is None:
        chosen = (LOCALISATION_METRICS if has_boxes else ()) + (
            FAITHFULNESS_METRICS if can_score else ()
        )
        if not chosen:
            raise ValueError(
                "nothing to evaluate: give boxes= for the localisation metrics and/or a model "
                "(model= or explainer.model) for the faithfulness metrics"
            )
        return chosen
    if isinstance(metrics, str):
        metrics = [metrics]
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; expected names from {METRICS}")
    if not has_boxes and any(m in LOCALISATION_METRICS for m in metrics):
        raise ValueError(f"localisation metrics {LOCALISATION_METRICS} need boxes=")
    return tuple(dict.fromkeys(metrics))


def make_scorer(explainer: Any, model: Any = None, activation: F.Activation = None) -> F.Scorer:
    """The `Scorer` `evaluate` uses for ``explainer`` (see the module docstring)."""
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
    mean-of-activations baseline), a model that is not a fixed `FeatureExtractor`, and a model
    whose weights contain the explainer's (checked: `same_weights`). ``make_step(sample_shape)``
    returns the explainer's `Step` on the scorer's extractor: its params ARE the scorer's.
    """
    layers = getattr(explainer, "layer_names", None)
    extractor = getattr(explainer, "extractor", None)
    step = getattr(explainer, "step", None)
    if layers is None or step is None or not isinstance(extractor, FeatureExtractor):
        return None
    if getattr(explainer, "explains_pairs", False) or isinstance(model, FeatureExtractor):
        return None
    scoring = load(model, layers=list(layers), include_output=True)
    if not same_weights(extractor.params, scoring.params):
        return None

    def make_step(sample_shape: Sequence[int]) -> Step:
        return step(sample_shape, resize=True, extractor=scoring)

    return F.class_scorer(scoring, activation), make_step


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


def _fingerprints(params: Any) -> list[tuple[Any, ...]]:
    out = []
    for leaf in jax.tree.leaves(params):
        a = jnp.asarray(leaf, jnp.float32)
        out.append((a.shape, float(jnp.sum(a)), float(jnp.sum(a * a))))
    return out


def same_weights(sub: Any, full: Any) -> bool:
    """Every parameter array of ``sub`` is also in ``full`` (compared by shape, sum and sum of
    squares): the explainer's extractor is part of the scored model."""
    pool: dict[tuple[Any, ...], int] = {}
    for key in _fingerprints(full):
        pool[key] = pool.get(key, 0) + 1
    for key in _fingerprints(sub):
        if pool.get(key, 0) <= 0:
            return False
        pool[key] -= 1
    return True


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


def localisation_stage_part(plan: StagePlan, maps: jax.Array, boxes: jax.Array) -> dict:
    """The on-device localisation metrics of maps (B, H, W) against boxes or masks."""
    h, w = plan.image_hw
    masks = Loc.box_masks(boxes, h, w) if boxes.ndim == 2 else boxes.astype(bool)
    res = jax.vmap(Loc.localisation_sample, in_axes=(0, 0, None, None, None))(
        maps, masks, plan.cfg.threshold, plan.cfg.normalize, plan.cfg.ties
    )
    return {name: getattr(res, name) for name in plan.localisation}


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
        out.update(localisation_stage_part(plan, maps, batch["boxes"]))
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
        if fuse and scorer is None and model is not None:
            fused = fused_explanation(explainer, model, activation)
            if fused is not None:
                scorer, self.make_step = fused
        wants_score = self.metrics is None or any(m in FAITHFULNESS_METRICS for m in self.metrics)
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
