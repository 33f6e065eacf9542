"""`evaluate`: explanation quality of any explainer on a set of images, metrics fused on device.

``evaluate(explainer, images, boxes=None, targets=None, metrics=None)`` gets the maps
(``explainer.explain``; or, for `fastfem.FEM` and the mean-of-activations baseline with the
model given, from the same forward pass that gives the base scores), then runs a few jitted,
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
  and ``head``). ``targets`` are then the reference images, the maps come from
  ``explainer.explain(images, targets)``, and the score is the similarity of the (masked or
  perturbed) query to its reference at the explained layer.
* anything else: pass ``scorer=`` (a `fastfem.metrics.Scorer`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .converters import FeatureExtractor, load
from .kernels.resize import resize_map, resize_matrices
from .metrics import faithfulness as F
from .metrics import localisation as Loc
from .parallel import batch_sharding, data_mesh, pad_batch, replicated, round_up
from .progress import progress_bar

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


def is_similarity_explainer(explainer: Any) -> bool:
    """Duck typing for FAM-like explainers: a str ``similarity`` and an ``extractor``."""
    return isinstance(getattr(explainer, "similarity", None), str) and isinstance(
        getattr(explainer, "extractor", None), FeatureExtractor
    )


def make_scorer(explainer: Any, model: Any = None, activation: F.Activation = None) -> F.Scorer:
    """The `Scorer` `evaluate` uses for ``explainer`` (see the module docstring)."""
    if is_similarity_explainer(explainer) and model is None:
        return F.similarity_scorer(
            explainer.extractor,
            pooling=getattr(explainer, "pooling", "gap"),
            similarity=explainer.similarity,
            head=_head_function(explainer),
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


def _head_function(explainer: Any) -> Any:
    """The explainer's head as a JAX function of one embedding, or None.

    A plain callable is used as is; anything else (a Keras layer) is converted the way
    `fastfem.FAM` does it (``fastfem.explainers.fam.build_head``), its weights bound.
    """
    head = getattr(explainer, "head", None)
    if head is None:
        return None
    from .explainers import fam as fam_module

    build = getattr(fam_module, "build_head", None)
    if build is None:
        if callable(head):
            return head
        raise ValueError("cannot turn this explainer's head into a JAX function")
    ext = explainer.extractor
    spec = jax.ShapeDtypeStruct((1, *[d or 64 for d in ext.input_shape]), jnp.float32)
    channels = jax.eval_shape(ext.apply, ext.params, spec).activations[0].shape[-1]
    bound = build(head, int(channels))
    return None if bound is None else (lambda e: bound.apply(bound.params, e))


def _as_maps(maps: Any, n: int) -> np.ndarray:
    maps = np.asarray(maps, np.float32)
    if maps.ndim == 4:
        maps = maps[..., 0] if maps.shape[-1] == 1 else maps.mean(axis=-1)
    if maps.ndim != 3 or maps.shape[0] != n:
        raise ValueError(f"maps must be (N, H, W[, C]) with N = {n}; got shape {maps.shape}")
    return maps


def _as_boxes(boxes: Any, n: int, image_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(on-device form, xyxy for the host IoU): xyxy (N, 4) or masks (N, H, W)."""
    boxes = np.asarray(boxes)
    if boxes.ndim == 2 and boxes.shape == (n, 4):
        xyxy = boxes.astype(np.float32)
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


def _class_targets(targets: Any, n: int) -> np.ndarray:
    if targets is None:
        return np.full((n,), -1, np.int32)
    t = np.asarray(targets)
    if t.ndim == 2:
        t = t.argmax(axis=-1)
    t = t.reshape(-1)
    if t.shape[0] != n:
        raise ValueError(f"targets: expected {n} class indices; got {t.shape[0]}")
    return t.astype(np.int32)


def fused_map_fn(explainer: Any) -> tuple[str, Any] | None:
    """``(layer name, maps_fn(activations (B, h, w, C), (H, W)) -> maps (B, H, W))`` for an
    explainer whose map is a known kernel of one layer's activations (`fastfem.FEM`, the
    mean-of-activations baseline), else None. The same kernel and resize as its ``explain``."""
    from .explainers.fem import FEM
    from .kernels.fem import RESIZE_METHOD, fem_map
    from .metrics.baselines import MeanActivation

    if isinstance(explainer, FEM):
        k, variant, method = explainer.k, explainer.variant, RESIZE_METHOD[explainer.variant]

        def kernel(a: jax.Array) -> jax.Array:
            return fem_map(a, k=k, variant=variant)

    elif isinstance(explainer, MeanActivation):
        method = "bilinear"

        def kernel(a: jax.Array) -> jax.Array:
            return jnp.mean(a.astype(jnp.float32), axis=-1)

    else:
        return None

    def maps_fn(acts: jax.Array, out_hw: tuple[int, int]) -> jax.Array:
        rh, rw = resize_matrices(tuple(acts.shape[1:3]), out_hw, method)
        return jax.vmap(resize_map, in_axes=(0, None, None))(
            kernel(acts), jnp.asarray(rh), jnp.asarray(rw)
        )

    return explainer.layer_name, maps_fn


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


Stage = Any  # (params, carry dict) -> (results dict, carry dict), both per-sample arrays


def make_metrics_stages(
    metrics: tuple[str, ...],
    scorer: F.Scorer | None,
    image_hw: tuple[int, int],
    map_hw: tuple[int, int] | None,
    threshold: float,
    normalize: Loc.Normalize,
    ties: Loc.Ties,
    steps: int,
    baseline: F.Baseline,
    max_images: int,
    maps_fn: Any = None,
    return_maps: bool = False,
) -> list[Stage]:
    """The per-batch metrics computation as a chain of jittable stages (`StagedRunner`).

    Each stage is ``(params, carry) -> (results, carry)``; results are per-sample arrays that
    are fetched, the carry stays on the devices for the next stage. The first carry is the
    batch: ``x`` (B, H, W, C), ``maps`` (B, h, w) (resized to (H, W), bilinear, when h, w
    differ), optional ``boxes`` (xyxy (B, 4) or masks (B, H, W)) and ``targets`` (class
    indices, -1 = predicted; or reference images).

    1. ``prepare``: the maps (with ``maps_fn``, `fused_map_fn`: from ONE forward pass of ``x``
       that also gives the model output, i.e. the explanation is part of the step), the
       localisation metrics, the masked input ``x * L``, and the references' embeddings;
    2. ``score``: the model on ``x * L`` (and on ``x`` when not fused, in the same 2B-image
       pass): base scores, targets, average drop, increase in confidence;
    3. one stage per curve (deletion, insertion), chunked forward passes in a `jax.lax.map`.

    Every stage runs at most one forward pass of the model (the curve's loop body one per
    group): XLA:CPU runs two dependent or independent forward passes compiled into ONE module
    2-4x slower than as two modules on this machine, so a stage boundary is where a second
    pass starts; the carry never leaves the devices.
    """
    resize = None
    if maps_fn is None and map_hw != image_hw:
        resize = resize_matrices(map_hw, image_hw, "bilinear")
    loc = [m for m in metrics if m in ("pointing_game", "energy_pointing_game", "iou")]
    adic = any(m in metrics for m in ("average_drop", "increase_in_confidence"))
    curves = [m.split("_")[0] for m in metrics if m in ("deletion_auc", "insertion_auc")]
    faith = any(m in FAITHFULNESS_METRICS for m in metrics)
    if (faith or maps_fn is not None) and scorer is None:
        raise ValueError("a scorer is needed for the faithfulness metrics or a fused explanation")
    h, w = image_hw

    def prepare(params: Any, batch: dict[str, Any]) -> tuple[dict, dict]:
        x = batch["x"]
        carry: dict[str, Any] = {"x": x}
        if maps_fn is not None:
            feats = scorer.apply(params, x)
            maps = maps_fn(feats.activations[0], (h, w))
            carry["f_clean"] = scorer.from_features(feats)
        else:
            maps = batch["maps"].astype(jnp.float32)
            if resize is not None:
                rh, rw = (jnp.asarray(r) for r in resize)
                maps = jax.vmap(resize_map, in_axes=(0, None, None))(maps, rh, rw)
        out: dict[str, jax.Array] = {}
        if return_maps:
            out["maps"] = maps
        if loc:
            boxes = batch["boxes"]
            masks = Loc.box_masks(boxes, h, w) if boxes.ndim == 2 else boxes.astype(bool)
            res = jax.vmap(Loc.localisation_sample, in_axes=(0, 0, None, None, None))(
                maps, masks, threshold, normalize, ties
            )
            for name in loc:
                out[name] = getattr(res, name)
        if faith:
            if curves:
                carry["maps"] = maps  # curves rank the raw map (Xplique, Quantus)
            if adic:
                saliency = F.normalized_maps(maps, normalize)
                carry["masked"] = jax.vmap(F.masked_input)(x, saliency)
            if scorer.kind == "class":
                carry["given"] = batch["targets"]
            else:  # the references' embeddings: their forward pass, in this stage
                carry["target"] = scorer.targets(params, None, batch["targets"])
        return out, carry

    def score(params: Any, carry: dict[str, Any]) -> tuple[dict, dict]:
        x = carry["x"]
        b = x.shape[0]
        f_clean = carry.get("f_clean")
        f_masked = None
        if adic:
            if f_clean is None:  # x and x * L in ONE pass of 2B images (sample-major)
                pair = jnp.stack([x, carry["masked"]], axis=1).reshape(2 * b, *x.shape[1:])
                f = scorer.features(params, pair)
                f = f.reshape(b, 2, *f.shape[1:])
                f_clean, f_masked = f[:, 0], f[:, 1]
            else:
                f_masked = scorer.features(params, carry["masked"])
        elif f_clean is None:
            f_clean = scorer.features(params, x)
        if scorer.kind == "class":
            target = scorer.targets(params, f_clean, carry["given"])
        else:
            target = carry["target"]
        y = scorer.value(f_clean, target)
        out = {"base_score": y}
        if scorer.kind == "class":
            out["target"] = target
        if f_masked is not None:
            o = scorer.value(f_masked, target)
            out["masked_score"] = o
            out["average_drop"] = F.average_drop(y, o)
            out["increase_in_confidence"] = F.increase_in_confidence(y, o)
        nxt = {"x": x, "target": target}
        if curves:
            nxt["maps"] = carry["maps"]
        return out, nxt

    def curve_stage(mode: str) -> Stage:
        def stage(params: Any, carry: dict[str, Any]) -> tuple[dict, dict]:
            curve = F.perturbation_curves(
                scorer,
                params,
                carry["x"],
                carry["maps"],
                carry["target"],
                steps,
                mode,  # type: ignore[arg-type]
                baseline,
                max_images,
            )
            return {f"{mode}_curve": curve, f"{mode}_auc": F.curve_auc(curve)}, carry

        return stage

    stages: list[Stage] = [prepare]
    if faith:
        stages.append(score)
        stages.extend(curve_stage(mode) for mode in curves)
    return stages


class StagedRunner:
    """Run jitted stages (`make_metrics_stages`) batch by batch, sharded over a device mesh.

    Like `fastfem.batch_runner.BatchRunner` (padded device batches, one trace per shape,
    params replicated, one batch in flight while the previous one's small results are
    fetched), but each batch goes through several jitted functions whose intermediate carry
    stays on the devices.
    """

    def __init__(self, stages: list[Stage], params: Any, batch_size: int, mesh: Any = None):
        self.mesh = mesh if mesh is not None else data_mesh()
        self.n_devices = self.mesh.devices.size
        self.batch_size = round_up(batch_size, self.n_devices)
        self._sharding = batch_sharding(self.mesh)
        self.params = jax.device_put(params, replicated(self.mesh))
        self.stages = [jax.jit(s, out_shardings=self._sharding) for s in stages]

    def device_batch(self, count: int) -> int:
        """The padded batch used for ``count`` images."""
        return min(self.batch_size, round_up(count, self.n_devices))

    def _dispatch(self, chunk: dict[str, np.ndarray], size: int) -> dict[str, jax.Array]:
        carry = jax.device_put({k: pad_batch(v, size) for k, v in chunk.items()}, self._sharding)
        results: dict[str, jax.Array] = {}
        for stage in self.stages:
            out, carry = stage(self.params, carry)
            results.update(out)
        return results

    def run(self, arrays: dict[str, np.ndarray], count: int) -> Iterator[dict[str, np.ndarray]]:
        """Yield each batch's results as NumPy arrays, padding rows removed."""
        size = self.device_batch(count)
        pending = None
        for start in range(0, count, size):
            chunk = {k: v[start : start + size] for k, v in arrays.items()}
            results = self._dispatch(chunk, size)
            if pending is not None:
                yield _fetch(*pending)
            pending = (results, min(size, count - start))
        if pending is not None:
            yield _fetch(*pending)


def _fetch(results: dict[str, jax.Array], n_valid: int) -> dict[str, np.ndarray]:
    return {k: np.asarray(v)[:n_valid] for k, v in results.items()}


class Evaluator:
    """`evaluate` with its compiled steps kept: build once, call on many batches of images.

    ``Evaluator(explainer, metrics=None, model=None, scorer=None, ...)(images, boxes=None,
    targets=None, maps=None)``; the arguments are those of `evaluate`. The jitted metrics step
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
        threshold: float = 0.5,
        normalize: Loc.Normalize = "relu_minmax",
        ties: Loc.Ties = "mean",
        steps: int = 16,
        baseline: F.Baseline = 0.0,
        activation: F.Activation = None,
        batch_size: int = 64,
        max_images: int = 256,
        fuse: bool = True,
        devices: Sequence[jax.Device] | None = None,
    ):
        Loc.check_normalize(normalize)
        if ties not in Loc.TIES:
            raise ValueError(f"unknown ties rule {ties!r}; expected one of {Loc.TIES}")
        if int(steps) < 1:
            raise ValueError(f"steps must be >= 1; got {steps}")
        if isinstance(baseline, str) and baseline != "mean":
            raise ValueError(f"baseline must be a number or 'mean'; got {baseline!r}")
        self.explainer = explainer
        self.metrics = [metrics] if isinstance(metrics, str) else metrics
        if self.metrics is not None:
            resolve_metrics(self.metrics, True, True)  # names only; data checked per call
        self.similarity = scorer is None and model is None and is_similarity_explainer(explainer)
        self.maps_fn = None
        if fuse and scorer is None and model is not None:
            scorer, self.maps_fn = self._fusion(explainer, model, activation)
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
        self.threshold = float(threshold)
        self.normalize = normalize
        self.ties = ties
        self.steps = int(steps)
        self.baseline = baseline
        self.batch_size = int(batch_size)
        self.max_images = int(max_images)
        self.devices = devices
        self._runners: dict[tuple[Any, ...], StagedRunner] = {}

    @property
    def fused(self) -> bool:
        """Whether the explanation is computed inside the metrics step (one forward pass of
        ``x`` gives the maps and the base scores)."""
        return self.maps_fn is not None

    @staticmethod
    def _fusion(explainer: Any, model: Any, activation: F.Activation) -> tuple[Any, Any]:
        """(class scorer on an extractor with the explained layer + output, maps_fn), or
        (None, None) when the explanation cannot be fused: an explainer other than FEM / the
        mean-of-activations baseline, a FeatureExtractor as model (its layers are fixed), or a
        model whose weights do not contain the explainer's."""
        spec = fused_map_fn(explainer)
        if spec is None or isinstance(model, FeatureExtractor):
            return None, None
        extractor = load(model, layers=spec[0], include_output=True)
        if not same_weights(explainer.extractor.params, extractor.params):
            return None, None
        return F.class_scorer(extractor, activation), spec[1]

    def _runner(
        self,
        chosen: tuple[str, ...],
        scorer: F.Scorer | None,
        fused: bool,
        key: tuple[Any, ...],
    ) -> StagedRunner:
        full_key = (chosen, scorer is not None, fused, *key)
        if full_key not in self._runners:
            image_hw, map_hw = key[0], key[1]
            stages = make_metrics_stages(
                chosen,
                scorer,
                image_hw,
                map_hw,
                self.threshold,
                self.normalize,
                self.ties,
                self.steps,
                self.baseline,
                self.max_images,
                maps_fn=self.maps_fn if fused else None,
                return_maps=fused and "iou_box" in chosen,
            )
            mesh = data_mesh(self.devices) if self.devices is not None else None
            params = scorer.params if scorer is not None else ()
            self._runners[full_key] = StagedRunner(stages, params, self.batch_size, mesh)
        return self._runners[full_key]

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
        scorer = self.scorer if (faith or fused) else None

        seconds: dict[str, float] = {}
        map_hw: tuple[int, int] | None = None
        arrays: dict[str, np.ndarray] = {"x": x}
        if not fused:
            if maps is None:
                if self.explainer is None:
                    raise ValueError("no explainer: pass maps= or build the Evaluator with one")
                start = time.perf_counter()
                if targets is not None:
                    maps = self.explainer.explain(x, targets)
                else:
                    maps = self.explainer.explain(x)
                seconds["explain"] = time.perf_counter() - start
            maps = _as_maps(maps, n)
            map_hw = tuple(maps.shape[1:3])  # type: ignore[assignment]
            arrays["maps"] = maps
        xyxy = None
        if boxes is not None:
            on_device, xyxy = _as_boxes(boxes, n, (h, w))
            arrays["boxes"] = on_device
        if faith:
            if scorer.kind == "class":
                arrays["targets"] = _class_targets(targets, n)
            else:
                refs = np.asarray(targets, np.float32)
                if refs.ndim != 4 or refs.shape[0] != n:
                    raise ValueError(
                        f"targets: expected {n} reference images (N, H, W, C); got {refs.shape}"
                    )
                arrays["targets"] = refs

        start = time.perf_counter()
        device_metrics = tuple(m for m in chosen if m != "iou_box")
        fetched: dict[str, list[np.ndarray]] = {}
        if device_metrics or fused:
            key = ((h, w), map_hw, None if boxes is None else arrays["boxes"].ndim)
            runner = self._runner(
                device_metrics + (("iou_box",) if "iou_box" in chosen else ()), scorer, fused, key
            )
            bar = progress_bar(n, enabled=progress, desc="metrics")
            for out in runner.run(arrays, n):
                for k, v in out.items():
                    fetched.setdefault(k, []).append(v)
                bar.update(x.shape[0] if not out else next(iter(out.values())).shape[0])
            bar.close()
        merged = {k: np.concatenate(v, axis=0) for k, v in fetched.items()}
        if "iou_box" in chosen:
            if fused:
                maps, map_hw = merged.pop("maps"), (h, w)
            scale = np.array([map_hw[1] / w, map_hw[0] / h] * 2, np.float32)
            merged["iou_box"] = Loc.iou_box_batch(
                maps, xyxy * scale, self.threshold, self.normalize
            )
        seconds["explain+metrics" if fused else "metrics"] = time.perf_counter() - start

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
            "threshold": self.threshold,
            "normalize": self.normalize,
            "ties": self.ties,
            "steps": self.steps,
            "baseline": self.baseline,
            "score": scorer.description if faith else None,
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
    model: Any = None,
    scorer: F.Scorer | None = None,
    maps: Any = None,
    threshold: float = 0.5,
    normalize: Loc.Normalize = "relu_minmax",
    ties: Loc.Ties = "mean",
    steps: int = 16,
    baseline: F.Baseline = 0.0,
    activation: F.Activation = None,
    batch_size: int = 64,
    max_images: int = 256,
    fuse: bool = True,
    devices: Sequence[jax.Device] | None = None,
    progress: bool = False,
) -> EvaluationResult:
    """Evaluate an explainer's maps on ``images`` (N, H, W, C): per-sample scores and means.

    Args:
      explainer: anything with ``explain(images[, targets]) -> (N, H, W[, 1])`` maps (FEM,
        MLFEM, FAM, the baselines of `fastfem.metrics.baselines`); may be None with ``maps``.
      images: (N, H, W, C) array.
      boxes: ground truth for the localisation metrics: xyxy (N, 4) in pixels (exclusive
        ends) or boolean masks (N, H, W).
      targets: class indices (N,) or one-hot (N, K) (default: the predicted class), or for a
        similarity explainer (FAM) the reference images (N, H, W, C).
      metrics: names from `METRICS`; None -> all that the inputs allow (localisation with
        boxes, faithfulness when a model's scores are available).
      model: the scored model for classifiers (default ``explainer.model``).
      scorer: a custom `fastfem.metrics.Scorer` (overrides ``model``).
      maps: precomputed maps (N, h, w[, 1]); skips the explanation. Maps at another resolution
        than the images are resized bilinearly on device.
      threshold: t of IoU@t and of the component box.
      normalize, ties: map normalisation and pointing-game tie rule
        (`fastfem.metrics.localisation`).
      steps, baseline: T and the baseline (a number or ``"mean"``) of deletion/insertion.
      activation: None, ``"softmax"`` or ``"sigmoid"`` on the model output (class scorer).
      batch_size: images per device step; max_images: images per forward pass in the curves.
      fuse: for `fastfem.FEM` and the mean-of-activations baseline with ``model=`` the explained
        model (checked: its weights must contain the explainer's), compute the maps inside the
        metrics step: one forward pass of ``x`` gives the explained layer (-> the maps, the same
        kernel and resize as ``explain``) and the output (-> the base scores), and maps never
        leave the device. False: call ``explainer.explain`` first. (Fused, a NaN input gives NaN
        metrics instead of FEM's error.)
      devices: devices to shard over (default all local devices).
      progress: show a progress bar for the metrics.

    Each call compiles its step; use `Evaluator` to evaluate many batches with one compile.
    """
    evaluator = Evaluator(
        explainer,
        metrics,
        model=model,
        scorer=scorer,
        threshold=threshold,
        normalize=normalize,
        ties=ties,
        steps=steps,
        baseline=baseline,
        activation=activation,
        batch_size=batch_size,
        max_images=max_images,
        fuse=fuse,
        devices=devices,
    )
    return evaluator(images, boxes=boxes, targets=targets, maps=maps, progress=progress)
