"""`fastfem report DIR`: one self-contained HTML page for an audit's result store.

The page holds the run summary, the distribution of every map statistic (flagged rows
highlighted), and a gallery of the top flagged images with their maps overlaid — every picture
embedded as a base64 PNG, so the file opens from disk with no server and nothing fetched.
Images are read again from the source recorded in the manifest (a folder, an array file, or the
bundled sample); for in-memory sources the gallery shows the maps alone.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import numpy as np

from ..kernels.map_stats import MapStats
from ..overlay import normalize_for_display
from .flags import flag_rows, float_column
from .sources import ReadOptions, open_source, unit_float
from .steps import LOCALISATION_COLUMNS
from .store import ResultStore


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
    if location == "bundled:test":
        from ..sample import generate

        s = generate("test")
        return {rid: s.images[i] for i, rid in enumerate(s.ids) if rid in wanted}
    config = config or {}
    fit, size = config.get("fit", "error"), config.get("input_size")
    expected = (None, None, None) if fit == "error" or not size else (*size, None)
    options = ReadOptions(
        fit=fit,
        max_pixels=config.get("max_pixels", ReadOptions.max_pixels),
        alpha=config.get("alpha", "black"),
        threads=2,
    )
    try:
        src = open_source(location, expected, options)
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


def _overlay(image: np.ndarray | None, fmap: np.ndarray) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 2))
    ax.axis("off")
    if image is not None:
        h, w = image.shape[:2]
        img = image[..., 0] if image.shape[-1] == 1 else image
        ax.imshow(np.clip(img, 0, 1), cmap="gray" if img.ndim == 2 else None)
        ax.imshow(
            normalize_for_display(fmap),
            cmap="jet",
            alpha=0.45,
            extent=(0, w, h, 0),
            interpolation="bilinear",
        )
    else:
        ax.imshow(normalize_for_display(fmap), cmap="jet", interpolation="nearest")
    return _png(fig)


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


def write_report(store_dir: str | Path, out: str | Path | None = None, top: int = 24) -> Path:
    """Write the audit's HTML report (default ``DIR/report.html``); returns its path."""
    store = ResultStore(store_dir)
    rows = store.read_rows()
    if not rows:
        raise ValueError(f"{store_dir} holds no committed audit rows")
    manifest = store.manifest()
    flags = flag_rows(rows)
    maps = store.read_maps()
    top_ids = flags.top_ids(top)
    index = {rid: i for i, rid in enumerate(rows["id"])}
    images = images_by_id(manifest.get("source_location"), top_ids, manifest.get("config"))
    n = len(rows["id"])
    errors = int(np.sum(rows["status"] == "error"))
    run = manifest.get("last_run", {})
    facts = [
        ("images", n),
        ("errors", errors),
        ("flagged", int(flags.flagged.sum())),
        ("model", manifest.get("model")),
        ("layer", manifest.get("layer")),
        ("method", f"{manifest.get('method')} {manifest.get('config', {})}"),
        ("source", manifest.get("source")),
        ("throughput (last run)", throughput(run)),
        ("versions", manifest.get("versions")),
        ("flag rule", flags.rule),
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
    cards = []
    for rid in top_ids:
        i = index[rid]
        label = rows["label"][i] if "label" in rows else None
        pred = rows["prediction"][i] if "prediction" in rows else None
        conf = rows["confidence"][i] if "confidence" in rows else None
        caption = f"{html.escape(rid)}<br>score {flags.score[i]:.1f} ({flags.reason[i]})"
        caption += f" · corner {rows['corner_energy'][i]:.2f}"
        if "energy_pointing_game" in rows:
            epg = float_column(rows["energy_pointing_game"][i : i + 1])[0]
            if np.isfinite(epg):
                caption += f"<br>in box {epg:.2f} · IoU {float(rows['iou'][i]):.2f}"
        if "prototype" in rows and rows["prototype"][i] is not None:
            caption += f"<br>vs {html.escape(str(rows['prototype'][i]))}"
            caption += f" (sim {float(rows['similarity'][i]):.2f})"
        if label is not None:
            caption += f"<br>label {html.escape(str(label))}"
        if pred is not None:
            caption += f" · pred {pred} ({conf:.2f})"
        src = _overlay(images.get(rid), maps[i])
        cards.append(
            f'<figure><img src="{src}" alt="{html.escape(rid)}">'
            f"<figcaption>{caption}</figcaption></figure>"
        )
    error_rows = "".join(
        f"<tr><td>{html.escape(str(rows['id'][i]))}</td>"
        f"<td>{html.escape(str(rows['error'][i]))}</td></tr>"
        for i in np.flatnonzero(rows["status"] == "error")[:200]
    )
    fact_rows = "".join(
        f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in facts
    )
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>fastfem audit report</title>
<style>
body{{font-family:system-ui,sans-serif;margin:24px;color:#222}} h1{{margin-top:0}}
table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:3px 8px;font-size:13px;text-align:left}}
.gallery{{display:flex;flex-wrap:wrap;gap:10px}} figure{{margin:0;width:170px;font-size:11px}}
figure img{{width:160px;height:160px;object-fit:contain;border:1px solid #ddd}}
</style></head><body>
<h1>fastfem audit report</h1>
<table>{fact_rows}</table>
<h2>Top flagged images</h2>
<p>{len(top_ids)} of {int(flags.flagged.sum())} flagged, highest score first. Overlay: the
feature-resolution map, clipped to its 0.1–99.9 percentiles.</p>
<div class="gallery">{"".join(cards) or "<p>No image is flagged.</p>"}</div>
<h2>Map statistics</h2>
<img alt="distributions" src="{_histograms(rows, flags.flagged)}">
<h2>Errors ({errors})</h2>
<table><tr><th>id</th><th>error</th></tr>{error_rows}</table>
</body></html>
"""
    path = Path(out) if out is not None else store.root / "report.html"
    path.write_text(body, encoding="utf-8")
    return path
