#!/usr/bin/env python
"""What the explanation metrics cost, compared with the explanation itself.

On the bundled sample (test split, 64x64 images) and the bundled CNN: the FEM explanation of N
images (`fastfem.FEM.explain`, fused jitted step: activations, kernel, bicubic resize, fetch)
against `fastfem.evaluation.Evaluator` on the same images with precomputed maps, for

* the on-device localisation metrics (pointing game, energy pointing game, IoU@0.5; one step),
* the host-side largest-connected-component box IoU (SciPy),
* average drop + increase in confidence (one forward pass over ``x`` and ``x * L``),
* all of the above together, with precomputed maps (two stages: explain, then metrics) and
  fused (`Evaluator` with the model: one step computes the FEM maps from the same forward pass
  that gives the base scores, then the metrics; its metrics' share is reported as the fused
  time minus the explanation alone),
* deletion and insertion for several step counts T (``T + 1`` forward passes per image).

Every number is the best of ``--repeats`` warm runs (compilation excluded; interleaved so that
load on a shared machine hits them alike). Writes benchmarks/results/metrics_cost.{json,md}.

Usage::

    python benchmarks/bench_metrics.py                  # N = 512, T in 8 16 32
    python benchmarks/bench_metrics.py --n 128 --repeats 3 --steps 8 16
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

RESULTS = Path(__file__).resolve().parent / "results"
FUSED = "fused: explanation + all of the above in one step"

CHEAP = {
    "localisation (PG + energy PG + IoU@0.5)": ["pointing_game", "energy_pointing_game", "iou"],
    "largest-CC box IoU (host, SciPy)": ["iou_box"],
    "average drop + increase in confidence": ["average_drop", "increase_in_confidence"],
    "all of the above": [
        "pointing_game",
        "energy_pointing_game",
        "iou",
        "iou_box",
        "average_drop",
        "increase_in_confidence",
    ],
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=512, help="images (sample test split)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--max-images", type=int, default=256, help="images per curve pass")
    parser.add_argument("--out", default=str(RESULTS / "metrics_cost"), help="path stem")
    args = parser.parse_args(argv)

    import jax

    import fastfem
    from fastfem.evaluation import Evaluator
    from fastfem.sample import generate, load_model

    sample = generate("test", args.n)
    x, boxes = sample.images, sample.boxes
    model = load_model()
    fem = fastfem.FEM(model, batch_size=args.batch_size)
    maps = fem.explain(x)

    jobs: dict[str, callable] = {"explanation (FEM xplique)": lambda: fem.explain(x)}
    for name, metrics in CHEAP.items():
        ev = Evaluator(fem, metrics, model=model, batch_size=args.batch_size)
        jobs[name] = lambda ev=ev: ev(x, boxes=boxes, maps=maps)
    fused = Evaluator(fem, CHEAP["all of the above"], model=model, batch_size=args.batch_size)
    assert fused.fused
    jobs[FUSED] = lambda: fused(x, boxes=boxes)
    for t in args.steps:
        for mode in ("deletion", "insertion"):
            ev = Evaluator(
                fem,
                [f"{mode}_auc"],
                model=model,
                steps=t,
                batch_size=args.batch_size,
                max_images=args.max_images,
            )
            jobs[f"{mode} AUC, T = {t}"] = lambda ev=ev: ev(x, maps=maps)

    for name, job in jobs.items():  # warm-up: compile everything
        print(f"warm-up: {name}", file=sys.stderr)
        job()
    best = {name: float("inf") for name in jobs}
    for r in range(args.repeats):
        print(f"repeat {r + 1}/{args.repeats}", file=sys.stderr)
        for name, job in jobs.items():
            start = time.perf_counter()
            job()
            best[name] = min(best[name], time.perf_counter() - start)

    base = best["explanation (FEM xplique)"]
    rows = []
    for name, seconds in best.items():
        steps = None
        if "T = " in name:
            steps = int(name.split("T = ")[1])
        if name == FUSED:  # the metrics' share: the fused step minus the explanation alone
            rows.append(
                {
                    "what": "fused: metrics' share (fused step - explanation)",
                    "seconds": round(seconds - base, 4),
                    "ms_per_image": round(1000 * (seconds - base) / args.n, 4),
                    "x_explanation": round((seconds - base) / base, 3),
                    "x_explanation_per_step": None,
                }
            )
        rows.append(
            {
                "what": name,
                "seconds": round(seconds, 4),
                "ms_per_image": round(1000 * seconds / args.n, 4),
                "x_explanation": round(seconds / base, 3),
                "x_explanation_per_step": None
                if steps is None
                else round(seconds / base / steps, 3),
            }
        )
    result = {
        "n_images": args.n,
        "image_shape": list(x.shape[1:]),
        "batch_size": args.batch_size,
        "max_images_per_curve_pass": args.max_images,
        "repeats": args.repeats,
        "device": str(jax.devices()[0].device_kind),
        "n_devices": jax.device_count(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    lines = [
        f"Metric cost vs the FEM explanation: {args.n} sample images {tuple(x.shape[1:])}, "
        f"batch {args.batch_size}, {result['device']} x{result['n_devices']} "
        f"({result['cpu_count']} CPUs), best of {args.repeats} warm runs.",
        "",
        "| what | s | ms / image | x explanation | x explanation per step |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        per_step = "" if row["x_explanation_per_step"] is None else row["x_explanation_per_step"]
        lines.append(
            f"| {row['what']} | {row['seconds']} | {row['ms_per_image']} | "
            f"{row['x_explanation']} | {per_step} |"
        )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
