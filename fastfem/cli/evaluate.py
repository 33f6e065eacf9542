"""``fastfem evaluate``: localisation and faithfulness metrics of a method's maps."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from fastfem.cli.explain import IMAGES_HELP, make_cli_explainer
from fastfem.cli.options import add_method_options, add_run_options, positive_int
from fastfem.data.sources import read_images
from fastfem.explainers.registry import METHODS
from fastfem.metrics.baselines import UniformMap

#: Reference maps that are no method (`fastfem.metrics.baselines`), by ``--baseline`` name.
BASELINES = {"uniform": UniformMap}


def _next_same_label(labels: np.ndarray) -> np.ndarray:
    """For each image, the next image (cyclically) with the same label (itself if none)."""
    out = np.arange(len(labels))
    for i, y in enumerate(labels):
        order = np.r_[np.arange(i + 1, len(labels)), np.arange(0, i)]
        same = order[labels[order] == y]
        if same.size:
            out[i] = same[0]
    return out


def _load_array(path: str, what: str) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} file not found: {p}")
    if p.suffix == ".json":
        return np.asarray(json.loads(p.read_text()))
    if p.suffix == ".npy":
        return np.load(p)
    raise ValueError(f"{what}: expected a .npy or .json file; got {p.name}")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from fastfem.evaluation import Evaluator

    if args.model is None:
        from fastfem.sample import MODEL_PATH

        model, model_name = str(MODEL_PATH), "bundled sample CNN"
    else:
        model, model_name = args.model, args.model
    scoring = None  # the explainer's own extractor scores (with --preprocess on the device)
    if args.method in BASELINES:
        from fastfem.converters import load
        from fastfem.data.preprocess import with_preprocessing

        explainer = BASELINES[args.method]()
        scoring = with_preprocessing(load(model, include_output=True), args.preprocess)
    else:
        explainer = make_cli_explainer(args, model, include_output=True)
    pairs = getattr(explainer, "explains_pairs", False)
    shape = explainer.extractor.input_shape if hasattr(explainer, "extractor") else (None,) * 3
    x, ids, labels, source = read_images(args.images, shape, args.fit, args.limit)
    boxes = None
    if args.boxes is not None:
        boxes = _load_array(args.boxes, "--boxes")[: len(x)]
    elif args.images is None:
        from fastfem.data.boxes import sample_boxes

        found = sample_boxes(ids)
        boxes = np.concatenate([found[i] for i in ids])
    targets = None
    if pairs:
        if args.references is not None:
            targets, _, _, _ = read_images(args.references, shape, args.fit, len(x))
        elif args.images is None:
            targets = x[_next_same_label(np.asarray(labels))]
        else:
            raise ValueError(
                f"--method {args.method} needs --references (reference images, one per image)"
            )
    elif args.targets is not None:
        targets = _load_array(args.targets, "--targets")[: len(x)]
    metrics = None if args.metrics is None else [m for m in args.metrics.split(",") if m]
    evaluator = Evaluator(
        explainer,
        metrics,
        model=scoring,
        threshold=args.threshold,
        normalize=args.normalize,
        steps=args.steps,
        activation=args.activation,
        batch_size=min(args.batch_size, 64),
    )
    result = evaluator(x, boxes=boxes, targets=targets, progress=not args.quiet)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = list(result.per_sample)
    rows = ["id," + ",".join(names)]
    for i, id_ in enumerate(ids):
        rows.append(f"{id_}," + ",".join(f"{result.per_sample[n][i]:.6g}" for n in names))
    (out / "per_sample.csv").write_text("\n".join(rows) + "\n")
    outputs = {"summary": "metrics.json", "per_sample": "per_sample.csv"}
    if result.curves:
        np.savez(out / "curves.npz", **result.curves)
        outputs["curves"] = "curves.npz"
    summary = {
        "source": source,
        "model": model_name,
        "method": args.method,
        "images": int(len(x)),
        "preprocess": args.preprocess,
        "boxes": boxes is not None,
        **result.summary(),
        "outputs": outputs,
    }
    (out / "metrics.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The ``evaluate`` subcommand's options."""
    e = sub.add_parser(
        "evaluate",
        help="explanation quality metrics (default: the bundled sample, its boxes and model)",
        description="Localisation (pointing game, energy pointing game, IoU@t, component-box "
        "IoU; need boxes) and faithfulness (average drop, increase in confidence, deletion and "
        "insertion AUC; need the model) of a method's maps. Writes metrics.json (means, "
        "settings), per_sample.csv and curves.npz. FAM is scored by the similarity to its "
        "reference (--references; on the bundled sample, the next image of the same class).",
    )
    e.add_argument("images", nargs="?", help=IMAGES_HELP)
    e.add_argument("--model", help=".keras/.h5 model file (default: the bundled CNN)")
    e.add_argument("--boxes", help=".npy/.json xyxy boxes (N, 4) in pixels (bundled: built in)")
    e.add_argument("--targets", help=".npy/.json class indices (default: predicted class)")
    e.add_argument("--references", help="fam: reference images, paired one to one")
    e.add_argument("--metrics", help="comma-separated metric names (default: all that apply)")
    e.add_argument("--steps", type=positive_int, default=16, help="deletion/insertion steps T")
    e.add_argument("--threshold", type=float, default=0.5, help="t of IoU@t")
    e.add_argument(
        "--normalize",
        choices=["relu_minmax", "minmax", "abs_minmax", "abs_max", "none"],
        default="relu_minmax",
    )
    e.add_argument("--activation", choices=["softmax", "sigmoid"], default=None)
    add_method_options(e, METHODS, {"uniform": "the constant map (chance level)"})
    add_run_options(e, "evaluate")
    e.set_defaults(func=cmd_evaluate)
