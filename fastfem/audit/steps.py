"""The audit's jitted step, per method, and the cache that keeps it compiled between calls.

One step per batch does everything on the devices (DESIGN.md §2): pixels to float, ONE forward
pass (the explained layer(s) and, when the model has one, its output), the explanation map,
its statistics (`fastfem.kernels.map_stats`), the prediction, finiteness flags and, with
ground-truth boxes, the localisation metrics (`fastfem.metrics.localisation`). Only per-image
numbers and the stored map leave the devices.

Methods (``AuditSpec.method``):

* ``fem``: the FEM map (`fastfem.kernels.fem.fem_map`) of the explained layer, stored at
  feature resolution (h, w).
* ``mlfem``: the MLFEM fused map (`fastfem.explainers.mlfem.mlfem_maps`: each layer's FEM
  resized to the input size, min-max normalised, fused), stored at the input size (H, W).
* ``fam``: the FAM of each image against a class prototype (`fastfem.explainers.fam.
  prototype_fam`; the prototypes are replicated step parameters), stored at feature resolution.

Localisation metrics are computed on the map at the input size, resized as the method's
explainer does (FEM: the variant's resize, e.g. bicubic for ``xplique``; FAM: bilinear; MLFEM:
already at the input size) — exactly what `fastfem.evaluate` scores for that explainer — with
`evaluate`'s defaults: ``normalize="relu_minmax"``, IoU threshold ``t = 0.5``, pointing-game
ties ``"mean"``. An image with several boxes is scored against the union of their masks.
"""

from __future__ import annotations

import collections
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..batch_runner import BatchRunner
from ..converters import FeatureExtractor, load
from ..explainers.fam import _Options, prototype_fam
from ..explainers.mlfem import mlfem_maps
from ..kernels.fam import EPS
from ..kernels.fam import RESIZE_METHOD as FAM_RESIZE
from ..kernels.fem import RESIZE_METHOD, Variant, fem_map
from ..kernels.map_stats import map_stats
from ..kernels.resize import resize_map, resize_maps, resize_matrices
from ..metrics import localisation as Loc
from ..parallel import data_mesh

METHODS: tuple[str, ...] = ("fem", "mlfem", "fam")
#: Localisation settings of the audit (`fastfem.evaluate`'s defaults).
IOU_THRESHOLD = 0.5
NORMALIZE: Loc.Normalize = "relu_minmax"
TIES: Loc.Ties = "mean"
LOCALISATION_COLUMNS: tuple[str, ...] = ("pointing_game", "energy_pointing_game", "iou")
#: FAM options of the audit: FAM's defaults (GAP embeddings, cosine similarity, max weights).
FAM_OPTIONS = _Options(pooling="gap", similarity="cosine", normalize="max", eps=EPS)
#: 8-bit pixel value -> float32 in [0, 1], exactly the host's ``np.float32(v) / 255``.
U8_TO_UNIT = np.arange(256, dtype=np.float32) / 255.0


@dataclass(frozen=True)
class AuditSpec:
    """What one audit step computes (hashable: part of the compiled-step cache key).

    ``boxes``: boxes per image in the batch (0: no localisation metrics).
    """

    method: str
    k: float
    variant: Variant
    fusion: str = "mean"
    fusion_weights: tuple[float, ...] | None = None
    boxes: int = 0


def to_unit_float(x: jax.Array) -> jax.Array:
    """Pixels to float32: uint8 ``v`` -> ``v / 255`` (a table lookup, bit-identical to the host
    division); float inputs unchanged."""
    if x.dtype == jnp.uint8:
        return jnp.take(jnp.asarray(U8_TO_UNIT), x.astype(jnp.int32))
    return x.astype(jnp.float32)


def union_masks(boxes: jax.Array, height: int, width: int) -> jax.Array:
    """xyxy boxes (B, K, 4) -> (B, H, W) bool, the union of each image's K box masks
    (`fastfem.metrics.box_mask`; the empty padding box adds nothing)."""
    masks = jax.vmap(lambda b: Loc.box_masks(b, height, width))(boxes)  # (B, K, H, W)
    return jnp.any(masks, axis=1)


def input_size_maps(spec: AuditSpec, maps: jax.Array, image_hw: tuple[int, int]) -> jax.Array:
    """The stored maps at the input size, resized as the method's explainer does."""
    if spec.method == "mlfem" or tuple(maps.shape[1:3]) == tuple(image_hw):
        return maps
    if spec.method == "fam":
        return resize_maps(maps, image_hw, FAM_RESIZE)
    rh, rw = resize_matrices(tuple(maps.shape[1:3]), image_hw, RESIZE_METHOD[spec.variant])
    return jax.vmap(resize_map, in_axes=(0, None, None))(maps, jnp.asarray(rh), jnp.asarray(rw))


def localisation_columns(
    maps: jax.Array, boxes: jax.Array, has_box: jax.Array
) -> dict[str, jax.Array]:
    """`fastfem.metrics.localisation_sample` of each map (B, H, W) against the union of its
    boxes; NaN (a null in the store) for images without boxes."""
    h, w = maps.shape[1:3]
    res = jax.vmap(Loc.localisation_sample, in_axes=(0, 0, None, None, None))(
        maps, union_masks(boxes, h, w), IOU_THRESHOLD, NORMALIZE, TIES
    )
    return {name: jnp.where(has_box, getattr(res, name), jnp.nan) for name in LOCALISATION_COLUMNS}


def method_maps(
    spec: AuditSpec, activations: tuple[jax.Array, ...], batch: dict, extra: Any, image_hw
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """``(stored maps, method-specific columns)`` of one batch."""
    if spec.method == "fem":
        return fem_map(activations[0], k=spec.k, variant=spec.variant), {}
    if spec.method == "mlfem":
        weights = None if spec.fusion_weights is None else np.asarray(spec.fusion_weights)
        fused, _ = mlfem_maps(activations, spec.k, spec.variant, spec.fusion, weights, image_hw)
        return fused, {}
    res = prototype_fam(activations[0], batch["target"], extra, None, FAM_OPTIONS, None)
    target = res["targets"]
    sim = jnp.take_along_axis(res["similarities"], target[:, None], axis=1)[:, 0]
    cols = {"similarity": sim, "prototype": target, "nearest_prototype": res["predictions"]}
    return res["maps"], cols


def prediction_columns(output: jax.Array) -> dict[str, jax.Array]:
    """Predicted class and its probability; the output is taken as probabilities when every
    row is in [0, 1] and sums to 1 (within 1e-3), else as logits (softmax)."""
    logits = output.reshape(output.shape[0], -1).astype(jnp.float32)
    is_prob = jnp.all((logits >= 0) & (logits <= 1), axis=1) & (
        jnp.abs(jnp.sum(logits, axis=1) - 1) < 1e-3
    )
    probs = jnp.where(is_prob[:, None], logits, jax.nn.softmax(logits, axis=1))
    return {
        "prediction": jnp.argmax(probs, axis=1).astype(jnp.int32),
        "confidence": jnp.max(probs, axis=1),
    }


def make_audit_step(extractor: FeatureExtractor, spec: AuditSpec, image_hw: tuple[int, int]):
    """``((model params, extra), batch) -> dict`` of per-image results.

    ``batch``: ``x`` (B, H, W, C) uint8 or float; with boxes ``boxes`` (B, K, 4) and
    ``has_box`` (B,); for FAM ``target`` (B,) the prototype index (-1: the nearest). ``extra``:
    the FAM prototypes (P, C), else unused.
    """

    def step(params: Any, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        model_params, extra = params
        x = to_unit_float(batch["x"])
        feats = extractor.apply(model_params, x)
        maps, out = method_maps(spec, tuple(feats.activations), batch, extra, image_hw)
        out = {"map": maps, **out, **jax.vmap(map_stats)(maps)._asdict()}
        finite = jnp.all(jnp.isfinite(maps), axis=(1, 2))
        for a in feats.activations:
            finite &= jnp.all(jnp.isfinite(a), axis=tuple(range(1, a.ndim)))
        out["finite"] = finite
        if feats.output is not None:
            out.update(prediction_columns(feats.output))
        if spec.boxes:
            full = input_size_maps(spec, maps, image_hw)
            out.update(localisation_columns(full, batch["boxes"], batch["has_box"]))
        return out

    return step


def make_embed_step(extractor: FeatureExtractor):
    """``((model params, _), x) -> {embedding (B, C), finite (B,)}``: the GAP embeddings of the
    FAM audit's first pass (the prototypes)."""
    from ..kernels.fam import pool

    def step(params: Any, x: jax.Array) -> dict[str, jax.Array]:
        acts = extractor.apply(params[0], to_unit_float(x)).activations[0]
        e = jax.vmap(lambda a: pool(a, FAM_OPTIONS.pooling))(acts)
        return {"embedding": e, "finite": jnp.all(jnp.isfinite(e), axis=1)}

    return step


# ---------------------------------------------------------------------------- compiled cache
#
# A jitted step is compiled per (function object, shapes); building a new step closure on every
# `audit` call recompiles it (~0.4 s for the bundled CNN). The extractors of models given by
# path, and the runners (jitted step + replicated params), are kept in small LRU caches so that
# repeated audits in one process reuse them. Models given as objects (a Keras model) are not
# cached: their weights may change between calls.

_CACHE_SIZE = 4
_EXTRACTORS: collections.OrderedDict[tuple, FeatureExtractor] = collections.OrderedDict()
_RUNNERS: collections.OrderedDict[tuple, tuple[BatchRunner, Any]] = collections.OrderedDict()


def _lru_get(cache: collections.OrderedDict, key: tuple) -> Any:
    value = cache.get(key)
    if value is not None:
        cache.move_to_end(key)
    return value


def _lru_put(cache: collections.OrderedDict, key: tuple, value: Any) -> None:
    cache[key] = value
    while len(cache) > _CACHE_SIZE:
        cache.popitem(last=False)


def _file_key(model: Any) -> tuple | None:
    """(path, mtime, size) of a model file/folder, or None for a model object."""
    if not isinstance(model, (str, os.PathLike)):
        return None
    p = Path(model).resolve()
    try:
        st = p.stat()
    except OSError:
        return None
    return (str(p), st.st_mtime_ns, st.st_size)


def cached_extractor(model: Any, layers: Any, include_output: bool) -> FeatureExtractor:
    """`fastfem.converters.load` of ``model``, cached for model files (keyed on path, mtime and
    size, so an edited file is reloaded)."""
    file_key = _file_key(model)
    layer_key = tuple(layers) if isinstance(layers, (list, tuple)) else layers
    key = None if file_key is None else (file_key, layer_key, include_output)
    if key is not None and (hit := _lru_get(_EXTRACTORS, key)) is not None:
        return hit
    extractor = load(model, layers=layers, include_output=include_output)
    if key is not None:
        _lru_put(_EXTRACTORS, key, extractor)
    return extractor


def cached_runner(
    kind: str,
    extractor: FeatureExtractor,
    spec: AuditSpec | None,
    image_hw: tuple[int, int],
    batch_size: int,
    cacheable: bool,
) -> BatchRunner:
    """The `BatchRunner` of the audit step (``kind="audit"``) or of the FAM embedding pass
    (``"embed"``) for this extractor and spec, reused across calls when ``cacheable``.

    The key holds ``id(extractor)`` and the cached entry holds the extractor itself, so the id
    cannot be reused by another object while the entry lives.
    """
    devices = tuple(str(d) for d in jax.local_devices())
    key = (kind, id(extractor), spec, tuple(image_hw), batch_size, devices)
    if cacheable and (hit := _lru_get(_RUNNERS, key)) is not None:
        return hit[0]
    step = (
        make_audit_step(extractor, spec, image_hw)
        if kind == "audit"
        else make_embed_step(extractor)
    )
    runner = BatchRunner(step, (extractor.params, ()), batch_size, data_mesh())
    if cacheable:
        _lru_put(_RUNNERS, key, (runner, extractor))
    return runner


def enable_persistent_compile_cache(path: str | os.PathLike | None = None) -> str | None:
    """Turn on JAX's persistent compilation cache (for the CLI: each run is a new process).

    ``path`` default: ``$FASTFEM_COMPILE_CACHE`` or ``~/.cache/fastfem/jax``; the variable set
    to ``0``/``off`` disables it. Steps that compile in any time are cached. Returns the folder,
    or None when disabled or unavailable.
    """
    env = os.environ.get("FASTFEM_COMPILE_CACHE")
    if env is not None and env.strip().lower() in ("0", "off", "false", "no", ""):
        return None
    folder = Path(path or env or Path.home() / ".cache" / "fastfem" / "jax")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", str(folder))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    except (OSError, AttributeError, ValueError):
        return None
    return str(folder)
