"""Stage 1 of an audit: the plan — model, explainer, source, boxes and settings, all checked
before any image is read.

`plan_audit` turns the arguments of `fastfem.audit.audit` into an `AuditPlan`: the model as a
`fastfem.converters.FeatureExtractor` with its output and the requested preprocessing
(`fastfem.data.preprocess`), the explainer of the method built on it (FEM, MLFEM or FAM: the audit
runs their public ``step``), the opened `fastfem.data.sources.Source`, the boxes matched to the
source's ids, and the configuration the manifest records. Everything a user can get wrong is an
error here, naming the value, before the store is touched.

Compiled steps are kept between calls in one process in ONE small cache (`STEP_CACHE`), keyed by
the model file (path, mtime, size), the layers, the method's settings, the preprocessing and the
devices: a second audit of the same model reuses the loaded model and the compiled step.
Models given as objects (a Keras model) are not cached: their weights may change between calls.
"""

from __future__ import annotations

import collections
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np

from fastfem.audit.steps import METHODS
from fastfem.audit.store.manifest import tree_stamp
from fastfem.converters import FeatureExtractor, load, load_keras_file
from fastfem.data.boxes import (
    SAMPLE,
    Boxes,
    check_bounds,
    match_boxes,
    read_boxes,
    sample_boxes,
    unknown_ids_error,
)
from fastfem.data.preprocess import Preprocess, preprocess_fn, preprocess_name, with_preprocessing
from fastfem.data.sources import ReadOptions, Source, open_source
from fastfem.explainers import FAM, FEM, MLFEM
from fastfem.explainers.base import Explainer, check_positive_int
from fastfem.explainers.mlfem import default_layers
from fastfem.kernels.fem import check_k, check_variant


@dataclass
class AuditPlan:
    """What an audit will do (see the module docstring)."""

    method: str
    explainer: Explainer
    source: Source
    boxes: Boxes | None
    image_hw: tuple[int, int]
    model_desc: str
    config: dict[str, Any]
    references: Source | None = None
    model: Any = None  # the model as given (None: the bundled CNN's path)

    @property
    def extractor(self) -> FeatureExtractor:
        return self.explainer.extractor


def image_hw(extractor: FeatureExtractor) -> tuple[int, int]:
    """The model's fixed input size (H, W); a ValueError when it leaves it free."""
    h, w = extractor.input_shape[0], extractor.input_shape[1]
    if h is None or w is None:
        raise ValueError(
            "the audit needs a model with a fixed input size (H, W); this one leaves it free "
            f"({extractor.input_shape})"
        )
    return int(h), int(w)


def mlfem_layers(model: Any, layer: Any) -> list[Any]:
    """MLFEM's layers: ``layer`` (a list, or a comma-separated string), else
    `fastfem.explainers.mlfem.default_layers` (the last conv of each resolution stage)."""
    if isinstance(layer, str) and "," in layer:
        return [name.strip() for name in layer.split(",") if name.strip()]
    if isinstance(layer, (str, int)):
        return [layer]
    if layer is not None:
        return list(layer)
    keras_model = load_keras_file(model) if isinstance(model, (str, os.PathLike)) else model
    return default_layers(keras_model)


def check_arguments(
    method: str,
    k: Any,
    variant: str,
    batch_size: Any,
    part_size: Any,
    references: Any,
    fusion: str,
    fusion_weights: Any,
) -> float:
    """Validate the audit's scalar arguments (a ValueError naming the value); returns k."""
    if method not in METHODS:
        raise ValueError(f"unknown audit method {method!r}; expected one of {METHODS}")
    check_variant(variant)
    check_positive_int(batch_size)
    check_positive_int(part_size, "part_size")
    if references is not None and method != "fam":
        raise ValueError("references= is only used by method='fam'")
    if method != "mlfem" and (fusion != "mean" or fusion_weights is not None):
        raise ValueError("fusion= and fusion_weights= are only used by method='mlfem'")
    return check_k(k)


# ---------------------------------------------------------------------------------- cache


class StepCache:
    """An LRU of ``key -> (explainer, anything)`` for models given by file (module docstring)."""

    def __init__(self, size: int = 4):
        self.size = size
        self._items: collections.OrderedDict[tuple, Any] = collections.OrderedDict()

    def get_or_build(self, key: tuple | None, build: Callable[[], Any]) -> Any:
        """The cached value of ``key``, else ``build()`` (cached unless ``key`` is None)."""
        if key is None:
            return build()
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        value = self._items[key] = build()
        while len(self._items) > self.size:
            self._items.popitem(last=False)
        return value


#: The one cache of loaded models and their compiled audit steps (see the module docstring).
STEP_CACHE = StepCache()


def model_file_key(model: Any) -> tuple | None:
    """(path, latest mtime, total size) of a model file, or of every file of a model folder
    (a SavedModel edited in place is a new key, as it is a new hash in the manifest); None for
    a model object."""
    if not isinstance(model, (str, os.PathLike)):
        return None
    p = Path(model).resolve()
    try:
        return (str(p), *tree_stamp(p)) if p.exists() else None
    except OSError:
        return None


def build_explainer(
    model: Any,
    method: str,
    layer: Any,
    settings: Mapping[str, Any],
    preprocess: str | Preprocess,
    batch_size: int,
) -> Explainer:
    """The method's explainer on the model's extractor (with output and preprocessing)."""
    if isinstance(model, FeatureExtractor):
        if layer is not None:
            raise ValueError("layer= cannot re-select the layers of a FeatureExtractor")
        extractor = model
    else:
        if method == "mlfem":
            layers = mlfem_layers(model, layer)
        elif isinstance(layer, (list, tuple)):
            raise ValueError(f"method {method!r} explains one layer; got layer={layer!r}")
        else:
            layers = layer
        extractor = load(model, layers=layers, include_output=True)
    extractor = with_preprocessing(extractor, preprocess)
    if method == "fem":
        return FEM(extractor, batch_size, k=settings["k"], variant=settings["variant"])
    if method == "mlfem":
        return MLFEM(
            extractor,
            fusion=settings["fusion"],
            weights=settings["fusion_weights"],
            k=settings["k"],
            variant=settings["variant"],
            batch_size=batch_size,
        )
    return FAM(extractor, batch_size=batch_size)


def cached_explainer(
    model: Any,
    method: str,
    layer: Any,
    settings: Mapping[str, Any],
    preprocess: str | Preprocess,
    batch_size: int,
) -> Explainer:
    """`build_explainer`, through `STEP_CACHE` for models given by file."""
    file_key = model_file_key(model)
    key = None
    if file_key is not None and isinstance(preprocess, str):
        layer_key = tuple(layer) if isinstance(layer, (list, tuple)) else layer
        devices = tuple(str(d) for d in jax.local_devices())
        frozen = tuple(sorted((k, _hashable(v)) for k, v in settings.items()))
        key = (file_key, method, layer_key, frozen, preprocess, batch_size, devices)
    return STEP_CACHE.get_or_build(
        key, lambda: build_explainer(model, method, layer, settings, preprocess, batch_size)
    )


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, (list, np.ndarray)) else value


# ---------------------------------------------------------------------------------- plan


def resolve_boxes(spec: Any, src: Source, input_shape: Sequence[int | None]) -> Boxes | None:
    """The boxes keyed by input id (checked against the model input); None without boxes.

    Box ids that match no input of a listable source are an error (`fastfem.data.boxes`).
    """
    if spec is None:
        return None
    boxes = read_boxes(spec)
    if boxes == SAMPLE:
        if src.ids is None:
            raise ValueError(
                "boxes='sample' needs a source that lists its ids (the bundled sample or a "
                "folder written by fastfem.sample.write_png_folder), not a stream"
            )
        boxes = sample_boxes(src.ids)
    assert isinstance(boxes, dict)
    check_bounds(boxes, input_shape[0], input_shape[1])
    if src.ids is None:
        return boxes  # matched by exact id while streaming; the unmatched reported at the end
    matched, unknown = match_boxes(boxes, src.ids)
    if unknown:
        raise unknown_ids_error(unknown, len(boxes), src.description)
    return matched


def plan_audit(
    source: Any,
    model: Any,
    method: str,
    layer: Any,
    settings: Mapping[str, Any],
    preprocess: str | Preprocess,
    batch_size: int,
    reading: ReadOptions,
    boxes: Any,
    references: Any,
) -> AuditPlan:
    """Check everything and open the model, the source(s) and the boxes (module docstring)."""
    preprocess_fn(preprocess)  # validates the name
    if model is None:
        from fastfem.sample import MODEL_PATH

        model = str(MODEL_PATH)
    model_desc = str(model) if isinstance(model, (str, Path)) else type(model).__name__
    # the explainer checked its layers when it was built (MLFEM: the fusion weights per layer)
    explainer = cached_explainer(model, method, layer, settings, preprocess, batch_size)
    expected = explainer.extractor.input_shape
    hw = image_hw(explainer.extractor)
    src = open_source(source, tuple(expected), reading)
    refs = None
    if references is not None:
        refs = open_source(references, tuple(expected), reading)
    config: dict[str, Any] = {
        **settings,
        "batch_size": explainer.device_batch(),
        "input_size": list(hw),
        "fit": reading.fit,
        "alpha": reading.alpha,
        "max_pixels": reading.max_pixels,
        "preprocess": preprocess_name(preprocess),
    }
    if method != "mlfem":
        config.pop("fusion", None)
        config.pop("fusion_weights", None)
    return AuditPlan(
        method=method,
        explainer=explainer,
        source=src,
        boxes=resolve_boxes(boxes, src, expected),
        image_hw=hw,
        model_desc=model_desc,
        config=config,
        references=refs,
        model=model,
    )
