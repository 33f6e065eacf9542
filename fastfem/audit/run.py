"""`audit`: explain a whole dataset into a result store, streaming, sharded, resumable.

Four stages: 1. the plan (`fastfem.audit.plan`), all checked before anything is read or
written; 2. record batches (`fastfem.audit.batches`): decoded on host threads, good images
batched, unreadable ones set aside as error rows; 3. ONE jitted step per batch, sharded
(`fastfem.audit.steps`, around the method's own `fastfem.engine.step.Step`): preprocessing, one
forward pass, the map, its statistics, the prediction, finiteness flags, the localisation
metrics, while the next batch is being put on the devices; 4. the part writer
(`fastfem.audit.store.writer.PartWriter`): rows committed part by part (atomic, one schema), so
``resume=True`` continues after a crash with nothing lost or counted twice; then the flags and
the manifest. Before stage 2, process 0 opens the store under its lock
(`fastfem.audit.store.open`). Bad inputs become ``status="error"`` rows; only a failure of the
store itself (`fastfem.audit.store.safe_write.StoreError`) stops the run.

Speed: ``compile_seconds`` is the time spent compiling the audit step (0 when an earlier call
in this process did), ``images_per_second = processed / (seconds - compile_seconds)`` (a
prepare pass such as FAM's prototypes included).

A method's prepare pass (FAM, ``method="fam"``: every image is explained against the
PROTOTYPE, the mean GAP embedding, of its class; `fastfem.explainers.fam.method`) runs over
``references`` (a labelled source) or the audited source (every process reads it whole, so all
processes and a resumed run use the same prototypes). An image whose label has no prototype,
or no label, is explained against its nearest one; a source without labels has one prototype.

Several processes (``distributed=True``): each audits its share of the inputs (whole shards, or
``i % process_count == process_index``: `fastfem.data.records.process_of`) and writes its own
parts; process 0 holds the lock and writes the manifest; they pass the stages together
(`fastfem.audit.distributed`): a process that fails stops the others with its message.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
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
from fastfem.audit.reliance import PER_CLASS, RelianceResult, reliance_settings, reliance_test
from fastfem.audit.reliance.probes import hot_spot_regions
from fastfem.audit.reliance.table import write_reliance
from fastfem.audit.steps import AuditSpec, audit_step_fn
from fastfem.audit.store.info import end_info, plan_columns, start_info
from fastfem.audit.store.lock import StoreLock
from fastfem.audit.store.manifest import check_resume, merge, part_metadata
from fastfem.audit.store.open import open_store, store_folder
from fastfem.audit.store.parts import ResultStore
from fastfem.audit.store.schema import store_schema
from fastfem.audit.store.writer import PartWriter
from fastfem.data.boxes import max_boxes
from fastfem.data.decode import DEFAULT_MAX_PIXELS
from fastfem.data.preprocess import Preprocess
from fastfem.data.records import ReadOptions, default_threads, process_of
from fastfem.engine.progress import progress_bar
from fastfem.engine.step import Step
from fastfem.explainers.method import Classes
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


def row_errors(finite: np.ndarray) -> list[str | None]:
    """The error text of each row from its (B, 2) finiteness flags (None: ok)."""
    return [None if f.all() else NONFINITE_ERRORS[0 if not f[0] else 1] for f in np.asarray(finite)]


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
    #: rows of the reliance sweep (0: no reliance test; None: by the number of classes)
    reliance_sample: int | None = None


def prepare_classes(plan: AuditPlan) -> Classes | None:
    """The method's prepare pass (FAM: class prototypes) over the good images of the references
    (default: the audited source), or None for a method without one."""
    prepare = plan.method.audit.prepare
    if prepare is None:
        return None
    src = plan.references if plan.references is not None else plan.source
    batcher = RecordBatcher(plan.explainer.device_batch())  # the good images; errors set aside

    def run_over(step: Step) -> Iterator[tuple[dict[str, np.ndarray], list[str | None]]]:
        for out in plan.explainer.run(step, batcher.batches(src.read(lambda i, rid: True))):
            yield out, [rec.label for rec in batcher.pending.popleft()]

    return prepare(plan.explainer, sample_shape(plan), run_over, src.description)


def sample_shape(plan: AuditPlan) -> tuple[int, int, int]:
    """(H, W, C) of the model's inputs."""
    return (*plan.image_hw, plan.extractor.input_shape[2])


def audit_step(plan: AuditPlan, classes: Classes | None) -> tuple[Step, AuditSpec]:
    """The audit's `Step` around the method's own step (`AuditHooks.step`, at its own
    resolution); its function is built once per step function and spec (`audit_step_fn`)."""
    hooks = plan.method.audit
    explain = hooks.step(plan.explainer, sample_shape(plan), classes)
    boxes = 0 if plan.boxes is None else max_boxes(plan.boxes)
    spec = AuditSpec(hooks.outputs, plan.image_hw, boxes)
    fn = audit_step_fn(explain.fn, spec, plan.explainer.resize_maps)
    return Step(fn, explain.params, (*explain.inputs, "boxes", "has_box")), spec


def map_shape(step: Step, plan: AuditPlan, batch: dict[str, np.ndarray]) -> tuple[int, ...]:
    """The stored map's shape, from the step's shapes alone (no computation)."""
    spec = {k: jax.ShapeDtypeStruct((1, *v.shape[1:]), v.dtype) for k, v in batch.items()}
    return tuple(jax.eval_shape(step.fn, step.params, spec)["map"].shape[1:])


def example_batch(plan: AuditPlan, spec: AuditSpec, targets: bool) -> dict[str, np.ndarray]:
    """A one-image batch shaped like the run's (for `map_shape`)."""
    batch = {"x": np.zeros((1, *sample_shape(plan)), np.float32)}
    if spec.boxes:
        batch["boxes"] = np.zeros((1, spec.boxes, 4), np.float32)
        batch["has_box"] = np.zeros((1,), bool)
    if targets:
        batch["target"] = np.zeros((1,), np.int32)
    return batch


def run_batches(run: AuditRun, select: Any, todo_count: int | None, progress: bool) -> None:
    """Stages 2-4: record batches through the step into the part writer."""
    plan, summary = run.plan, run.summary
    classes = prepare_classes(plan)
    class_index = None
    if classes is not None:
        run.classes = classes[0]
        class_index = {c: i for i, c in enumerate(run.classes.tolist())}
    step, spec = audit_step(plan, classes)
    batcher = RecordBatcher(plan.explainer.device_batch(), plan.boxes, spec.boxes, class_index)
    labels = (
        {} if run.classes is None else dict.fromkeys(plan.method.audit.class_columns, run.classes)
    )
    writer = PartWriter(
        run.store,
        store_schema(plan_columns(plan)),
        map_shape(step, plan, example_batch(plan, spec, classes is not None)),
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
    fit: str,
    max_pixels: int,
    alpha: str,
    threads: int | None,
    columns: tuple[str | None, str | None, str | None] = (None, None, None),
) -> ReadOptions:
    """The audit's `ReadOptions` (``threads`` None:
    `fastfem.data.records.default_threads`; ``columns``: image column, label column, label
    field)."""
    threads = default_threads() if threads is None else threads
    image_column, label_column, label_field = columns
    return ReadOptions(
        fit,
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
    batch_size: int = 256,
    part_size: int = 2048,
    resume: bool = False,
    fit: str = "error",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    alpha: str = "black",
    distributed: bool | Mapping[str, Any] = False,
    progress: bool = False,
    threads: int | None = None,
    boxes: Any = None,
    references: Any = None,
    preprocess: str | Preprocess = "unit",
    reliance_sample: int | None = None,
    allow_new_source: bool = False,
    image_column: str | None = None,
    label_column: str | None = None,
    label_field: str | None = None,
    **settings: Any,
) -> AuditSummary:
    """Audit ``source`` with ``model`` into the result store ``out``; returns a summary.

    Args:
      source: image folder, .npy/.npz, TFRecord file(s), a Hugging Face dataset (Parquet/Arrow
        files, a save_to_disk folder), WebDataset .tar shards, array, tf.data.Dataset or
        iterable of batches; None -> the bundled sample's test split (as PNG-free arrays).
      model: Keras model / path / FeatureExtractor; None -> the bundled CNN.
      method: a method of `fastfem.explainers.registry` with audit hooks: ``"fem"``
        (default), ``"mlfem"`` (the fused multi-layer map, at the input size), ``"fam"`` (each
        image against its class prototype; see the module docstring), ``"mean"``.
      layer: the explained layer; for multi-layer methods (mlfem) a list (or ``"a,b,c"``),
        default one per resolution stage.
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
      references: FAM only: a labelled source whose class prototypes the images are explained
        against (default: the audited source itself).
      preprocess: the model's input preprocessing, on the device (`fastfem.data.preprocess`):
        ``unit`` (v / 255, default), ``raw``, ``caffe``, ``torch``, ``tf``, or a JAX function.
      threads: host threads decoding image files (default
        `fastfem.data.records.default_threads`: half the CPU cores, 1 to 8, when the model
        runs on the CPU; every core, 1 to 32, when it runs on an accelerator).
      reliance_sample: rows of the reliance test's sweep (`fastfem.audit.reliance`: which
        regions does the model rely on for one class, by occlusion; its flags join the map
        detectors'); None: `fastfem.audit.reliance.SAMPLE`, by default itself None: 80 rows
        per predicted class, 320 to 2048 (`fastfem.audit.reliance.sample_size`); 0 turns the
        test off.
      image_column, label_column, label_field: a Hugging Face dataset's image and label
        columns (`fastfem.data.hf`), a WebDataset's image and label extensions and JSON label
        field (`fastfem.data.webdataset`); None: the source's default.
      settings: the method's settings (`fastfem.explainers.method.Method.settings`; e.g. FEM's
        ``k`` and ``variant``, MLFEM's also ``fusion`` and ``fusion_weights``, FAM's
        ``similarity``); a setting the method does not have is an error.
    """
    out = store_folder(out)
    chosen = check_arguments(method, batch_size, part_size, references, settings)
    if reliance_sample is None:
        reliance_sample = reliance_module.SAMPLE
    if reliance_sample is not None and (
        isinstance(reliance_sample, bool)
        or not isinstance(reliance_sample, int)
        or reliance_sample < 0
    ):
        raise ValueError(f"reliance_sample must be an integer >= 0; got {reliance_sample!r}")
    group = start_processes(distributed)
    with group.checkpoint("plan"):
        plan = plan_audit(
            source,
            model,
            chosen,
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


def describe_reliance(result: RelianceResult) -> str:
    """One line on the reliance test for the summary and the manifest."""
    if result.skipped:
        return f"not run: {result.skipped}"
    found = "; ".join(
        f"class {c.cls} relies on {c.probe.name}"
        + (f", at {c.same_rows_region}" if c.same_rows_region else "")  # a global's place
        + (f", where {c.places} lies" if c.places else "")  # a region placing a global
        + c.beside  # a region flagging only the rows its neighbours leave standing
        + f": {sum(1 for j in result.candidate if j == k)} rows"
        for k, c in enumerate(result.candidates)
    )
    screened = result.tested - result.forwarded
    thin = (
        f"; {result.thin} of {result.classes} classes sampled with fewer than {PER_CLASS} rows "
        "(their shortcuts may go unseen: raise the reliance sample)"
    )
    return (
        f"{len(result.candidates)} candidates from {result.probes} probes on {result.sampled} "
        "sampled rows"
        + (f" (+{result.read_for_leads} read for leads)" if result.read_for_leads else "")
        + f", {len(result.near_misses)} near misses, {result.tested} rows tested"
        + (f", {screened} of them screened out by confidence or dose" if screened else "")
        + (f" ({found})" if found else "")
        + (thin if result.thin else "")
    )


def reliance_result(run: AuditRun, rows: dict[str, np.ndarray], hot: Any) -> RelianceResult:
    """The reliance test on the committed rows (`fastfem.audit.reliance`), or why not."""
    if run.reliance_sample == 0:
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
            write_detection(store.root, with_reliance(detection, result))
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
