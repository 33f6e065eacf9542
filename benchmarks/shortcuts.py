#!/usr/bin/env python
"""Shortcut benchmark: do the audit's flags find planted shortcuts wherever they are?

For every configuration of `fastfem.sample.shortcuts.CONFIGS` (a mark kind at a place, and the
``none`` control) the ``shapes`` base's cached CNN (trained on the configuration's ``train``
split, whose marked images are all labelled the mark's class: `benchmarks.shortcut_models`)
audits the ``test`` split (512 images, the mark on ~15% of every class, independent of the
label); the flags are scored against the planted truth: precision and recall of "flagged" vs
"carries the mark", for the old corner rule (`fastfem.audit.flags.corner_flags`) and the
location-agnostic detectors (`fastfem.audit.detectors`) side by side. The bundled sample
with the bundled model (checker patch in the bottom-right corner) is one more row. The same
thresholds serve every row; nothing is told where the mark is or what it looks like.

Usage::

    python -m benchmarks.shortcuts train [--only NAME ...]   # rebuild the cached models
    python -m benchmarks.shortcuts [--only NAME ...]         # audit, score, write the table
    python -m benchmarks.shortcuts --split holdout           # the same on a second test split
    python -m benchmarks.shortcuts --model none              # every test split, audited with
                                                             # the control's model (no mark)
    python -m benchmarks.shortcuts --method mlfem            # the same detectors on MLFEM
    python -m benchmarks.shortcuts --method fam              # or FAM audits' maps

``train`` writes ``tests/support/shortcut_models/shapes-<kind>-<place>.keras`` through
`benchmarks.shortcut_models` (its recipe; the models of every base: ``python -m
benchmarks.shortcut_models train``).
The evaluation writes
``benchmarks/results/shortcuts[-holdout][-model-none][-mlfem|-fam].{json,md}``.

``--model none`` separates "the images carry a recurring mark the model's features respond to"
(what the flags find) from "the model learned to use it": a CNN that never saw a mark responds
to a high-contrast mark all the same, so its audit flags the marked images too; the candidate
cluster's class skew is what tells a learned shortcut apart.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def model_path(name: str, base: str = "shapes") -> Path:
    """Cached model of configuration ``name`` (``"kind@place"`` or ``"none"``) on ``base``
    (`benchmarks.shortcut_models`)."""
    from benchmarks.shortcut_models import model_path as path

    return path(name, base)


def train(names: list[str]) -> None:
    """Train and save the ``shapes`` model of each configuration (`benchmarks.shortcut_models`,
    which also trains the other bases' models)."""
    from benchmarks.shortcut_models import main as train_models

    train_models(["train", "--base", "shapes", "--config", *names])


BUNDLED = "bundled"  # the bundled sample and model: checker patch, bottom-right corner
#: A candidate's mean-map peak counts as "at the planted place" within this many map cells of
#: the mark (receptive fields spread a mark's energy over its neighbouring cells).
PEAK_TOLERANCE = 1


def test_split(name: str, split: str = "test"):
    """``(images, ids, labels (class names), marked, zone (64, 64) bool)`` of a test split
    (``test``, or the second test split ``holdout``; the bundled configuration's holdout is
    the generator's checker in the same bottom-right place)."""
    import numpy as np

    from fastfem.sample import CLASS_NAMES, WATERMARK_BOX, generate
    from fastfem.sample.shortcuts import generate_shortcut, mark_zone

    if name == BUNDLED and split == "test":
        s = generate("test")
        zone = np.zeros(s.images.shape[1:3], bool)
        x0, y0, x1, y1 = WATERMARK_BOX
        zone[y0:y1, x0:x1] = True
        marked = s.watermark
    else:
        s = generate_shortcut("checker@bottom-right" if name == BUNDLED else name, split)
        zone = mark_zone(s.shortcut)
        marked = s.marked
    labels = np.asarray([CLASS_NAMES[i] for i in s.labels])
    return s.images, list(s.ids), labels, marked, zone


def zone_cells(zone: np.ndarray, map_shape: tuple[int, int], tolerance: int = 0) -> np.ndarray:
    """(h, w) bool: map cells whose footprint on the image overlaps ``zone``, grown by
    ``tolerance`` cells."""
    import numpy as np

    h, w = map_shape
    ys = np.arange(zone.shape[0]) * h // zone.shape[0]
    xs = np.arange(zone.shape[1]) * w // zone.shape[1]
    cells = np.zeros((h, w), bool)
    yy, xx = np.nonzero(zone)
    cells[ys[yy], xs[xx]] = True
    for _ in range(tolerance):
        padded = np.pad(cells, 1)
        cells = np.zeros_like(cells)
        for dy in range(3):
            for dx in range(3):
                cells |= padded[dy : dy + h, dx : dx + w]
    return cells


def precision_recall(flagged: np.ndarray, marked: np.ndarray) -> dict:
    """Precision (NaN when nothing is flagged) and recall of ``flagged`` vs ``marked``."""
    import numpy as np

    tp = int(np.sum(flagged & marked))
    n_flag, n_mark = int(flagged.sum()), int(marked.sum())
    return {
        "precision": tp / n_flag if n_flag else float("nan"),
        "recall": tp / n_mark if n_mark else float("nan"),
        "flagged": n_flag,
        "marked": n_mark,
        "true_positives": tp,
        "rows": int(len(marked)),
        "flag_rate": n_flag / max(len(marked), 1),
    }


def audit_split(
    name: str, out: Path, model: Path | None = None, split: str = "test", method: str = "fem"
) -> tuple[Path, np.ndarray]:
    """Audit configuration ``name``'s test split (written as ``.npz`` beside the store, so
    the report can show the images) with its cached model and the audit ``method``; returns
    (store, marked)."""
    import numpy as np

    from fastfem.audit import audit

    images, ids, labels, marked, _ = test_split(name, split)
    out.mkdir(parents=True, exist_ok=True)
    data = out / f"{name.replace('@', '-')}-{split}.npz"
    np.savez(data, images=images, ids=np.asarray(ids), labels=labels)
    store = out / "store"
    if model is None:
        from fastfem.sample import MODEL_PATH

        model = MODEL_PATH if name == BUNDLED else model_path(name)
    audit(str(data), model=str(model), out=store, method=method)
    return store, marked


def evaluate_store(name: str, store: Path, marked: np.ndarray, split: str = "test") -> dict:
    """Score the old corner rule and the detectors on an audited test split."""
    import numpy as np

    from fastfem.audit import ResultStore
    from fastfem.audit.detectors import detect
    from fastfem.audit.flags import flag_rows

    rows = ResultStore(store).read_rows()
    _, ids, _, _, zone = test_split(name, split)
    order = {rid: i for i, rid in enumerate(ids)}
    truth = marked[[order[str(r)] for r in rows["id"]]]
    det = detect(ResultStore(store), rows)
    corner = flag_rows(rows)
    cand = np.flatnonzero(det.hot.candidate) if det.hot is not None else np.zeros(0, int)
    mean_maps = det.stats.mean_maps() if det.stats is not None else np.zeros((0, 1, 1))
    cells = zone_cells(zone, mean_maps.shape[1:], PEAK_TOLERANCE)
    clusters = []
    for k in cand:
        peak = np.unravel_index(int(np.argmax(mean_maps[k])), mean_maps.shape[1:])
        members = det.stats.label == k
        clusters.append(
            {
                "cluster": int(k),
                "size": int(members.sum()),
                "marked_members": int(np.sum(members & truth)),
                "peak_cell": [int(peak[0]), int(peak[1])],
                "peak_at_planted_place": bool(cells[peak]),
                "score": float(det.hot.cluster_score[k]),
                "class_skew": det.clusters["class_skew"][k],
                "top_class": det.clusters["top_class"][k],
                "top_class_share": det.clusters["top_class_share"][k],
            }
        )
    pred = np.asarray(rows["prediction"], np.int64)
    return {
        "config": name,
        "corner_rule": precision_recall(corner.flagged, truth),
        "detectors": precision_recall(det.flagged, truth),
        "candidates": clusters,
        "model": {
            "test_accuracy": float(np.mean(pred == np.asarray([_class(r) for r in rows["label"]]))),
            "marked_predicted_class0": float(np.mean(pred[truth] == 0)) if truth.any() else None,
            "unmarked_predicted_class0": float(np.mean(pred[~truth] == 0)),
        },
    }


def _versions() -> dict[str, str]:
    import platform

    import jax
    import keras

    import fastfem

    return {
        "fastfem": fastfem.__version__,
        "jax": jax.__version__,
        "keras": keras.__version__,
        "python": platform.python_version(),
        "machine": platform.processor() or platform.machine(),
    }


def _class(label: str) -> int:
    from fastfem.sample import CLASS_NAMES

    return CLASS_NAMES.index(str(label))


def evaluate(
    names: list[str],
    keep: Path | None = None,
    split: str = "test",
    model: Path | None = None,
    method: str = "fem",
) -> list[dict]:
    """Audit (with ``method``) and score every configuration (temporary stores unless
    ``keep``) with its own model, or with ``model`` for all of them."""
    import tempfile

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        root = keep or Path(tmp)
        for name in names:
            t0 = time.perf_counter()
            out = root / name.replace("@", "-")
            store, marked = audit_split(name, out, model=model, split=split, method=method)
            res = evaluate_store(name, store, marked, split)
            res["seconds"] = round(time.perf_counter() - t0, 1)
            results.append(res)
            d, c = res["detectors"], res["corner_rule"]
            print(
                f"{name:20s} detectors P={d['precision']:.2f} R={d['recall']:.2f} "
                f"(flagged {d['flagged']}, marked {d['marked']}) | corner rule "
                f"P={c['precision']:.2f} R={c['recall']:.2f} | {res['seconds']} s",
                flush=True,
            )
    return results


def _cell(pr: dict, control: bool) -> str:
    if control:
        return f"flags {pr['flagged']} of {pr['rows']} ({100 * pr['flag_rate']:.1f}%)"
    p = "–" if pr["precision"] != pr["precision"] else f"{pr['precision']:.2f}"
    return f"{p} / {pr['recall']:.2f}"


def markdown_table(results: list[dict]) -> str:
    """The README's results table."""
    lines = [
        "| planted shortcut | kind | place | corner rule P / R | detectors P / R | candidate "
        "cluster peak at the place | candidate's class skew (top class: share) | model: marked "
        "images predicted class 0 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        name = r["config"]
        kind, _, place = (
            ("checker", "", "bottom-right (bundled)") if name == BUNDLED else (name.partition("@"))
        )
        control = name == "none"
        peaks = [c["peak_at_planted_place"] for c in r["candidates"]]
        peak = "–" if control else ("yes" if any(peaks) else "no") + f" ({len(peaks)} cand.)"
        use = r["model"]["marked_predicted_class0"]
        skew = "; ".join(
            f"{c['class_skew']:.2f} ({c['top_class']}: {c['top_class_share']:.2f})"
            for c in r["candidates"]
        )
        lines.append(
            f"| {'none (control)' if control else name} | {kind if not control else '–'} | "
            f"{place or '–'} | {_cell(r['corner_rule'], control)} | "
            f"{_cell(r['detectors'], control)} | {peak} | {skew or '–'} | "
            f"{'–' if use is None else f'{use:.2f}'} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from fastfem.sample.shortcuts import CONFIGS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("command", nargs="?", default="evaluate", choices=["evaluate", "train"])
    parser.add_argument("--only", nargs="*", help="configuration names (default: all)")
    parser.add_argument("--keep", help="keep the audited stores under this folder")
    parser.add_argument(
        "--split", default="test", choices=["test", "holdout"], help="the test split audited"
    )
    parser.add_argument(
        "--model",
        choices=["own", "none"],
        default="own",
        help="each configuration's model, or the control's (trained with no mark) for all",
    )
    parser.add_argument(
        "--method",
        choices=["fem", "mlfem", "fam"],
        default="fem",
        help="the audit's method (the same detectors run on its maps)",
    )
    args = parser.parse_args(argv)
    if args.command == "train":
        os.environ.setdefault("KERAS_BACKEND", "tensorflow")
        train(args.only or [c.name for c in CONFIGS])
        return 0
    os.environ.setdefault("KERAS_BACKEND", "jax")
    names = args.only or [BUNDLED, *(c.name for c in CONFIGS)]
    model = model_path("none") if args.model == "none" else None
    keep = Path(args.keep) if args.keep else None
    results = evaluate(names, keep, args.split, model, args.method)
    RESULTS.mkdir(parents=True, exist_ok=True)
    options = [f"--split {args.split}"] * (args.split != "test")
    options += ["--model none"] * (args.model == "none")
    options += [f"--method {args.method}"] * (args.method != "fem")
    stem = "shortcuts" + ("-holdout" if args.split != "test" else "")
    stem += "-model-none" if args.model == "none" else ""
    stem += f"-{args.method}" if args.method != "fem" else ""
    command = " ".join(["python -m benchmarks.shortcuts", *options])
    meta = {
        "command": command,
        "split": args.split,
        "method": args.method,
        "versions": _versions(),
        "results": results,
    }
    (RESULTS / f"{stem}.json").write_text(json.dumps(meta, indent=2) + "\n")
    (RESULTS / f"{stem}.md").write_text(markdown_table(results))
    print(markdown_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
