#!/usr/bin/env python
"""The window around each row's map peak, measured on every model: what the reliance test's
probe that follows it (`fastfem.audit.reliance.peaks`) is decided by, the maps or the labels,
and what each reads.

A mark at a random place in each image (the unseen check's ``patch@anywhere``) lies in no
fixed region of the sweep (`fastfem.audit.reliance.probes`). The region that follows it is
each row's own hot spot: a square window around the peak of the row's stored map (the
audit's ``peak_y``, ``peak_x``), filled from its surroundings (``inpaint``) like every region.
This check asks, for each model, which rows such a probe knocks out, per predicted class
``c``: a row of class ``c`` is a *hit* when hiding the window lowers ``P(c)`` by at least
``DROP`` (0.5). It reports, per class with at least `MIN_HITS` hits, the hits, how many carry
the mark and how many the model relies on (the benchmark's ground truth,
`benchmarks.shortcut_data.relied_on`), and what the audit's labels would read: the share of
the hits labelled another class, against the share among the class's other rows, the labels'
p-value (`peaks.labels_p_value`) and whether they confirm the test (`peaks.labels_mark`); and
what the maps read without labels: the share of the hits whose map *lost a salient extra*
with the window hidden (`peaks.lost_extra`: the map's peak contrast falls 1.25x, to an
ordinary image's), against the share among every row the window does not knock out, its
p-value and whether the maps make the class a candidate (`peaks.maps_mark`).

A test whose hits carry no mark is a class's own objects passing for a shortcut: a probe that
hides whatever the map peaks on hides the objects the map peaks on as often as a mark. The
labels tell them apart: a class's own objects under the window are its images, labelled the
class; a mark's hits are images of other classes it moved there, and where the model mixes
its classes they are still hit significantly more often than the class's own. So can the
maps: a mark's row is an ordinary image of another class with something more on it, which
dominates its map; hidden, it leaves an ordinary map. A class's object under the window is
what the map of an ordinary image shows; hidden, it leaves a map that peaks as hard or harder
on what is left, or (alone on a plain background) one that is not an ordinary map.

Usage::

    python -m benchmarks.shortcut_peak_window [--only photos:patch@anywhere ...] [--sides 3 4 6 8]

audits each model's test split without the reliance test (into a temporary folder), hides a
window of a third, a quarter, a sixth and an eighth of the image's side around each row's peak, and
writes ``benchmarks/results/shortcut_peak_window.{json,md}``. The models: the benchmark's
committed ones (`benchmarks.shortcut_models`) and the patch at a random place on each base
(``runs/shortcut_unseen``, trained first where not cached, with the benchmark's recipe: the
unseen check's photographs model and one of the shapes and of the letters).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from fastfem.audit.reliance.labels import label_shares
from fastfem.audit.reliance.peaks import (
    labelled_other_rows,
    labels_mark,
    labels_p_value,
    lost_extra,
    maps_mark,
    peak_tests,
)
from fastfem.audit.reliance.stats import MIN_HITS

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DROP = 0.5  # a hit: P(c) falls by this much when the window is hidden
SIDES = (3, 4, 6, 8)  # the window's side: the image's side over this


def class_tests(
    pred: np.ndarray,
    drop: np.ndarray,
    marked: np.ndarray,
    relied: np.ndarray,
    label_cls: np.ndarray,
    extra: np.ndarray | None = None,
) -> list[dict[str, Any]]:
    """Per predicted class with at least ``MIN_HITS`` hits (``drop >= DROP``): its rows, hits,
    the hits that carry the mark and that the model relies on, the share of the hits whose
    label (``label_cls``: each row's label's class) is another class and the same share among
    the class's other rows, the labels' p-value (`fastfem.audit.reliance.peaks.labels_p_value`)
    and whether the labels confirm the test (`peaks.labels_mark`, over the predicted
    classes); with ``extra`` (the rows whose map lost a salient extra, `peaks.lost_extra`),
    the maps' reading without labels (`peaks.peak_tests`, `peaks.maps_mark`)."""
    out = []
    hit = drop >= DROP
    classes = np.unique(pred)
    read = [] if extra is None else peak_tests(drop, pred, classes, None, extra)
    maps = {e.test.cls: e for e in read}
    for c in classes:
        own = pred == c
        hits = own & hit
        if hits.sum() < MIN_HITS:
            continue
        other = labelled_other_rows(own, label_cls, int(c))  # every row has a label here
        share, share_rest = label_shares(hit, own, label_cls, int(c))
        p = labels_p_value(hit, own, label_cls, int(c))
        out.append(
            {
                "class": int(c),
                "rows": int(own.sum()),
                "hits": int(hits.sum()),
                "marked": int(np.sum(hits & marked)),
                "relied_on": int(np.sum(hits & relied)),
                "label_other": round(share, 3),
                "label_other_rest": round(share_rest, 3),
                "p_value": float(p),
                "labels_confirm": bool(labels_mark(share, p, len(classes))),
                "flagged_with_labels": int(np.sum(hits & other)),
                "flagged_marked": int(np.sum(hits & other & marked)),
            }
        )
        if int(c) in maps:
            e = maps[int(c)]
            out[-1].update(
                lost_extra=round(e.extra, 3),
                lost_extra_rest=round(e.extra_rest, 3),
                maps_p_value=float(e.extra_p),
                maps_confirm=bool(maps_mark(e, len(classes))),
            )
    return out


def hidden(images: np.ndarray, masks: np.ndarray, h: int, w: int) -> np.ndarray:
    """``images`` (N, H, W, C) in [0, 1] with each row's mask inpainted (the sweep's fill)."""
    import jax

    from fastfem.audit.reliance import pixel_moments
    from fastfem.kernels.occlusion import FILLS, fill_params, probe_image

    params = fill_params(*pixel_moments(images), h, w)
    fill = FILLS.index("inpaint")
    one = jax.jit(jax.vmap(lambda x, m: probe_image(x, m, fill, params)))
    return np.concatenate(
        [
            np.asarray(one(images[i : i + 128], masks[i : i + 128]))
            for i in range(0, len(images), 128)
        ]
    )


def measure(base: str, name: str, model: Path, work: Path, sides=SIDES) -> dict[str, Any]:
    """The check of the module docstring for configuration ``name`` on ``base`` with the
    ``.keras`` file ``model``: its test split audited into ``work`` without the reliance test,
    each row's window hidden at each side."""
    import jax
    import jax.numpy as jnp
    import keras

    import fastfem
    from benchmarks.shortcut_data import generate_shortcut, relied_on
    from benchmarks.shortcut_models import predictor
    from fastfem.audit import ResultStore, audit
    from fastfem.audit.detectors.summary import label_classes
    from fastfem.audit.reliance.probes import peak_pixels
    from fastfem.audit.reliance.step import peak_windows
    from fastfem.kernels.map_stats import peak_contrast

    s = generate_shortcut(name, "test", base=base)
    predict = predictor(keras.saving.load_model(model, safe_mode=True))
    relied = relied_on(predict, s) if name != "none" else np.zeros(len(s), bool)
    store = work / f"{base}-{name.replace('@', '-')}"
    audit(s.images, str(model), out=store, reliance_sample=0)
    rows = ResultStore(store).read_rows()
    order = np.argsort(rows["id"].astype(int))
    pred = np.asarray(rows["prediction"])[order]
    base_p = np.asarray(rows["confidence"])[order]
    labelled = {"label": s.objects.astype(str).astype(object), "prediction": pred}
    label_cls = label_classes(labelled)
    n, h, w = len(s), *s.images.shape[1:3]
    fem = fastfem.FEM(str(model), batch_size=128)  # the audit's maps (its default FEM)

    def contrast(images: np.ndarray) -> np.ndarray:
        return np.asarray(jax.vmap(peak_contrast)(jnp.asarray(fem.explain(images, resize=False))))

    clean = contrast(s.images)
    out: dict[str, Any] = {"base": base, "config": name, "relied_on": int(relied.sum())}
    for side in sides:
        peaks = peak_pixels(rows["peak_y"][order], rows["peak_x"][order], h, w)
        masks = np.asarray(peak_windows(jnp.asarray(peaks), h, w, jnp.int32(h // side)))
        x = hidden(s.images, masks, h, w)
        drop = base_p - predict(x)[np.arange(n), pred]
        extra = lost_extra(clean, contrast(x), float(np.median(clean)))
        out[f"1/{side}"] = class_tests(pred, drop, s.marked, relied, label_cls, extra)
    return out


def models(only: list[str] | None) -> list[tuple[str, str, Path]]:
    """``(base, config, path)`` of the benchmark's committed models and the unseen check's
    patch model (trained first where it is not cached), or of ``only`` (``base:config``)."""
    from benchmarks.shortcut_data import BASES
    from benchmarks.shortcut_models import MODEL_DIR, model_path, train_one
    from benchmarks.shortcut_unseen import MODELS

    found = [
        (p.stem.split("-", 1)[0], p.stem.split("-", 1)[1], p)
        for p in sorted(MODEL_DIR.glob("*.keras"))
    ]
    every = [(b, c if c == "none" else c.replace("-", "@", 1), p) for b, c, p in found]
    for base in BASES:
        every.append((base, "patch@anywhere", model_path("patch@anywhere", base, MODELS)))
    if only:
        every = [m for m in every if f"{m[0]}:{m[1]}" in only]
    for b, c, p in every:
        if not p.exists():
            train_one(c, b, path=p)
    return every


def markdown_table(results: list[dict[str, Any]], sides=SIDES) -> str:
    """One line per model and window side with a class of ``MIN_HITS`` hits or more: each such
    class's hits, marked and relied-on hits, the labels' reading and the maps' (without
    labels)."""
    lines = [
        "| model | window | class: hits / rows (marked, relied on of the model's) | labels: "
        "hits / rest labelled another class | maps: hits / rest losing a salient extra |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        for side in sides:
            tests = r[f"1/{side}"]
            if not tests:
                continue
            found = "; ".join(
                f"{t['class']}: {t['hits']} / {t['rows']} ({t['marked']}, {t['relied_on']} of "
                f"{r['relied_on']})"
                for t in tests
            )
            read = "; ".join(
                f"{t['class']}: {t['label_other']:.2f} / {t['label_other_rest']:.2f}"
                + (
                    f" **confirmed**, flags {t['flagged_with_labels']}"
                    f" ({t['flagged_marked']} marked)"
                    if t["labels_confirm"]
                    else ""
                )
                for t in tests
            )
            maps = "; ".join(
                f"{t['class']}: {t['lost_extra']:.2f} / {t['lost_extra_rest']:.2f}"
                + (" **candidate**" if t["maps_confirm"] else "")
                for t in tests
                if "lost_extra" in t
            )
            lines.append(f"| {r['base']} {r['config']} | 1/{side} | {found} | {read} | {maps} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")  # a check's own process
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--sides", nargs="*", type=int, default=list(SIDES))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for base, name, path in models(args.only):
            results.append(measure(base, name, path, Path(tmp), args.sides))
            print(json.dumps(results[-1]), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "shortcut_peak_window.json").write_text(json.dumps(results, indent=1))
    text = markdown_table(results, args.sides)
    (args.out / "shortcut_peak_window.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
