"""`fastfem report DIR`: one self-contained HTML page for an audit's result store.

The page holds the run summary with the detectors' rules, one section per shortcut-candidate
cluster (its mean map, its class skew against the whole store, a gallery of its most typical
members), an overview of every explanation cluster, the per-class mean maps, the gallery of
the top flagged images, the distribution of every map statistic (flagged rows highlighted) and
the error rows. Every picture is an embedded base64 PNG thumbnail
(`fastfem.audit.report.thumbnails`),
so the file opens from disk with no server and nothing fetched.

Scale: the report never loads every map. The flags and clusters come from ``flags.parquet`` /
``clusters.parquet`` (`fastfem.audit.detectors`; recomputed in memory, streaming, when missing
or older than the newest part); the per-class mean maps come from one streaming pass over the
map shards; only the maps of the pictured rows are read. Images are read again from the
source recorded in the manifest (a folder, an array file, or the bundled sample); for
in-memory sources the pictures show the maps alone.

Safety: every string of the store reaches the page through `fastfem.audit.report.markup.render`
(escaped at that one place); the page is written by `fastfem.audit.store.safe_write.atomic_write`
(complete or not at all, never through a link); the store is read as a snapshot of its
committed parts, so a report of a store being written is consistent (and says so).
"""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from fastfem.audit.detectors import CLUSTERS_FILE, FLAGS_FILE, detect, detection_rule
from fastfem.audit.detectors.box import float_column
from fastfem.audit.detectors.clusters import class_mean_maps
from fastfem.audit.detectors.shards import read_map_rows
from fastfem.audit.detectors.summary import Classes, row_classes
from fastfem.audit.detectors.tables import clusters_schema, flags_schema, read_table
from fastfem.audit.reliance.report import describe_section, reliance_section
from fastfem.audit.report.markup import Markup, join, page_bytes, render
from fastfem.audit.report.thumbnails import map_thumbnail, overlay_thumbnail
from fastfem.audit.steps import LOCALISATION_COLUMNS
from fastfem.audit.store.lock import describe, lock_holder
from fastfem.audit.store.parts import ResultStore
from fastfem.audit.store.safe_write import atomic_write_bytes, output_path
from fastfem.data.decode import unit_float
from fastfem.data.records import ReadOptions
from fastfem.data.sources import open_source
from fastfem.kernels.map_stats import MapStats

#: Shortcut-candidate clusters given a section, members pictured per section, classes shown.
MAX_CLUSTER_SECTIONS = 8
MEMBERS_SHOWN = 8
MAX_CLASS_VIEWS = 24


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def images_by_id(
    location: str | None, ids: list[str], config: dict | None = None
) -> dict[str, np.ndarray]:
    """Re-read the images ``ids`` from where the audit read them (empty if not possible),
    fitted to the model input as the audit fitted them (the manifest's ``config``: ``fit``,
    ``input_size``), so the maps lie where they were computed."""
    if not location or not ids:
        return {}
    wanted = set(ids)
    config = config or {}
    fit, size = config.get("fit", "error"), config.get("input_size")
    expected = (None, None, None) if fit == "error" or not size else (*size, None)
    try:  # a manifest's reading options are checked like any others
        options = ReadOptions(
            fit=fit,
            max_pixels=config.get("max_pixels", ReadOptions.max_pixels),
            alpha=config.get("alpha", "black"),
            threads=2,
            image_column=config.get("image_column"),
            label_column=config.get("label_column"),
            label_field=config.get("label_field"),
        )
        src = open_source(None if location == "bundled:test" else location, expected, options)
    except (OSError, ValueError):
        return {}
    chosen = src.read(lambda i, rid: rid in wanted)
    return {r.id: unit_float(r.image) for r in chosen if r.image is not None}


def plotted_columns(rows: dict[str, np.ndarray]) -> list[str]:
    """The numeric columns shown as histograms: the map statistics, then whichever of the
    confidence, FAM similarity and localisation metrics the audit has."""
    extra = ["confidence", "similarity", *LOCALISATION_COLUMNS]
    return list(MapStats._fields) + [c for c in extra if c in rows]


def _histograms(rows: dict[str, np.ndarray], flagged: np.ndarray) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = rows["status"] == "ok"
    names = plotted_columns(rows)
    cols = (len(names) + 1) // 2
    fig, axes = plt.subplots(2, cols, figsize=(3.2 * cols, 5))
    for ax, name in zip(axes.flat, names, strict=False):
        v = float_column(rows[name])
        base, hot = ok & ~flagged & np.isfinite(v), flagged & np.isfinite(v)
        ax.hist(v[base], bins=40, color="#4c72b0", alpha=0.8, label="ok")
        if np.any(hot):
            ax.hist(v[hot], bins=40, color="#dd5555", alpha=0.8, label="flagged")
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
    axes.flat[0].legend(fontsize=7)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    fig.tight_layout()
    return _png(fig)


def _stale(store: ResultStore, name: str) -> bool:
    """True when ``name`` is missing or older than the newest committed part."""
    path = store.root / name
    parts = store.part_files()
    if not path.exists():
        return True
    return bool(parts) and path.stat().st_mtime < max(p.stat().st_mtime for p in parts)


def load_detection(store: ResultStore, rows: dict[str, np.ndarray]) -> tuple[dict, dict]:
    """``(flags, clusters)`` columns: the store's tables, or the detectors run in memory when
    they are missing, stale or of another schema (written by another fastfem version)."""
    if not (_stale(store, FLAGS_FILE) or _stale(store, CLUSTERS_FILE)):
        flags = read_table(store.root, FLAGS_FILE)
        clusters = read_table(store.root, CLUSTERS_FILE)
        if (
            flags is not None
            and clusters is not None
            and list(flags) == flags_schema().names
            and list(clusters) == clusters_schema().names
        ):
            return flags, clusters
    det = detect(store, rows)
    return det.flags_columns(), det.clusters


def _figure(src: str, alt: str, caption: Any, cls: str = "") -> Markup:
    return render(
        '<figure class="{cls}"><img src="{src}" alt="{alt}"><figcaption>{caption}</figcaption>'
        "</figure>",
        cls=cls,
        src=src,
        alt=alt,
        caption=caption,
    )


def _row_caption(rows: dict[str, np.ndarray], i: int) -> Markup:
    """Label, prediction, confidence and the localisation / FAM numbers of row ``i``."""
    parts = []
    if "energy_pointing_game" in rows:
        epg = float_column(rows["energy_pointing_game"][i : i + 1])[0]
        if np.isfinite(epg):
            parts.append(f"in box {epg:.2f} · IoU {float(rows['iou'][i]):.2f}")
    if "prototype" in rows and rows["prototype"][i] is not None:
        parts.append(f"vs {rows['prototype'][i]} (sim {float(rows['similarity'][i]):.2f})")
    line = []
    if "label" in rows and rows["label"][i] is not None:
        line.append(f"label {rows['label'][i]}")
    if "prediction" in rows and rows["prediction"][i] is not None:
        line.append(f"pred {rows['prediction'][i]} ({float(rows['confidence'][i]):.2f})")
    if line:
        parts.append(" · ".join(line))
    return join(parts, "<br>")


def throughput(run: dict[str, Any]) -> str:
    """The last run's speed as text: images per second after compilation, and the compile
    time apart (stores of older versions: their one rate, compilation included)."""
    ips = run.get("images_per_second")
    if "compile_seconds" not in run:
        return f"{ips} images/s (compilation included)"
    return (
        f"{ips} images/s after compilation ({run['compile_seconds']} s compiling, "
        f"{run.get('seconds')} s in all, {run.get('processed')} images)"
    )


def _skew_table(cluster: dict[str, Any], overall: np.ndarray) -> str:
    """The cluster's class shares beside the whole store's, as CSS bars (no picture)."""
    counts = np.asarray(cluster["class_counts"], np.float64)
    share = counts / max(counts.sum(), 1.0)
    total = overall / max(overall.sum(), 1.0)
    order = np.argsort(-share, kind="stable")[:10]
    body = join(
        render(
            '<tr><td>{name}</td><td><span class="bar" style="width:{w:.0f}px"></span> {share:.2f}'
            '</td><td><span class="bar all" style="width:{w_all:.0f}px"></span> {total:.2f}'
            "</td></tr>",
            name=cluster["classes"][c],
            w=120 * share[c],
            share=share[c],
            w_all=120 * total[c],
            total=total[c],
        )
        for c in order
    )
    return render(
        "<table><tr><th>class</th><th>this cluster</th><th>all rows</th></tr>{body}</table>",
        body=body,
    )


def _cluster_facts(c: dict[str, Any]) -> str:
    def num(v: Any, fmt: str = ".2f") -> str:
        return "–" if v is None else format(v, fmt)

    facts = [
        ("members", c["size"]),
        ("flagged", c["flagged"]),
        ("score", num(c["score"])),
        ("contrast", num(c["contrast"], ".1f")),
        ("variation", num(c["variation"])),
        ("median hot-spot energy", num(c["hot_energy"])),
        ("mean-map peak (y, x)", f"({c['peak_y']:.2f}, {c['peak_x']:.2f})"),
        ("top class", f"{c['top_class']} ({num(c['top_class_share'])})"),
        ("class skew (TV distance)", num(c["class_skew"])),
        ("label/prediction disagreement", num(c["disagreement"])),
    ]
    return _table_rows(facts)


def _table_rows(facts: list[tuple[str, Any]]) -> Markup:
    """``<tr><th>key</th><td>value</td></tr>`` per fact, both escaped."""
    return join(render("<tr><th>{k}</th><td>{v}</td></tr>", k=k, v=v) for k, v in facts)


def _cluster_section(
    c: dict[str, Any],
    overall: np.ndarray,
    members: list[tuple[str, str]],
) -> str:
    mean = np.asarray(c["mean_map"], np.float32).reshape(c["map_height"], c["map_width"])
    gallery = join(_figure(src, rid, rid, "member") for rid, src in members)
    return render(
        """<section class="cluster"><h3>Cluster {cluster}: shortcut candidate</h3>
<div class="row">{mean}
<table>{facts}</table>{skew}</div>
<p>Most typical members (closest to the cluster's centre):</p>
<div class="gallery">{gallery}</div></section>""",
        cluster=c["cluster"],
        mean=_figure(map_thumbnail(mean, 160), "mean map", "mean map", "mean"),
        facts=_cluster_facts(c),
        skew=_skew_table(c, overall),
        gallery=gallery,
    )


def _cluster_overview(clusters: dict[str, list]) -> Markup:
    cards = []
    for j in range(len(clusters["cluster"])):
        mean = np.asarray(clusters["mean_map"][j], np.float32).reshape(
            clusters["map_height"][j], clusters["map_width"][j]
        )
        caption = render(
            "cluster {cluster}{tag}<br>{size} rows · score {score:.2f}<br>top class {top}",
            cluster=clusters["cluster"][j],
            tag=render(" · <b>candidate</b>") if clusters["candidate"][j] else "",
            size=clusters["size"][j],
            score=clusters["score"][j],
            top=clusters["top_class"][j],
        )
        cards.append(_figure(map_thumbnail(mean, 96), f"cluster {j}", caption, "small"))
    return join(cards)


def _class_views(
    store: ResultStore, rows: dict[str, np.ndarray], classes: Classes
) -> tuple[str, Markup]:
    """(what the classes are, HTML cards of the per-class mean maps)."""
    ok = np.asarray(rows["status"]) == "ok"
    sizes, means = class_mean_maps(store, ok, classes.index, len(classes.names))
    order = [c for c in np.argsort(-sizes, kind="stable")[:MAX_CLASS_VIEWS] if sizes[c] > 0]
    cards = join(
        _figure(
            map_thumbnail(means[c], 96),
            f"class {classes.names[c]}",
            render(
                "{source} {name}<br>{n} rows",
                source=classes.source,
                name=classes.names[c],
                n=sizes[c],
            ),
            "small",
        )
        for c in order
    )
    shown = f"the {len(order)} largest of {len(classes.names)}" if order else "none"
    return f"classes = {classes.source} ({shown})", cards


def _facts(
    rows: dict[str, np.ndarray], manifest: dict, flagged: int, errors: int, rule: str
) -> Markup:
    run = manifest.get("last_run", {})
    facts = [
        ("images", len(rows["id"])),
        ("errors", errors),
        ("flagged", flagged),
        ("model", manifest.get("model")),
        ("layer", manifest.get("layer")),
        ("method", f"{manifest.get('method')} {manifest.get('config', {})}"),
        ("source", manifest.get("source")),
        ("throughput (last run)", throughput(run)),
        ("versions", manifest.get("versions")),
        ("flag rule", rule),
    ]
    for name in ("similarity", *LOCALISATION_COLUMNS):
        if name in rows:
            v = float_column(rows[name])
            if np.isfinite(v).any():
                facts.append(
                    (f"mean {name}", f"{np.nanmean(v):.3f} over {int(np.isfinite(v).sum())}")
                )
    if "boxes" in manifest:
        facts.append(("boxes", manifest["boxes"]))
    return _table_rows(facts)


_STYLE = """
body{font-family:system-ui,sans-serif;margin:24px;color:#222} h1{margin-top:0}
table{border-collapse:collapse;margin:4px 12px 4px 0;vertical-align:top}
td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:left}
.gallery,.row{display:flex;flex-wrap:wrap;gap:10px;align-items:flex-start}
figure{margin:0;width:170px;font-size:11px}
figure img{width:160px;height:160px;object-fit:contain;border:1px solid #ddd;
image-rendering:pixelated}
figure.small,figure.member{width:110px} figure.small img,figure.member img{width:100px;height:100px}
.bar{display:inline-block;height:10px;background:#dd5555} .bar.all{background:#4c72b0}
section.cluster{border-top:2px solid #dd5555;margin-top:16px;padding-top:4px}
"""


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>fastfem audit report</title>
<style>{style}</style></head><body>
<h1>fastfem audit report</h1>
{writing}<table>{facts}</table>
<h2>What the model relies on</h2>
<p>{reliance_note}</p>
{reliance}
<h2>Shortcut candidates ({n_candidates})</h2>
<p>Explanation clusters whose members all put the same energy on the same cells (a mark at a
fixed place, not objects that move) where the rest of the dataset does not. Pictures: the
feature-resolution maps (clipped to their 0.1–99.9 percentiles) over the images.</p>
{sections}
<h2>Explanation clusters</h2>
<p>Mean map (energy distribution) of every cluster.</p>
<div class="gallery">{overview}</div>
<h2>Per-class mean maps</h2>
<p>{class_note}.</p>
<div class="gallery">{class_cards}</div>
<h2>Top flagged images</h2>
<p>{shown} of {flagged} flagged, highest score first.</p>
<div class="gallery">{cards}</div>
<h2>Map statistics</h2>
<img alt="distributions" src="{histograms}">
<h2>Errors ({errors})</h2>
<table><tr><th>id</th><th>error</th></tr>{error_rows}</table>
</body></html>
"""


def _flagged_cards(
    flags: dict, rows: dict[str, np.ndarray], index: dict, pictures: dict[str, str]
) -> Markup:
    """One figure per shown flagged row: its overlay, id, score, reason, cluster, caption."""
    cards = []
    for rank, rid in enumerate(pictures):
        cluster = flags["cluster"][rank]
        extra = _row_caption(rows, index[rid])
        caption = render(
            "{rid}<br>score {score:.2f} ({reason}){cluster}{extra}",
            rid=rid,
            score=flags["score"][rank],
            reason=flags["reason"][rank],
            cluster="" if cluster is None else f" · cluster {cluster}",
            extra=render("<br>{e}", e=extra) if extra else "",
        )
        cards.append(_figure(pictures[rid], rid, caption, "flagged"))
    return join(cards) or render("<p>No image is flagged.</p>")


def _error_rows(rows: dict[str, np.ndarray]) -> Markup:
    """A table row (id, error) for each of the first 200 error rows."""
    return join(
        render("<tr><td>{rid}</td><td>{error}</td></tr>", rid=rows["id"][i], error=rows["error"][i])
        for i in np.flatnonzero(rows["status"] == "error")[:200]
    )


def _writer_note(store: ResultStore) -> Markup:
    """A line saying an audit holds (or held, killed) the store's lock, or nothing."""
    holder = lock_holder(store.root)
    if holder is None:
        return Markup()
    return render(
        "<p><b>This store is being written</b> ({who}), or its writer was killed: the report "
        "shows the {n} parts committed when it was read.</p>",
        who=describe(holder),
        n=len(store.part_files()),
    )


def report_path(store: ResultStore, out: str | os.PathLike | None) -> Path:
    """Where the report goes: ``out`` (checked by `fastfem.audit.store.safe_write.output_path`), or
    ``DIR/report.html``."""
    path = store.root / "report.html" if out is None else output_path(out, "the report's --out")
    if path.is_dir() and not path.is_symlink():
        raise IsADirectoryError(f"the report's --out {path} is a folder, not a file")
    return path


def write_report(
    store_dir: str | os.PathLike, out: str | os.PathLike | None = None, top: int = 24
) -> Path:
    """Write the audit's HTML report (default ``DIR/report.html``); returns its path.

    The store is read as a snapshot (`ResultStore.snapshot`: the parts committed when the report
    starts, also while an audit adds parts), and the page is written by
    `fastfem.audit.store.safe_write.atomic_write`: complete or not at all, never through a link."""
    store = ResultStore(output_path(store_dir, "the store folder")).snapshot()
    path = report_path(store, out)
    rows = store.read_rows()
    if not rows:
        raise ValueError(f"{store.root} holds no committed audit rows")
    store.check_unique_ids()
    manifest = store.manifest_or_parts()
    flags, clusters = load_detection(store, rows)
    flagged_mask = np.isin(rows["id"], np.asarray(flags["id"], dtype=object))
    top_ids = list(flags["id"][:top])
    candidates = [j for j in np.argsort(-np.asarray(clusters["score"])) if clusters["candidate"][j]]
    candidates = candidates[:MAX_CLUSTER_SECTIONS]
    member_ids = {int(j): list(clusters["members"][j][:MEMBERS_SHOWN]) for j in candidates}
    pictured = list(dict.fromkeys(top_ids + [r for ids in member_ids.values() for r in ids]))
    wanted = set(pictured)
    index = {str(rid): i for i, rid in enumerate(rows["id"]) if rid in wanted}
    maps = dict(zip(pictured, read_map_rows(store, [index[r] for r in pictured]), strict=True))
    images = images_by_id(manifest.get("source_location"), pictured, manifest.get("config"))
    classes = row_classes(rows)
    overall = np.bincount(classes.index[classes.index >= 0], minlength=len(classes.names))
    sections = join(
        _cluster_section(
            {name: clusters[name][j] for name in clusters},
            overall.astype(np.float64),
            [(r, overlay_thumbnail(images.get(r), maps[r])) for r in member_ids[int(j)]],
        )
        for j in candidates
    )
    pictures = {rid: overlay_thumbnail(images.get(rid), maps[rid]) for rid in top_ids}
    errors = int(np.sum(rows["status"] == "error"))
    rule = manifest.get("last_run", {}).get("flag_rule") or detection_rule(
        "energy_pointing_game" in rows
    )
    class_note, class_cards = _class_views(store, rows, classes)
    page = render(
        _PAGE,
        style=Markup(_STYLE),
        writing=_writer_note(store),
        facts=_facts(rows, manifest, len(flags["id"]), errors, rule),
        reliance_note=describe_section(),
        reliance=reliance_section(store.root, flags, str(manifest.get("reliance", ""))),
        n_candidates=int(np.sum(clusters["candidate"])) if clusters["cluster"] else 0,
        sections=sections or render("<p>No cluster is a shortcut candidate.</p>"),
        overview=_cluster_overview(clusters) if clusters["cluster"] else "",
        class_note=class_note,
        class_cards=class_cards,
        shown=len(top_ids),
        flagged=len(flags["id"]),
        cards=_flagged_cards(flags, rows, index, pictures),
        histograms=_histograms(rows, flagged_mask),
        errors=errors,
        error_rows=_error_rows(rows),
    )
    return atomic_write_bytes(path, page_bytes(page))
