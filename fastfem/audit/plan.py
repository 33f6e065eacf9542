"""Stage 1 of an audit: the plan — model, explainer, source, boxes and settings, all checked
before any image is read.

`plan_audit` turns the arguments of `fastfem.audit.audit` into an `AuditPlan`: the model as a
`fastfem.converters.FeatureExtractor` with its output and the requested preprocessing
(`fastfem.data.preprocess`), the explainer of the method built on it (any method of
`fastfem.explainers.registry` with audit hooks: the audit runs its public ``step``), the
opened `fastfem.data.records.Source`, the boxes matched to the source's ids, and the
configuration the manifest records. Everything a user can get wrong is an error here, naming
the value, before the store is touched.

Explainers built on model files are kept between calls in one process
(`fastfem.explainers.registry.cached_explainer`), keyed by the model file (path, mtime, size),
the layers, the method's settings, the preprocessing and the devices: a second audit of the same
model reuses the loaded model and the compiled steps. Models given as objects (a Keras model)
are not cached: their weights may change between calls.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fastfem.audit.store.manifest import tree_stamp
from fastfem.converters import FeatureExtractor
from fastfem.data.boxes import (
    SAMPLE,
    Boxes,
    check_bounds,
    match_boxes,
    read_boxes,
    sample_boxes,
    unknown_ids_error,
)
from fastfem.data.preprocess import Preprocess, preprocess_fn, preprocess_name
from fastfem.data.records import ReadOptions, Source
from fastfem.data.sources import open_source
from fastfem.explainers.base import check_positive_int
from fastfem.explainers.method import Explainer, Method
from fastfem.explainers.registry import METHODS, cached_explainer, check_settings, method_named


@dataclass
class AuditPlan:
    """What an audit will do (see the module docstring)."""

    method: Method
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


def check_arguments(
    method: str, batch_size: Any, part_size: Any, references: Any, settings: Mapping[str, Any]
) -> Method:
    """Validate the audit's scalar arguments (a ValueError naming the value); returns the
    method. ``settings``: the method settings given (None: not given)."""
    audited = tuple(m for m in METHODS if m.audit is not None)
    if method not in [m.name for m in audited]:
        raise ValueError(
            f"unknown audit method {method!r}; expected one of {[m.name for m in audited]}"
        )
    chosen = method_named(method)
    check_positive_int(batch_size)
    check_positive_int(part_size, "part_size")
    if references is not None and chosen.audit.prepare is None:
        users = "/".join(repr(m.name) for m in audited if m.audit.prepare is not None)
        raise ValueError(f"references= is only used by method={users}")
    check_settings(chosen, settings)
    return chosen


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
    method: Method,
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
    values = method.values(settings)
    key = model_file_key(model)
    explainer = cached_explainer(method.name, model, key, layer, batch_size, values, preprocess)
    expected = explainer.extractor.input_shape
    hw = image_hw(explainer.extractor)
    src = open_source(source, tuple(expected), reading)
    refs = None
    if references is not None:
        refs = open_source(references, tuple(expected), reading)
    config: dict[str, Any] = {
        **{
            k: np.asarray(v).tolist() if isinstance(v, (list, tuple)) else v
            for k, v in values.items()
        },
        **method.audit.manifest(explainer),
        "batch_size": explainer.device_batch(),
        "input_size": list(hw),
        "fit": reading.fit,
        "alpha": reading.alpha,
        "max_pixels": reading.max_pixels,
        "preprocess": preprocess_name(preprocess),
    }
    for name in ("image_column", "label_column", "label_field"):  # recorded when chosen
        if getattr(reading, name) is not None:
            config[name] = getattr(reading, name)
    if method.audit.prepare is not None:
        config["prototypes_from"] = "references" if refs is not None else "source"
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
