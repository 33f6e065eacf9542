"""What the manifest records about a run: its columns, its configuration, the source, the
versions and the devices at the start (`start_info`); the classes, unmatched ids and labels
and the time at the end (`end_info`)."""

from __future__ import annotations

import datetime as dt
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax

from fastfem.audit.steps import IOU_THRESHOLD, LOCALISATION_COLUMNS, NORMALIZE
from fastfem.audit.store.manifest import STORE_FORMAT, model_sha256
from fastfem.audit.store.schema import schema_types, store_schema
from fastfem.kernels.map_stats import MapStats

if TYPE_CHECKING:
    from fastfem.audit.plan import AuditPlan
    from fastfem.audit.run import AuditRun

STAT_FIELDS = MapStats._fields


def row_columns(has_output: bool, method_columns: Sequence[str], has_boxes: bool) -> list[str]:
    """The Parquet columns of an audit, in order (``method_columns``: the method's own)."""
    cols = ["id", "id_raw", "label", "status", "error", *STAT_FIELDS]
    if has_output:
        cols += ["prediction", "confidence"]
    cols += list(method_columns)
    if has_boxes:
        cols += list(LOCALISATION_COLUMNS)
    return cols


def plan_columns(plan: AuditPlan) -> list[str]:
    """The store's columns for ``plan`` (`row_columns`)."""
    return row_columns(plan.extractor.has_output, plan.method.audit.columns, plan.boxes is not None)


def source_location(source: Any) -> str | None:
    """Where the report can read the images again: a path, "bundled:test", or None."""
    if source is None:
        return "bundled:test"
    if isinstance(source, (str, Path)):
        return str(Path(source).resolve())
    return None


def versions() -> dict[str, str | None]:
    """fastfem's, JAX's and Keras's versions (Keras's read from its installed metadata, not by
    importing it: a Flax or JAX model audits without Keras; None when it is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    from fastfem import __version__

    try:
        keras_version: str | None = version("keras")
    except PackageNotFoundError:
        keras_version = None
    return {"fastfem": __version__, "jax": jax.__version__, "keras": keras_version}


def start_info(plan: AuditPlan, source: Any, boxes: Any) -> dict[str, Any]:
    """What the manifest records before the first part: everything a row depends on
    (`fastfem.audit.store.manifest`), the source, the versions and the devices."""
    config = dict(plan.config)
    info: dict[str, Any] = {
        "store_format": STORE_FORMAT,
        "model": plan.model_desc,
        "model_sha256": model_sha256(plan.model),
        "layer": ",".join(plan.explainer.layer_names),
        "method": plan.method.name,
        "config": config,
        "columns": schema_types(store_schema(plan_columns(plan))),
        "source": plan.source.description,
        "source_location": source_location(source),
        "versions": versions(),
        "devices": [str(d) for d in jax.local_devices()],
        "process_count": jax.process_count(),
        "started": dt.datetime.now(dt.timezone.utc).isoformat(),
    }
    if plan.boxes is not None:
        info["boxes"] = {
            "source": str(boxes) if isinstance(boxes, (str, Path)) else "mapping",
            "images_with_boxes": len(plan.boxes),
            "iou_threshold": IOU_THRESHOLD,
            "normalize": NORMALIZE,
        }
    return info


def end_info(run: AuditRun) -> dict[str, Any]:
    """What the manifest adds at the end of a run: the classes of a prepare pass (FAM's), the
    box ids and labels that matched nothing (with a warning), the time."""
    plan = run.plan
    info: dict[str, Any] = {"finished": dt.datetime.now(dt.timezone.utc).isoformat()}
    if run.classes is not None:
        info["config"] = {"classes": run.classes.tolist()}
    if plan.boxes is not None and plan.source.ids is None and run.summary.processed:
        unmatched = sorted(set(plan.boxes) - run.box_ids_seen)
        info["boxes"] = {"unmatched": unmatched}
        if unmatched:
            warnings.warn(
                f"{len(unmatched)} box ids matched no input of the stream: {unmatched[:10]}",
                stacklevel=3,
            )
    if run.unmatched_labels:
        info["fam_labels_without_prototype"] = sorted(run.unmatched_labels)
        warnings.warn(
            f"labels {sorted(run.unmatched_labels)[:10]} have no prototype among "
            f"{run.classes.tolist()}; those images are explained against their nearest prototype",
            stacklevel=3,
        )
    return info
