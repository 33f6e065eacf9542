"""`audit`: explain a whole dataset into a result store, streaming, sharded, resumable.

Data flow (DESIGN.md §2): the source is decoded on host threads into records (8-bit pixels for
encoded files); good images are batched (every batch padded to one device batch) and go through
ONE jitted step sharded over the local devices (`fastfem.audit.steps`): pixels to float, a
single forward pass for the activations and the model output, the explanation map (FEM, MLFEM
or FAM), its statistics, the prediction and confidence, finiteness flags and, with boxes, the
localisation metrics — while the next batch is already being put on the devices. Only small
results come back. Rows are committed to the store part by part (atomic), so ``resume=True``
continues after a crash with nothing lost and nothing counted twice. Bad inputs become
``status="error"`` rows and never stop the run. The compiled step is cached between calls in
one process (`fastfem.audit.steps.cached_runner`).

FAM (``method="fam"``) audits a similarity model with no classifier assumed: every image is
explained against the PROTOTYPE (mean GAP embedding at the explained layer) of its class, i.e.
why it resembles its class. Prototypes come from ``references`` (a labelled source) or, by
default, from the audited source itself in a first pass (every good image; each process reads
the whole source for it, so all processes and a resumed run use the same prototypes). Classes
are the sources' labels (image folders: the first sub-folder); an image whose label has no
prototype, or that has no label, is explained against its nearest prototype; a source without
labels has one prototype, the mean of all embeddings (then FAM shows what makes an image
typical of the dataset). Columns: ``similarity`` (cosine to the explained prototype),
``prototype`` (its class), ``nearest_prototype``. The rows equal
`fastfem.FAM.explain_episode` with the audited images as support and queries.

Several processes (JAX's multi-controller runtime, ``distributed=True``): each audits the inputs
whose index ``i % process_count == process_index`` and writes its own parts; process 0 writes
the manifest after a barrier.
"""

from __future__ import annotations

import collections
import datetime as dt
import os
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import jax
import numpy as np

from ..converters import FeatureExtractor
from ..kernels.fem import Variant, check_variant
from ..kernels.fusion import check_fusion
from ..kernels.map_stats import MapStats
from ..parallel import replicated
from ..progress import progress_bar
from .boxes import (
    SAMPLE,
    Boxes,
    check_bounds,
    match_boxes,
    max_boxes,
    pack_boxes,
    read_boxes,
    sample_boxes,
    unknown_ids_error,
)
from .flags import flag_rows
from .sources import Record, Source, array_source, open_source, stack_images
from .steps import (
    IOU_THRESHOLD,
    LOCALISATION_COLUMNS,
    METHODS,
    NORMALIZE,
    AuditSpec,
    cached_extractor,
    cached_runner,
)
from .store import ResultStore

STAT_FIELDS = MapStats._fields


@dataclass
class AuditSummary:
    """What one `audit` call did (also printed by the CLI)."""

    out: str
    source: str
    processed: int = 0
    ok: int = 0
    errors: int = 0
    skipped_already_committed: int = 0
    committed_total: int = 0
    seconds: float = 0.0
    images_per_second: float = 0.0
    errors_total: int = 0  # error rows in the whole store (all runs, all processes)
    flagged_total: int = 0  # flagged rows in the whole store
    flagged: list[str] = field(default_factory=list)  # the top 20 flagged ids, highest first
    flag_rule: str = ""
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def row_columns(has_output: bool, method: str, has_boxes: bool) -> list[str]:
    """The Parquet columns of an audit, in order."""
    cols = ["id", "label", "status", "error", *STAT_FIELDS]
    if has_output:
        cols += ["prediction", "confidence"]
    if method == "fam":
        cols += ["similarity", "prototype", "nearest_prototype"]
    if has_boxes:
        cols += list(LOCALISATION_COLUMNS)
    return cols


def _nan_to_none(values: list) -> list:
    return [None if v != v else v for v in values]  # NaN != NaN


class PartBuffer:
    """The rows and maps of the part being filled (columns as lists; maps as blocks)."""

    def __init__(self, columns: Sequence[str], classes: np.ndarray | None):
        self.columns = list(columns)
        self.classes = classes
        self.map_shape: tuple[int, ...] | None = None
        self.reset()

    def reset(self) -> None:
        self.rows: dict[str, list] = {c: [] for c in self.columns}
        self.maps: list[np.ndarray | int] = []  # a block of maps, or a count of NaN maps

    def __len__(self) -> int:
        return len(self.rows["id"])

    def add_errors(self, items: Sequence[tuple[Record, str]]) -> None:
        if not items:
            return
        for c in self.columns:
            self.rows[c].extend([None] * len(items))
        n = len(items)
        self.rows["id"][-n:] = [r.id for r, _ in items]
        self.rows["label"][-n:] = [r.label for r, _ in items]
        self.rows["status"][-n:] = ["error"] * n
        self.rows["error"][-n:] = [e for _, e in items]
        self.maps.append(n)

    def add_batch(self, recs: Sequence[Record], out: Mapping[str, np.ndarray]) -> int:
        """Append one batch's results; non-finite rows become error rows. Returns #ok."""
        n = len(recs)
        ok = np.asarray(out["finite"][:n], bool)
        block = out["map"][:n]
        if self.map_shape is None:
            self.map_shape = tuple(block.shape[1:])
        if not ok.all():
            block = block.copy()
            block[~ok] = np.nan
        self.maps.append(block)
        self.rows["id"].extend(r.id for r in recs)
        self.rows["label"].extend(r.label for r in recs)
        self.rows["status"].extend("ok" if g else "error" for g in ok)
        bad = "non-finite (NaN/inf) activations or map"
        self.rows["error"].extend(None if g else bad for g in ok)
        for c in self.columns[4:]:
            values = out[c][:n]
            if c in ("prototype", "nearest_prototype"):
                values = self.classes[values]
            col = values.tolist()
            if c in LOCALISATION_COLUMNS:
                col = _nan_to_none(col)
            if not ok.all():
                col = [v if g else None for v, g in zip(col, ok, strict=True)]
            self.rows[c].extend(col)
        return int(ok.sum())

    def stacked_maps(self) -> np.ndarray:
        shape = self.map_shape or (1, 1)
        return np.concatenate(
            [
                b if isinstance(b, np.ndarray) else np.full((b, *shape), np.nan, np.float32)
                for b in self.maps
            ]
        )


def source_location(source: Any) -> str | None:
    """Where the report can read the images again: a path, "bundled:test", or None."""
    if source is None:
        return "bundled:test"
    if isinstance(source, (str, Path)):
        return str(Path(source).resolve())
    return None


def init_distributed(kwargs: Mapping[str, Any]) -> None:
    """Start JAX's multi-controller runtime (gloo collectives on CPU) unless already started."""
    if jax.distributed.is_initialized():
        return
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(**kwargs)


def _versions() -> dict[str, str]:
    import keras

    from .. import __version__

    return {"fastfem": __version__, "jax": jax.__version__, "keras": keras.__version__}


def _load_extractor(model: Any, method: str, layer: Any) -> FeatureExtractor:
    """The model as a `FeatureExtractor` with its output (when it is not one already)."""
    if isinstance(model, FeatureExtractor):
        if layer is not None:
            raise ValueError("layer= cannot re-select the layers of a FeatureExtractor")
        return model
    if method == "mlfem":
        layers = mlfem_layers(model, layer)
    else:
        if isinstance(layer, (list, tuple)):
            raise ValueError(f"method {method!r} explains one layer; got layer={layer!r}")
        layers = layer
    return cached_extractor(model, layers, include_output=True)


_DEFAULT_LAYERS: dict[tuple, list[str]] = {}


def mlfem_layers(model: Any, layer: Any) -> list[Any]:
    """MLFEM's layers: ``layer`` (a list, or a comma-separated string), else
    `fastfem.explainers.mlfem.default_layers` (the last conv of each resolution stage)."""
    if isinstance(layer, str) and "," in layer:
        return [name.strip() for name in layer.split(",") if name.strip()]
    if isinstance(layer, (str, int)):
        return [layer]
    if layer is not None:
        return list(layer)
    from ..converters import load_keras_file
    from ..explainers.mlfem import default_layers

    key = None
    if isinstance(model, (str, os.PathLike)):
        st = Path(model).stat()
        key = (str(Path(model).resolve()), st.st_mtime_ns, st.st_size)
        if key in _DEFAULT_LAYERS:
            return _DEFAULT_LAYERS[key]
    keras_model = load_keras_file(model) if key is not None else model
    layers = default_layers(keras_model)
    if key is not None:
        _DEFAULT_LAYERS[key] = layers
    return layers


def resolve_boxes(spec: Any, src: Source, input_shape: Sequence[int | None]) -> Boxes | None:
    """The boxes keyed by input id (checked against the model input); None without boxes.

    Box ids that match no input of a listable source are an error (`fastfem.audit.boxes`).
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


def fam_prototypes(
    extractor: FeatureExtractor, src: Source, batch_size: int, cacheable: bool
) -> tuple[np.ndarray, np.ndarray]:
    """``(classes, prototypes (P, C))``: the mean GAP embedding per label over the good images
    of ``src`` (`fastfem.explainers.fam.class_prototypes`); unlabeled images are left out
    unless no image has a label (then one prototype ``"(all)"`` of every image)."""
    from ..explainers.fam import class_prototypes

    hw = _image_hw(extractor)
    runner = cached_runner("embed", extractor, None, hw, batch_size, cacheable)
    labels: list[str | None] = []
    embeddings: list[np.ndarray] = []

    def batches() -> Iterator[np.ndarray]:
        imgs: list[np.ndarray] = []
        for rec in src.read(lambda i, rid: True):
            if rec.error is not None:
                continue
            imgs.append(rec.image)
            labels.append(rec.label)
            if len(imgs) == runner.batch_size:
                yield stack_images(imgs)
                imgs = []
        if imgs:
            yield stack_images(imgs)

    finite: list[np.ndarray] = []
    for out in runner.run(batches()):
        embeddings.append(out["embedding"])
        finite.append(out["finite"])
    if not embeddings:
        raise ValueError(f"FAM audit: no readable image in {src.description} for the prototypes")
    e = np.concatenate(embeddings)
    keep = np.concatenate(finite)
    lab = np.asarray(["(all)" if v is None else str(v) for v in labels], dtype=object)
    has_label = np.asarray([v is not None for v in labels])
    if has_label.any():
        keep &= has_label
    if not keep.any():
        raise ValueError(f"FAM audit: no finite embedding in {src.description}")
    classes, protos = class_prototypes(e[keep], lab[keep].astype(str))
    return classes, protos


def _image_hw(extractor: FeatureExtractor) -> tuple[int, int]:
    h, w = extractor.input_shape[0], extractor.input_shape[1]
    if h is None or w is None:
        raise ValueError(
            "the audit needs a model with a fixed input size (H, W); this one leaves it free "
            f"({extractor.input_shape})"
        )
    return int(h), int(w)


def audit(
    source: Any = None,
    model: Any = None,
    out: str | Path = "runs/audit",
    method: str = "fem",
    layer: str | int | Sequence[str | int] | None = None,
    k: float = 2.0,
    variant: Variant = "xplique",
    batch_size: int = 256,
    part_size: int = 2048,
    resume: bool = False,
    resize: bool = False,
    distributed: bool | Mapping[str, Any] = False,
    progress: bool = False,
    threads: int = 4,
    boxes: Any = None,
    fusion: str = "mean",
    fusion_weights: Sequence[float] | None = None,
    references: Any = None,
) -> AuditSummary:
    """Audit ``source`` with ``model`` into the result store ``out``; returns a summary.

    Args:
      source: image folder, .npy/.npz, TFRecord file(s), array, tf.data.Dataset or iterable of
        batches; None -> the bundled sample's test split (as PNG-free arrays).
      model: Keras model / path / FeatureExtractor; None -> the bundled CNN.
      method: ``"fem"`` (default), ``"mlfem"`` (the fused multi-layer map, at the input size)
        or ``"fam"`` (each image against its class prototype; see the module docstring).
      layer: the explained layer (fem, fam); for mlfem a list (or ``"a,b,c"``), default one
        per resolution stage.
      resume: continue an interrupted store (skips committed ids); without it an existing
        store is an error.
      resize: convert/resize images that do not fit the model instead of error rows.
      distributed: True -> ``jax.distributed.initialize()`` (cluster auto-detection / JAX's env
        vars); a mapping -> its keyword arguments (coordinator_address, num_processes,
        process_id). Each process audits its slice; CPU collectives use gloo.
      boxes: ground-truth boxes (a .csv/.json path, a mapping, or ``"sample"``; format in
        `fastfem.audit.boxes`): adds the columns ``pointing_game``, ``energy_pointing_game``
        and ``iou`` (null for images without boxes) and the outside-the-box flag rule.
      fusion, fusion_weights: MLFEM's fusion rule (`fastfem.kernels.fusion`).
      references: FAM only: a labelled source whose class prototypes the images are explained
        against (default: the audited source itself).
    """
    if method not in METHODS:
        raise ValueError(f"unknown audit method {method!r}; expected one of {METHODS}")
    check_variant(variant)
    if references is not None and method != "fam":
        raise ValueError("references= is only used by method='fam'")
    if method != "mlfem" and (fusion != "mean" or fusion_weights is not None):
        raise ValueError("fusion= and fusion_weights= are only used by method='mlfem'")
    if distributed:
        init_distributed(distributed if isinstance(distributed, Mapping) else {})
    pid, nproc = jax.process_index(), jax.process_count()

    if model is None:
        from ..sample import MODEL_PATH

        model = str(MODEL_PATH)
    model_desc = model if isinstance(model, (str, Path)) else type(model).__name__
    cacheable = isinstance(model, (str, os.PathLike, FeatureExtractor))
    extractor = _load_extractor(model, method, layer)
    weights = None
    if method == "mlfem":
        w = check_fusion(fusion, fusion_weights, len(extractor.layer_names))
        weights = None if w is None else tuple(float(v) for v in w)
    elif len(extractor.layer_names) != 1:
        raise ValueError(
            f"method {method!r} explains one layer; the extractor returns {extractor.layer_names}"
        )
    image_hw = _image_hw(extractor)
    if source is None:
        from ..sample import CLASS_NAMES, generate

        sample = generate("test")
        labels = [CLASS_NAMES[i] for i in sample.labels]
        src = array_source(
            sample.images, list(sample.ids), labels, extractor.input_shape, "bundled sample"
        )
    else:
        src = open_source(source, extractor.input_shape, resize=resize, threads=threads)
    box_of = resolve_boxes(boxes, src, extractor.input_shape)

    store = ResultStore(out, process_index=pid)
    if store.exists() and not resume:
        raise FileExistsError(
            f"{out} already holds an audit; pass resume=True (--resume) to continue it, or "
            "choose another output folder"
        )
    committed = store.committed_ids()
    if nproc > 1:  # every process has looked at the store before any writes to it
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("fastfem-audit-start")
    summary = AuditSummary(out=str(out), source=src.description)
    todo_count = None
    if src.ids is not None:
        if len(set(src.ids)) != len(src.ids):
            raise ValueError(f"{src.description}: ids are not unique")
        mine = [rid for i, rid in enumerate(src.ids) if i % nproc == pid]
        todo = [rid for rid in mine if rid not in committed]
        todo_count = len(todo)
        summary.skipped_already_committed = len(mine) - len(todo)
        if not todo:
            summary.committed_total = len(committed)
            summary.message = (
                f"nothing to do: all {len(mine)} inputs of this process are already committed"
            )
            _finish(store, summary, pid, nproc, None)
            return summary

    def select(i: int, rid: str) -> bool:
        return i % nproc == pid and rid not in committed

    start = time.perf_counter()
    classes = None
    spec = AuditSpec(
        method=method,
        k=float(k),
        variant=variant,
        fusion=fusion,
        fusion_weights=weights,
        boxes=0 if box_of is None else max_boxes(box_of),
    )
    runner = cached_runner("audit", extractor, spec, image_hw, batch_size, cacheable)
    if method == "fam":
        if references is not None:
            ref_src = open_source(references, extractor.input_shape, resize=resize, threads=threads)
        else:
            ref_src = src
        classes, protos = fam_prototypes(extractor, ref_src, batch_size, cacheable)
        class_index = {c: i for i, c in enumerate(classes.tolist())}
        runner.params = (runner.params[0], jax.device_put(protos, replicated(runner.mesh)))
    else:
        runner.params = (runner.params[0], ())
    records = src.read(select)
    meta: collections.deque[list[Record]] = collections.deque()
    errors: list[tuple[Record, str]] = []
    buf = PartBuffer(row_columns(extractor.has_output, method, box_of is not None), classes)
    seq = store.next_seq()
    seen_box_ids: set[str] = set()
    bar = progress_bar(todo_count, enabled=progress, desc="audit")

    def batch_of(recs: list[Record], imgs: list[np.ndarray]) -> dict[str, np.ndarray]:
        batch = {"x": stack_images(imgs)}
        if box_of is not None:
            found = [box_of.get(r.id) for r in recs]
            seen_box_ids.update(r.id for r, b in zip(recs, found, strict=True) if b is not None)
            batch["boxes"], batch["has_box"] = pack_boxes(found, spec.boxes)
        if method == "fam":
            batch["target"] = np.asarray(
                [class_index.get(r.label, -1) if r.label is not None else -1 for r in recs],
                np.int32,
            )
        return batch

    def batches() -> Iterator[dict[str, np.ndarray]]:
        imgs: list[np.ndarray] = []
        recs: list[Record] = []
        for rec in records:
            if rec.error is not None:
                errors.append((rec, rec.error))
                continue
            imgs.append(rec.image)
            recs.append(rec)
            if len(imgs) == runner.batch_size:
                meta.append(recs)
                yield batch_of(recs, imgs)
                imgs, recs = [], []
        if imgs:
            meta.append(recs)
            yield batch_of(recs, imgs)

    def flush_errors() -> None:
        buf.add_errors(errors)
        summary.errors += len(errors)
        bar.update(len(errors))
        errors.clear()

    def commit() -> None:
        nonlocal seq
        if len(buf):
            store.write_part(seq, buf.rows, buf.stacked_maps())
            seq += 1
            buf.reset()

    unmatched_labels: set[str] = set()
    for out_batch in runner.run(batches(), todo_count):
        recs = meta.popleft()
        good = buf.add_batch(recs, out_batch)
        summary.ok += good
        summary.errors += len(recs) - good
        if method == "fam":
            unmatched_labels.update(
                r.label for r in recs if r.label is not None and r.label not in class_index
            )
        bar.update(len(recs))
        flush_errors()
        if len(buf) >= part_size:
            commit()
    flush_errors()
    commit()
    bar.close()
    summary.seconds = round(time.perf_counter() - start, 3)
    summary.processed = summary.ok + summary.errors
    summary.images_per_second = round(summary.processed / max(summary.seconds, 1e-9), 1)
    config: dict[str, Any] = {
        "variant": variant,
        "k": k,
        "batch_size": runner.batch_size,
        "resize": resize,
    }
    if method == "mlfem":
        config.update(fusion=fusion, fusion_weights=weights)
    if method == "fam":
        config.update(pooling="gap", similarity="cosine", weights="max", classes=classes.tolist())
        config["prototypes_from"] = "references" if references is not None else "source"
    info: dict[str, Any] = {
        "model": str(model_desc),
        "layer": ",".join(extractor.layer_names),
        "method": method,
        "config": config,
        "source": src.description,
        "source_location": source_location(source),
        "map_shape": list(buf.map_shape) if buf.map_shape else None,
        "versions": _versions(),
        "devices": [str(d) for d in jax.local_devices()],
        "process_count": nproc,
        "finished": dt.datetime.now(dt.timezone.utc).isoformat(),
    }
    if box_of is not None:
        info["boxes"] = {
            "source": str(boxes) if isinstance(boxes, (str, Path)) else "mapping",
            "images_with_boxes": len(box_of),
            "iou_threshold": IOU_THRESHOLD,
            "normalize": NORMALIZE,
        }
        if src.ids is None:
            unmatched = sorted(set(box_of) - seen_box_ids)
            info["boxes"]["unmatched"] = unmatched
            if unmatched:
                warnings.warn(
                    f"{len(unmatched)} box ids matched no input of the stream: {unmatched[:10]}",
                    stacklevel=2,
                )
    if unmatched_labels:
        info["fam_labels_without_prototype"] = sorted(unmatched_labels)
        warnings.warn(
            f"labels {sorted(unmatched_labels)[:10]} have no prototype among {classes.tolist()}; "
            "those images are explained against their nearest prototype",
            stacklevel=2,
        )
    _finish(store, summary, pid, nproc, info)
    return summary


def _finish(
    store: ResultStore, summary: AuditSummary, pid: int, nproc: int, info: dict | None
) -> None:
    """Barrier across processes, then process 0 writes the manifest; fill the flags."""
    if nproc > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("fastfem-audit-parts-committed")
    rows = store.read_rows()
    summary.committed_total = len(rows.get("id", []))
    if rows:
        flags = flag_rows(rows)
        summary.errors_total = int(np.sum(rows["status"] == "error"))
        summary.flagged_total = int(np.sum(flags.flagged))
        summary.flagged = flags.top_ids(20)
        summary.flag_rule = flags.rule
    if pid == 0:
        body = dict(store.manifest())
        if info is not None:
            body.update(info)
        body["last_run"] = {
            k: v for k, v in summary.to_dict().items() if k not in ("flagged", "out")
        }
        body["counts"] = {
            "rows": summary.committed_total,
            "errors": summary.errors_total,
            "flagged": summary.flagged_total,
        }
        store.write_manifest(body)
