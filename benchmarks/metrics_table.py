#!/usr/bin/env python
"""Comparison table of explanation methods on the bundled sample, on every metric.

The bundled sample's test split (coloured shapes with ground-truth boxes) and the bundled CNN;
every method's maps go through `fastfem.evaluate` with the same settings:

* FEM ``xplique`` / ``original`` / ``gradcam`` variants at the default layer (``last_conv``),
* MLFEM (mean fusion of the last conv layer of each resolution stage),
* FAM (cosine similarity of GAP embeddings at ``last_conv``): each query image is paired with
  a reference, the next test image of the same true class; its faithfulness scores are the
  similarity to that reference (not a class probability), so compare them within the row only,
* two baselines: the channel mean of ``last_conv``'s activations (resized bilinearly) and the
  uniform map (the chance level of every localisation metric).

Classifier targets are the predicted classes. Writes benchmarks/results/metrics_table.{md,json}.

Usage::

    python benchmarks/metrics_table.py                    # 512 test images, T = 16
    python benchmarks/metrics_table.py --n 128 --steps 8  # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

RESULTS = Path(__file__).resolve().parent / "results"

COLUMNS = [
    ("pointing_game", "Pointing game ↑"),
    ("energy_pointing_game", "Energy PG ↑"),
    ("iou", "IoU@0.5 ↑"),
    ("iou_box", "CC-box IoU ↑"),
    ("average_drop", "Avg drop % ↓"),
    ("increase_in_confidence", "Incr. conf. % ↑"),
    ("deletion_auc", "Deletion AUC ↓"),
    ("insertion_auc", "Insertion AUC ↑"),
]


def same_class_references(labels):
    """Index of the next image (cyclically) with the same label, for every image."""
    import numpy as np

    labels = np.asarray(labels)
    refs = np.empty(len(labels), np.int64)
    for i, y in enumerate(labels):
        order = np.concatenate([np.arange(i + 1, len(labels)), np.arange(0, i)])
        same = order[labels[order] == y]
        refs[i] = same[0] if same.size else i
    return refs


def methods(model, batch_size: int):
    """(name, explainer, needs references) for every method available in this checkout."""
    import fastfem
    from fastfem.explainers import MeanActivation
    from fastfem.metrics import UniformMap

    out = [
        ("FEM (xplique)", fastfem.FEM(model, batch_size=batch_size), False),
        ("FEM (original)", fastfem.FEM(model, batch_size=batch_size, variant="original"), False),
        ("FEM (gradcam)", fastfem.FEM(model, batch_size=batch_size, variant="gradcam"), False),
    ]
    missing = []
    if hasattr(fastfem, "MLFEM"):
        out.append(("MLFEM (mean)", fastfem.MLFEM(model, batch_size=batch_size), False))
    else:
        missing.append("MLFEM")
    if hasattr(fastfem, "FAM"):
        out.append(
            ("FAM (cosine, same-class reference)", fastfem.FAM(model, batch_size=batch_size), True)
        )
    else:
        missing.append("FAM")
    out.append(
        ("Mean of activations (baseline)", MeanActivation(model, batch_size=batch_size), False)
    )
    out.append(("Uniform map (baseline)", UniformMap(), False))
    return out, missing


def fmt(v) -> str:
    return "n/a" if v is None else f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=512, help="test images")
    parser.add_argument("--steps", type=int, default=16, help="T of deletion/insertion")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", default=str(RESULTS / "metrics_table"), help="path stem")
    args = parser.parse_args(argv)

    import numpy as np

    import fastfem
    from fastfem.sample import CLASS_NAMES, generate, load_model

    sample = generate("test", args.n)
    x, boxes = sample.images, sample.boxes
    model = load_model()
    probs = np.asarray(model.predict(x, batch_size=args.batch_size, verbose=0))
    accuracy = float((probs.argmax(-1) == sample.labels).mean())
    refs = x[same_class_references(sample.labels)]

    found, missing = methods(model, args.batch_size)
    rows = []
    for name, explainer, needs_refs in found:
        print(f"evaluating {name}", file=sys.stderr)
        start = time.perf_counter()
        result = fastfem.evaluate(
            explainer,
            x,
            boxes=boxes,
            targets=refs if needs_refs else None,
            model=None if needs_refs else model,
            steps=args.steps,
            batch_size=args.batch_size,
        )
        summary = result.summary()
        rows.append(
            {
                "method": name,
                "score": summary["config"]["score"],
                "means": summary["means"],
                "finite": summary["finite"],
                "seconds": round(time.perf_counter() - start, 2),
            }
        )

    result = {
        "dataset": f"bundled sample, test split, first {args.n} images, 64x64, "
        f"{len(CLASS_NAMES)} classes",
        "model": "bundled sample CNN (last_conv 16x16x64)",
        "model_accuracy": accuracy,
        "targets": "predicted class (FAM: similarity to a same-class reference image)",
        "settings": {
            "threshold": 0.5,
            "normalize": "relu_minmax",
            "ties": "mean",
            "steps": args.steps,
            "baseline": 0.0,
        },
        "missing_methods": missing,
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))

    header = "| Method | " + " | ".join(title for _, title in COLUMNS) + " |"
    lines = [
        f"{args.n} test images of the bundled sample (64x64, ground-truth boxes), bundled CNN "
        f"(accuracy {accuracy:.3f}); targets = predicted class; maps ReLU + min-max normalised; "
        f"deletion/insertion with T = {args.steps} steps, black baseline.",
        "",
        header,
        "|" + "---|" * (len(COLUMNS) + 1),
    ]
    for row in rows:
        cells = [fmt(row["means"].get(key)) for key, _ in COLUMNS]
        lines.append(f"| {row['method']} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        "FAM's faithfulness columns score the cosine similarity to the reference, not a class "
        "probability. The uniform map's localisation scores are the mean box area fraction "
        "(chance level)."
    )
    if missing:
        lines.append(f"Not in this checkout, so not in the table: {', '.join(missing)}.")
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
