"""`audit`: explain a whole dataset into a result store, streaming, sharded, resumable.

Data flow (DESIGN.md §2): the source is decoded on host threads into records; good images are
batched (every batch padded to one device batch) and go through ONE jitted step sharded over the
local devices — activations and model output from a single forward pass, the FEM map at feature
resolution, its statistics, the prediction and confidence, finiteness flags — while the next
batch is already being put on the devices. Only small results come back. Rows are committed to
the store part by part (atomic), so ``resume=True`` continues after a crash with nothing lost
and nothing counted twice. Bad inputs become ``status="error"`` rows and never stop the run.

Several processes (JAX's multi-controller runtime, ``distributed=True``): each audits the inputs
whose index ``i % process_count == process_index`` and writes its own parts; process 0 writes
the manifest after a barrier.
"""

from __future__ import annotations

import collections
import datetime as dt
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..batch_runner import BatchRunner
from ..converters import FeatureExtractor, load
from ..kernels.fem import Variant, check_variant, fem_map
from ..kernels.map_stats import MapStats, map_stats
from ..progress import progress_bar
from .flags import flag_rows
from .sources import Record, array_source, open_source
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
    flagged: list[str] = field(default_factory=list)
    flag_rule: str = ""
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def make_audit_step(extractor: FeatureExtractor, k: float, variant: Variant):
    """``(params, x) -> dict`` of per-image results: map (h, w), stats, prediction, flags."""

    def step(params: Any, x: jax.Array) -> dict[str, jax.Array]:
        feats = extractor.apply(params, x)
        acts = feats.activations[0]
        maps = fem_map(acts, k=k, variant=variant)
        stats = jax.vmap(map_stats)(maps)
        out: dict[str, jax.Array] = {"map": maps, **stats._asdict()}
        out["finite"] = jnp.all(jnp.isfinite(acts), axis=(1, 2, 3)) & jnp.all(
            jnp.isfinite(maps), axis=(1, 2)
        )
        if feats.output is not None:
            logits = feats.output.reshape(feats.output.shape[0], -1).astype(jnp.float32)
            is_prob = jnp.all((logits >= 0) & (logits <= 1), axis=1) & (
                jnp.abs(jnp.sum(logits, axis=1) - 1) < 1e-3
            )
            probs = jnp.where(is_prob[:, None], logits, jax.nn.softmax(logits, axis=1))
            out["prediction"] = jnp.argmax(probs, axis=1).astype(jnp.int32)
            out["confidence"] = jnp.max(probs, axis=1)
        return out

    return step


def _row_template(has_output: bool) -> dict[str, list]:
    cols = ["id", "label", "status", "error", *STAT_FIELDS]
    if has_output:
        cols += ["prediction", "confidence"]
    return {c: [] for c in cols}


def _append_error(rows: dict[str, list], rec: Record, error: str) -> None:
    for c in rows:
        rows[c].append(None)
    rows["id"][-1], rows["label"][-1] = rec.id, rec.label
    rows["status"][-1], rows["error"][-1] = "error", error


def _append_ok(rows: dict[str, list], rec: Record, out: Mapping[str, np.ndarray], i: int) -> None:
    rows["id"].append(rec.id)
    rows["label"].append(rec.label)
    rows["status"].append("ok")
    rows["error"].append(None)
    for c in rows:
        if c in out and c != "map":
            rows[c].append(out[c][i].item())


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


def audit(
    source: Any = None,
    model: Any = None,
    out: str | Path = "runs/audit",
    method: str = "fem",
    layer: str | int | None = None,
    k: float = 2.0,
    variant: Variant = "xplique",
    batch_size: int = 256,
    part_size: int = 2048,
    resume: bool = False,
    resize: bool = False,
    distributed: bool | Mapping[str, Any] = False,
    progress: bool = False,
    threads: int = 4,
) -> AuditSummary:
    """Audit ``source`` with ``model`` into the result store ``out``; returns a summary.

    Args:
      source: image folder, .npy/.npz, TFRecord file(s), array, tf.data.Dataset or iterable of
        batches; None -> the bundled sample's test split (as PNG-free arrays).
      model: Keras model / path / FeatureExtractor; None -> the bundled CNN.
      method: "fem" (FAM/MLFEM audits: see README).
      resume: continue an interrupted store (skips committed ids); without it an existing
        store is an error.
      resize: convert/resize images that do not fit the model instead of error rows.
      distributed: True -> ``jax.distributed.initialize()`` (cluster auto-detection / JAX's env
        vars); a mapping -> its keyword arguments (coordinator_address, num_processes,
        process_id). Each process audits its slice; CPU collectives use gloo.
    """
    if method != "fem":
        raise ValueError(f"unknown or unsupported audit method {method!r}; expected 'fem'")
    check_variant(variant)
    if distributed:
        init_distributed(distributed if isinstance(distributed, Mapping) else {})
    pid, nproc = jax.process_index(), jax.process_count()

    if model is None:
        from ..sample import MODEL_PATH

        model = str(MODEL_PATH)
    model_desc = model if isinstance(model, (str, Path)) else type(model).__name__
    extractor = load(model, layers=layer, include_output=not isinstance(model, FeatureExtractor))
    if source is None:
        from ..sample import CLASS_NAMES, generate

        sample = generate("test")
        labels = [CLASS_NAMES[i] for i in sample.labels]
        src = array_source(
            sample.images, list(sample.ids), labels, extractor.input_shape, "bundled sample"
        )
    else:
        src = open_source(source, extractor.input_shape, resize=resize, threads=threads)

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
    if src.ids is not None:
        if len(set(src.ids)) != len(src.ids):
            raise ValueError(f"{src.description}: ids are not unique")
        mine = [rid for i, rid in enumerate(src.ids) if i % nproc == pid]
        todo = [rid for rid in mine if rid not in committed]
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

    step = make_audit_step(extractor, k, variant)
    runner = BatchRunner(step, extractor.params, batch_size)
    records = src.read(select)
    meta: collections.deque[list[Record]] = collections.deque()
    errors: list[tuple[Record, str]] = []
    rows = _row_template(extractor.has_output)
    maps: list[np.ndarray] = []
    map_shape: list[tuple[int, int]] = []
    seq = store.next_seq()
    bar = progress_bar(len(todo) if src.ids is not None else None, enabled=progress, desc="audit")

    def batches() -> Iterator[np.ndarray]:
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
                yield np.stack(imgs)
                imgs, recs = [], []
        if imgs:
            meta.append(recs)
            yield np.stack(imgs)

    def flush_errors() -> None:
        for rec, err in errors:
            _append_error(rows, rec, err)
            maps.append(None)  # type: ignore[arg-type]
            summary.errors += 1
        bar.update(len(errors))
        errors.clear()

    def commit() -> None:
        nonlocal seq, rows, maps
        if not rows["id"]:
            return
        shape = map_shape[0] if map_shape else (1, 1)
        stacked = np.stack(
            [m if m is not None else np.full(shape, np.nan, np.float32) for m in maps]
        )
        store.write_part(seq, rows, stacked)
        seq += 1
        rows, maps = _row_template(extractor.has_output), []

    start = time.perf_counter()
    for out_batch in runner.run(batches()):
        recs = meta.popleft()
        if not map_shape:
            map_shape.append(tuple(out_batch["map"].shape[1:]))
        for i, rec in enumerate(recs):
            if out_batch["finite"][i]:
                _append_ok(rows, rec, out_batch, i)
                maps.append(out_batch["map"][i])
                summary.ok += 1
            else:
                _append_error(rows, rec, "non-finite (NaN/inf) activations or map")
                maps.append(None)  # type: ignore[arg-type]
                summary.errors += 1
        bar.update(len(recs))
        flush_errors()
        if len(rows["id"]) >= part_size:
            commit()
    flush_errors()
    commit()
    bar.close()
    summary.seconds = round(time.perf_counter() - start, 3)
    summary.processed = summary.ok + summary.errors
    summary.images_per_second = round(summary.processed / max(summary.seconds, 1e-9), 1)
    info = {
        "model": str(model_desc),
        "layer": extractor.layer_name,
        "method": method,
        "config": {"variant": variant, "k": k, "batch_size": runner.batch_size, "resize": resize},
        "source": src.description,
        "source_location": source_location(source),
        "map_shape": list(map_shape[0]) if map_shape else None,
        "versions": _versions(),
        "devices": [str(d) for d in jax.local_devices()],
        "process_count": nproc,
        "finished": dt.datetime.now(dt.timezone.utc).isoformat(),
    }
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
            "errors": int(np.sum(rows["status"] == "error")) if rows else 0,
        }
        store.write_manifest(body)
