"""`audit`: explain a whole dataset into a result store, streaming, sharded, resumable.

Read top to bottom, an audit is four stages:

1. plan (`fastfem.audit.plan`): the model, the method's explainer, the source, the boxes and the
   settings, all checked before anything is read or written;
2. record batches (`fastfem.audit.batches`): the source is decoded on host threads into records
   (8-bit pixels for encoded files); good images are batched (every batch padded to one device
   batch), unreadable ones set aside as error rows;
3. ONE jitted step per batch, sharded over the local devices (`fastfem.audit.steps`, around the
   explainer's own `fastfem.engine.step.Step`): the model's preprocessing, a single forward pass
   for the
   activations and the model output, the explanation map (FEM, MLFEM or FAM), its statistics,
   the prediction and confidence, finiteness flags and, with boxes, the localisation metrics —
   while the next batch is already being put on the devices. Only small results come back;
4. the part writer (`fastfem.audit.store.parts.PartWriter`): rows committed to the store part by
part
   (atomic, one fixed Parquet schema), so ``resume=True`` continues after a crash with nothing
   lost and nothing counted twice; then the flags and the manifest.

Before stage 2 the store is opened by process 0 under its lock (`fastfem.audit.store.lock`): an
existing store needs ``resume=True``, whose configuration must equal the store's
(`fastfem.audit.store.manifest`); temporary files of a killed run are removed, parts whose maps are
missing or short set aside to be recomputed; then the
manifest is written (merged) with the full configuration, before the first part.

Bad inputs become ``status="error"`` rows and never stop the run; only a failure of the store
itself (`fastfem.audit.store.parts.StoreError`: disk full, read-only) does, after what is committed.

Speed: ``seconds`` is the run's wall time; ``compile_seconds`` the time the runner spent tracing
and compiling the audit step (its first call per batch size; 0 when an earlier call in this
process compiled it), so ``images_per_second = processed / (seconds - compile_seconds)`` is the
rate after compilation (FAM: the prototype pass included). No extra batch is computed for it.

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

Several processes (JAX's multi-controller runtime, ``distributed=True``): each audits its share
of the inputs — whole shards when the source has at least as many shards (folders, TFRecord
files) as there are processes, else the inputs whose index ``i % process_count ==
process_index`` (`fastfem.data.sources.process_of`) — and writes its own parts; process 0 holds
the store's lock and writes the manifest. They start through a handshake that reports a missing
peer or a duplicated process id within a timeout, and pass the audit's stages together
(`fastfem.audit.distributed`): a process that fails stops the others with its message.
"""

from __future__ import annotations

import datetime as dt
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import jax
import numpy as np

from fastfem.audit import reliance as reliance_module
from fastfem.audit.batches import RecordBatcher
from fastfem.audit.detectors import (
    detect,
    detection_rule,
    detector_settings,
    with_reliance,
    write_detection,
)
from fastfem.audit.detectors.box import box_scores
from fastfem.audit.detectors.tables import FLAGS_FILE, read_table
from fastfem.audit.distributed import ProcessGroup, start_processes
from fastfem.audit.plan import AuditPlan, check_arguments, plan_audit
from fastfem.audit.reliance import (
    ROW_TAU,
    SAMPLE,
    RelianceResult,
    hot_spot_regions,
    reliance_settings,
    reliance_test,
)
from fastfem.audit.reliance.table import write_reliance
from fastfem.audit.steps import (
    FAM_COLUMNS,
    IOU_THRESHOLD,
    LOCALISATION_COLUMNS,
    NORMALIZE,
    AuditSpec,
    make_audit_step,
)
from fastfem.audit.store.lock import StoreLock, describe
from fastfem.audit.store.manifest import (
    STORE_FORMAT,
    check_parts,
    check_resume,
    merge,
    model_sha256,
    part_metadata,
)
from fastfem.audit.store.parts import PartWriter, ResultStore, schema_types, store_schema
from fastfem.audit.store.safe_write import output_path
from fastfem.data.boxes import max_boxes
from fastfem.data.decode import DEFAULT_MAX_PIXELS
from fastfem.data.preprocess import Preprocess
from fastfem.data.sources import ReadOptions, default_threads, process_of
from fastfem.engine.progress import progress_bar
from fastfem.engine.step import Step
from fastfem.kernels.fem import Variant
from fastfem.kernels.map_stats import MapStats

STAT_FIELDS = MapStats._fields
#: The error text of a row whose pixels / activations are not finite (step flags, in order).
NONFINITE_ERRORS = ("non-finite (NaN/inf) pixels", "non-finite (NaN/inf) activations")


@dataclass
class AuditSummary:
    """What one `audit` call did (also printed by the CLI).

    ``seconds``: the run's wall time (compilation included); ``compile_seconds``: compiling
    the audit step; ``images_per_second``: ``processed / (seconds - compile_seconds)``, the
    rate after compilation (see the module docstring).
    """

    out: str
    source: str
    processed: int = 0
    ok: int = 0
    errors: int = 0
    skipped_already_committed: int = 0
    committed_total: int = 0
    seconds: float = 0.0
    compile_seconds: float = 0.0
    images_per_second: float = 0.0
    errors_total: int = 0  # error rows in the whole store (all runs, all processes)
    flagged_total: int = 0  # flagged rows in the whole store
    flagged: list[str] = field(default_factory=list)  # the top 20 flagged ids, highest first
    flag_rule: str = ""
    reliance: str = ""  # the reliance test's candidates (or why it did not run)
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def row_columns(has_output: bool, method: str, has_boxes: bool) -> list[str]:
    """The Parquet columns of an audit, in order."""
    cols = ["id", "id_raw", "label", "status", "error", *STAT_FIELDS]
    if has_output:
        cols += ["prediction", "confidence"]
    if method == "fam":
        cols += list(FAM_COLUMNS)
    if has_boxes:
        cols += list(LOCALISATION_COLUMNS)
    return cols


def plan_columns(plan: AuditPlan) -> list[str]:
    """The store's columns for ``plan`` (`row_columns`)."""
    return row_columns(plan.extractor.has_output, plan.method, plan.boxes is not None)


def source_location(source: Any) -> str | None:
    """Where the report can read the images again: a path, "bundled:test", or None."""
    if source is None:
        return "bundled:test"
    if isinstance(source, (str, Path)):
        return str(Path(source).resolve())
    return None


def _versions() -> dict[str, str | None]:
    """fastfem's, JAX's and Keras's versions (Keras's read from its installed metadata, not by
    importing it: a Flax or JAX model audits without Keras; None when it is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    from fastfem import __version__

    try:
        keras_version: str | None = version("keras")
    except PackageNotFoundError:
        keras_version = None
    return {"fastfem": __version__, "jax": jax.__version__, "keras": keras_version}


def row_errors(finite: np.ndarray) -> list[str | None]:
    """The error text of each row from its (B, 2) finiteness flags (None: ok)."""
    return [None if f.all() else NONFINITE_ERRORS[0 if not f[0] else 1] for f in np.asarray(finite)]


# ------------------------------------------------------------------------------ FAM prototypes


def fam_prototypes(plan: AuditPlan) -> tuple[np.ndarray, np.ndarray]:
    """``(classes, prototypes (P, C))``: the mean GAP embedding per label over the good images
    of the references (default: the audited source), `fastfem.explainers.fam.class_prototypes`;
    unlabeled images are left out unless no image has a label (then one prototype ``"(all)"``
    of every image)."""
    from fastfem.explainers.fam import class_prototypes

    src = plan.references if plan.references is not None else plan.source
    fam = plan.explainer
    step = fam.embed_step((*plan.image_hw, plan.extractor.input_shape[2]))
    batcher = RecordBatcher(fam.device_batch())  # the good images; error records set aside
    labels: list[str | None] = []
    outs = []
    for out in fam.run(step, batcher.batches(src.read(lambda i, rid: True))):
        labels.extend(rec.label for rec in batcher.pending.popleft())
        outs.append(out)
    if not outs:
        raise ValueError(f"FAM audit: no readable image in {src.description} for the prototypes")
    e = np.concatenate([o["embedding"] for o in outs])
    keep = np.concatenate([o["finite"].all(axis=1) for o in outs])
    lab = np.asarray(["(all)" if v is None else str(v) for v in labels], dtype=object)
    has_label = np.asarray([v is not None for v in labels])
    if has_label.any():
        keep &= has_label
    if not keep.any():
        raise ValueError(f"FAM audit: no finite embedding in {src.description}")
    return class_prototypes(e[keep], lab[keep].astype(str))


# --------------------------------------------------------------------------------- the run


@dataclass
class AuditRun:
    """The state of one audit call between its stages."""

    plan: AuditPlan
    store: ResultStore
    summary: AuditSummary
    classes: np.ndarray | None = None
    part_size: int = 2048
    unmatched_labels: set[str] = field(default_factory=set)
    box_ids_seen: set[str] = field(default_factory=set)
    metadata: dict[bytes, bytes] = field(default_factory=dict)  # every part's (configuration)
    check_peers: Callable[[], None] = lambda: None  # raises when another process has failed
    reliance_sample: int = SAMPLE  # rows of the reliance sweep (0: no reliance test)


def audit_step(plan: AuditPlan, classes_protos: tuple | None) -> tuple[Step, AuditSpec]:
    """The audit's `Step` around the explainer's own step (at its own resolution), and the
    runner that runs it (compiled once per step function, kept by the explainer)."""
    explainer = plan.explainer
    shape = (*plan.image_hw, plan.extractor.input_shape[2])
    if plan.method == "fam":
        explain = explainer.episode_step(shape, classes_protos[1], resize=False)
    else:
        explain = explainer.step(shape, resize=False)
    spec = AuditSpec(plan.method, plan.image_hw, 0 if plan.boxes is None else max_boxes(plan.boxes))
    fn = explainer.cached_fn(
        ("audit", explain.fn, spec),
        lambda: make_audit_step(explain.fn, spec, explainer.resize_maps),
    )
    return Step(fn, explain.params, (*explain.inputs, "boxes", "has_box")), spec


def map_shape(step: Step, plan: AuditPlan, batch: dict[str, np.ndarray]) -> tuple[int, ...]:
    """The stored map's shape, from the step's shapes alone (no computation)."""
    spec = {k: jax.ShapeDtypeStruct((1, *v.shape[1:]), v.dtype) for k, v in batch.items()}
    return tuple(jax.eval_shape(step.fn, step.params, spec)["map"].shape[1:])


def _example_batch(plan: AuditPlan, spec: AuditSpec) -> dict[str, np.ndarray]:
    h, w = plan.image_hw
    batch = {"x": np.zeros((1, h, w, plan.extractor.input_shape[2]), np.float32)}
    if spec.boxes:
        batch["boxes"] = np.zeros((1, spec.boxes, 4), np.float32)
        batch["has_box"] = np.zeros((1,), bool)
    if plan.method == "fam":
        batch["target"] = np.zeros((1,), np.int32)
    return batch


def run_batches(run: AuditRun, select: Any, todo_count: int | None, progress: bool) -> None:
    """Stages 2-4: record batches through the step into the part writer."""
    plan, summary = run.plan, run.summary
    protos = None
    class_index = None
    if plan.method == "fam":
        protos = fam_prototypes(plan)
        run.classes = protos[0]
        class_index = {c: i for i, c in enumerate(run.classes.tolist())}
    step, spec = audit_step(plan, protos)
    batcher = RecordBatcher(plan.explainer.device_batch(), plan.boxes, spec.boxes, class_index)
    labels = (
        {} if run.classes is None else {"prototype": run.classes, "nearest_prototype": run.classes}
    )
    writer = PartWriter(
        run.store,
        store_schema(plan_columns(plan)),
        map_shape(step, plan, _example_batch(plan, spec)),
        run.part_size,
        labels,
        run.metadata,
    )
    bar = progress_bar(todo_count, enabled=progress, desc="audit")

    def flush_errors() -> None:
        errors = batcher.take_errors()
        writer.add_errors(errors)
        summary.errors += len(errors)
        bar.update(len(errors))

    runner = plan.explainer.runner(step)
    compiled_before = runner.compile_seconds
    batches = batcher.batches(plan.source.read(select))
    for out in plan.explainer.run(step, batches, todo_count):
        recs = batcher.pending.popleft()
        good = writer.add_batch(recs, out, row_errors(out["finite"]))
        summary.ok += good
        summary.errors += len(recs) - good
        if class_index is not None:
            run.unmatched_labels.update(
                r.label for r in recs if r.label is not None and r.label not in class_index
            )
        bar.update(len(recs))
        flush_errors()
        run.check_peers()
    flush_errors()
    writer.commit()
    bar.close()
    run.box_ids_seen = batcher.box_ids_seen
    summary.compile_seconds = runner.compile_seconds - compiled_before


def read_options(
    fit: str | None,
    max_pixels: int,
    alpha: str,
    threads: int | None,
    columns: tuple[str | None, str | None, str | None] = (None, None, None),
) -> ReadOptions:
    """The audit's `ReadOptions` (``fit`` None: ``"error"``; ``threads`` None:
    `fastfem.data.sources.default_threads`; ``columns``: image column, label column, label
    field)."""
    threads = default_threads() if threads is None else threads
    image_column, label_column, label_field = columns
    return ReadOptions(
        fit or "error",
        max_pixels,
        alpha,
        threads,
        image_column=image_column,
        label_column=label_column,
        label_field=label_field,
    )


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
    fit: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    alpha: str = "black",
    distributed: bool | Mapping[str, Any] = False,
    progress: bool = False,
    threads: int | None = None,
    boxes: Any = None,
    fusion: str = "mean",
    fusion_weights: Sequence[float] | None = None,
    references: Any = None,
    preprocess: str | Preprocess = "unit",
    reliance_sample: int | None = None,
    allow_new_source: bool = False,
    image_column: str | None = None,
    label_column: str | None = None,
    label_field: str | None = None,
) -> AuditSummary:
    """Audit ``source`` with ``model`` into the result store ``out``; returns a summary.

    Args:
      source: image folder, .npy/.npz, TFRecord file(s), a Hugging Face dataset (Parquet/Arrow
        files, a save_to_disk folder), WebDataset .tar shards, array, tf.data.Dataset or
        iterable of batches; None -> the bundled sample's test split (as PNG-free arrays).
      model: Keras model / path / FeatureExtractor; None -> the bundled CNN.
      method: ``"fem"`` (default), ``"mlfem"`` (the fused multi-layer map, at the input size)
        or ``"fam"`` (each image against its class prototype; see the module docstring).
      layer: the explained layer (fem, fam); for mlfem a list (or ``"a,b,c"``), default one
        per resolution stage.
      k, variant: FEM's k (finite, >= 0) and variant (fem, mlfem).
      batch_size: images per device step; part_size: rows per committed part (positive ints).
      resume: continue an interrupted store (skips committed ids); without it an existing
        store is an error. The store's configuration is checked against the one each part
        records (`fastfem.audit.store.manifest.check_parts`), and the source must hold every
        committed
        id (the same source, or a grown one) unless ``allow_new_source``.
      allow_new_source: with ``resume``, add the inputs of a source that lacks committed ids
        (another source) to the store; the manifest lists every source (``sources``).
      fit: what happens to an image whose size or colour channels are not the model's
        (`fastfem.data.fit`): ``"error"`` (default: an error row naming its size and mode),
        ``"squash"`` (resize), ``"crop"`` (shorter side to size, central crop) or ``"pad"``
        (longer side to size, centred on zeros). Maps and boxes are in model-input pixels.
      max_pixels: the pixel budget: an image with more pixels to decode is an error row
        (`fastfem.data.decode`; JPEGs count after reduced-size decoding).
      alpha: the background transparent images are composited on, ``"black"`` or ``"white"``.
      distributed: True -> ``jax.distributed.initialize()`` (cluster auto-detection / JAX's env
        vars); a mapping -> its keyword arguments (coordinator_address, num_processes,
        process_id; ``initialization_timeout``: seconds within which a missing peer or a
        duplicated id is reported, default 60). Each process audits its slice; CPU collectives
        use gloo (`fastfem.audit.distributed`).
      boxes: ground-truth boxes (a .csv/.json path, a mapping, or ``"sample"``; format in
        `fastfem.data.boxes`): adds the columns ``pointing_game``, ``energy_pointing_game``
        and ``iou`` (null for images without boxes) and the outside-the-box flag rule.
      fusion, fusion_weights: MLFEM's fusion rule (`fastfem.kernels.fusion`).
      references: FAM only: a labelled source whose class prototypes the images are explained
        against (default: the audited source itself).
      preprocess: the model's input preprocessing, on the device (`fastfem.data.preprocess`):
        ``unit`` (v / 255, default), ``raw``, ``caffe``, ``torch``, ``tf``, or a JAX function.
      threads: host threads decoding image files (default
        `fastfem.data.sources.default_threads`: half the CPU cores, 1 to 8, when the model
        runs on the CPU; every core, 1 to 32, when it runs on an accelerator).
      reliance_sample: rows of the reliance test's sweep (`fastfem.audit.reliance`: which
        regions does the model rely on for one class, by occlusion; its flags join the map
        detectors'); None: `fastfem.audit.reliance.SAMPLE` (320); 0 turns the test off.
      image_column, label_column, label_field: a Hugging Face dataset's image and label
        columns (`fastfem.data.hf`), a WebDataset's image and label extensions and JSON label
        field (`fastfem.data.webdataset`); None: the source's default.
    """
    out = store_folder(out)
    k = check_arguments(
        method, k, variant, batch_size, part_size, references, fusion, fusion_weights
    )
    if reliance_sample is None:
        reliance_sample = reliance_module.SAMPLE
    if (
        isinstance(reliance_sample, bool)
        or not isinstance(reliance_sample, int)
        or reliance_sample < 0
    ):
        raise ValueError(f"reliance_sample must be an integer >= 0; got {reliance_sample!r}")
    group = start_processes(distributed)
    weights = None if fusion_weights is None else [float(v) for v in fusion_weights]
    settings = {"variant": variant, "k": k, "fusion": fusion, "fusion_weights": weights}
    with group.checkpoint("plan"):
        plan = plan_audit(
            source,
            model,
            method,
            layer,
            settings,
            preprocess,
            batch_size,
            read_options(
                fit, max_pixels, alpha, threads, (image_column, label_column, label_field)
            ),
            boxes,
            references,
        )
        info = start_info(plan, source, boxes)
    store = ResultStore(out, process_index=group.index)
    lock = StoreLock(out)
    try:
        with group.checkpoint("open"):
            if group.index == 0:
                open_store(store, lock, info, resume, plan.source.ids, allow_new_source)
        with group.checkpoint("config"):
            if group.index != 0:  # every process runs the configuration the store records
                check_resume(store.manifest(), info, str(out), f"process {group.index}")
        with group.checkpoint("run"):
            run = AuditRun(plan, store, AuditSummary(str(out), plan.source.description))
            run.part_size = part_size
            run.reliance_sample = reliance_sample
            run.metadata = part_metadata(info)
            run.check_peers = lambda: group.raise_if_a_peer_failed("run")
            audit_my_slice(run, group, progress)
        finish(run, group, end_info(run))
    finally:
        lock.release()
    return run.summary


def audit_my_slice(run: AuditRun, group: ProcessGroup, progress: bool) -> None:
    """Stages 2-4 over this process's inputs not yet committed (a message when none is left)."""
    pid, nproc = group.index, group.count
    committed = run.store.committed_ids()
    src = run.plan.source
    owner = process_of(src, nproc)
    todo_count = None
    if src.ids is not None:  # unique: every listing source checks (`sources.check_unique`)
        mine = [rid for i, rid in enumerate(src.ids) if owner(i) == pid]
        todo_count = sum(rid not in committed for rid in mine)
        run.summary.skipped_already_committed = len(mine) - todo_count
        if not todo_count:
            run.summary.message = (
                f"nothing to do: all {len(mine)} inputs of this process are already committed"
            )
            return

    def select(i: int, rid: str) -> bool:
        return owner(i) == pid and rid not in committed

    start = time.perf_counter()
    run_batches(run, select, todo_count, progress)
    summary = run.summary
    summary.seconds = round(time.perf_counter() - start, 3)
    summary.processed = summary.ok + summary.errors
    steady = summary.seconds - summary.compile_seconds
    summary.compile_seconds = round(summary.compile_seconds, 3)
    summary.images_per_second = round(summary.processed / max(steady, 1e-9), 1)


def store_folder(out: str | os.PathLike) -> Path:
    """The store folder ``out`` (`fastfem.audit.store.safe_write.output_path`: not empty, no NUL or
    line break); a ValueError when it names an existing file."""
    path = output_path(out, "--out")
    if path.exists() and not path.is_dir():
        raise ValueError(f"--out {path} is a file, not a folder")
    return path


def check_source(
    committed: set[str], ids: list[str] | None, old: Mapping[str, Any], info: Mapping[str, Any]
) -> None:
    """A resume's source must be the store's (or a grown one): a ValueError when it lacks a
    committed id (an unlisted stream: when the manifest names another source)."""
    if not committed:
        return
    if ids is None:
        if old.get("source") not in (None, info["source"]):
            raise ValueError(
                f"--resume: the store was audited from {old['source']}, not {info['source']}; "
                "pass --allow-new-source (allow_new_source=True) to add it, or audit into a new "
                "--out"
            )
        return
    missing = committed.difference(ids)
    if missing:
        raise ValueError(
            f"--resume: {len(missing)} of the {len(committed)} committed ids are not in "
            f"{info['source']} (e.g. {sorted(missing)[:3]}): it is another source; pass "
            "--allow-new-source (allow_new_source=True) to add its inputs to this store, or "
            "audit into a new --out"
        )


def check_store(
    store: ResultStore, info: dict[str, Any], ids: list[str] | None, allow_new_source: bool
) -> tuple[dict[str, Any], dict[str, str], dict[str, Any]]:
    """Everything ``--resume`` checks before it writes: the manifest (readable), the
    configuration recorded in the readable parts and in the manifest (`check_parts`,
    `check_resume`), ids committed once (`ResultStore.check_unique_ids`), the source
    (`check_source`). Returns ``(stored manifest — rebuilt from the parts when lost —, broken
    parts, manifest update)``."""
    where = str(store.root)
    old = store.manifest()
    broken = store.broken_parts()
    readable = [p for p in store.part_files() if p.name not in broken]
    record = check_parts(store.part_records(readable), info, old, where)
    update: dict[str, Any] = {}
    if old:
        check_resume(old, info, where)
    elif record:
        old, update["manifest_rebuilt_from_parts"] = record, True
        warnings.warn(f"{where}: manifest.json was lost; rebuilt from the parts", stacklevel=4)
    store.check_unique_ids(readable)
    if not allow_new_source:
        check_source(store.committed_ids_of(readable), ids, old, info)
    elif old.get("source") not in (None, info["source"]):
        update["sources"] = [*(old.get("sources") or [old["source"]]), info["source"]]
    return old, broken, update


def open_store(
    store: ResultStore,
    lock: StoreLock,
    info: dict[str, Any],
    resume: bool,
    ids: list[str] | None = None,
    allow_new_source: bool = False,
) -> None:
    """Process 0, before any part is written: take the store's lock, check the store against
    this run (an existing store needs ``resume``; `check_store`), repair what a killed run left
    (temporary files, parts whose maps are missing or short or whose Parquet file is
    unreadable), then write the manifest with this run's
    configuration (merged)."""
    stale = lock.acquire()
    if stale:
        warnings.warn(
            f"{store.root}: took over a stale lock ({describe(stale)}: no longer running)",
            stacklevel=3,
        )
    if store.exists() and not resume:
        raise FileExistsError(
            f"{store.root} already holds an audit; pass resume=True (--resume) to continue it, "
            "or choose another output folder"
        )
    old, broken, update = check_store(store, info, ids, allow_new_source)
    store.remove_temporaries()
    if broken:
        store.set_aside_broken_parts(broken)
        update["set_aside"] = broken
        warnings.warn(
            f"{store.root}: {len(broken)} committed parts cannot be read back whole and are "
            f"computed again (moved to {store.root / 'invalid'}): {broken}",
            stacklevel=3,
        )
    store.write_manifest(merge(old, {**info, **update}))


def start_info(plan: AuditPlan, source: Any, boxes: Any) -> dict[str, Any]:
    """What the manifest records before the first part: everything a row depends on
    (`fastfem.audit.store.manifest`), the source, the versions and the devices."""
    config = dict(plan.config)
    if plan.method == "fam":
        config.update(pooling="gap", similarity="cosine", weights="max")
        config["prototypes_from"] = "references" if plan.references is not None else "source"
    info: dict[str, Any] = {
        "store_format": STORE_FORMAT,
        "model": plan.model_desc,
        "model_sha256": model_sha256(plan.model),
        "layer": ",".join(plan.explainer.layer_names),
        "method": plan.method,
        "config": config,
        "columns": schema_types(store_schema(plan_columns(plan))),
        "source": plan.source.description,
        "source_location": source_location(source),
        "versions": _versions(),
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
    """What the manifest adds at the end of a run: FAM's classes, the box ids and labels that
    matched nothing (with a warning), the time."""
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


def describe_reliance(result: RelianceResult) -> str:
    """One line on the reliance test for the summary and the manifest."""
    if result.skipped:
        return f"not run: {result.skipped}"
    found = "; ".join(
        f"class {c.cls} relies on {c.probe.name}: {sum(1 for j in result.candidate if j == k)} rows"
        for k, c in enumerate(result.candidates)
    )
    return (
        f"{len(result.candidates)} candidates from {result.probes} probes on {result.sampled} "
        f"sampled rows, {result.tested} rows tested" + (f" ({found})" if found else "")
    )


def reliance_result(run: AuditRun, rows: dict[str, np.ndarray], hot: Any) -> RelianceResult:
    """The reliance test on the committed rows (`fastfem.audit.reliance`), or why not."""
    if run.reliance_sample <= 0:
        return RelianceResult(skipped="disabled (reliance_sample=0)")
    h, w = run.plan.image_hw
    return reliance_test(run.plan, rows, hot_spot_regions(hot, h, w), run.reliance_sample)


def flag_store(run: AuditRun, group: ProcessGroup, rows: dict[str, np.ndarray]) -> None:
    """The detectors and the reliance test over the whole store, run once: process 0 writes
    ``flags.parquet`` / ``clusters.parquet`` / ``reliance.parquet``; then every process's
    summary reads the flags."""
    store, summary = run.store, run.summary
    with group.checkpoint("flags"):
        if group.index == 0:
            detection = detect(store, rows)
            result = reliance_result(run, rows, detection.hot)
            write_reliance(store.root, result)
            summary.reliance = describe_reliance(result)
            write_detection(store.root, with_reliance(detection, result, ROW_TAU))
    flagged = read_table(store.root, FLAGS_FILE)["id"]
    summary.flagged_total = len(flagged)
    summary.flagged = flagged[:20]
    summary.flag_rule = detection_rule(box_scores(rows) is not None)


def finish(run: AuditRun, group: ProcessGroup, info: dict[str, Any]) -> None:
    """Every process has committed its parts: fill the whole store's totals and flags; process
    0 merges the run's results into the manifest."""
    store, summary = run.store, run.summary
    rows = store.read_rows()
    summary.committed_total = len(rows.get("id", []))
    if rows:
        summary.errors_total = int(np.sum(rows["status"] == "error"))
        flag_store(run, group, rows)
    if group.index == 0:
        body = merge(store.manifest(), info)
        maps = store.read_map_shape()
        if maps is not None:
            body["map_shape"] = list(maps)
        body["last_run"] = {
            k: v for k, v in summary.to_dict().items() if k not in ("flagged", "out")
        }
        body["counts"] = {
            "rows": summary.committed_total,
            "errors": summary.errors_total,
            "flagged": summary.flagged_total,
        }
        body["detectors"] = {**detector_settings(), **reliance_settings(run.reliance_sample)}
        if group.index == 0 and summary.reliance:
            body["reliance"] = summary.reliance
        store.write_manifest(body)
