"""``fastfem explain``: FEM / FAM / MLFEM maps, overlays and a summary for a set of images."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from fastfem.cli.options import add_method_options, add_run_options, method_settings
from fastfem.data.sources import read_images
from fastfem.explainers.registry import METHODS, make_explainer, method_named

#: What the ``images`` argument of ``explain`` and ``evaluate`` accepts (`fastfem.data.sources`).
IMAGES_HELP = (
    "image folder, .npy, .npz, TFRecord file, or a glob of folders / TFRecord shards "
    "(default: the bundled sample)"
)


def make_cli_explainer(args: argparse.Namespace, model: str, include_output: bool = False) -> Any:
    """The explainer of ``--method`` with its command-line settings, ``--layer`` and
    ``--preprocess`` (inside its extractor: on the device) (`fastfem.explainers.registry.
    make_explainer`); ``include_output``: its extractor also gives the model's scores."""
    method = method_named(args.method)
    settings = method_settings(args, method)
    return make_explainer(
        method.name,
        model,
        args.layer,
        args.batch_size,
        settings,
        include_output=include_output,
        preprocess=args.preprocess,
    )


def cmd_explain(args: argparse.Namespace) -> int:
    from fastfem.integrations.overlay import save_overlay_grid

    if args.model is None:
        from fastfem.sample import MODEL_PATH

        model, model_name = str(MODEL_PATH), "bundled sample CNN"
    else:
        model, model_name = args.model, args.model
    method = method_named(args.method)
    explainer = make_cli_explainer(args, model)
    if args.references is not None and not explainer.explains_pairs:
        raise ValueError("--references is only used by a method that explains pairs of images")
    shape = explainer.extractor.input_shape
    x, ids, _, source = read_images(args.images, shape, args.fit, args.limit)
    refs, ref_ids = None, ids
    if args.references is not None:
        refs, ref_ids, _, _ = read_images(args.references, shape, args.fit, args.limit)
    out = Path(args.out)
    start = time.perf_counter()
    maps, items, pairs = method.explain_images(explainer, x, refs, not args.quiet)
    seconds = time.perf_counter() - start
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "maps.npy", maps)
    (out / "ids.json").write_text(json.dumps(ids))
    outputs = {"maps": "maps.npy", "ids": "ids.json"}
    if pairs is not None:
        pairs = [{"id": i, **p} for i, p in zip(ids, pairs, strict=True)]
        rows = [{**p, "reference": ref_ids[p["reference"]]} for p in pairs]
        (out / "pairs.json").write_text(json.dumps(rows, indent=1))
        outputs["pairs"] = "pairs.json"
    grid = save_overlay_grid(x, maps, out / "overlay.png", titles=ids)
    outputs["overlay"] = grid.name
    summary = {
        "source": source,
        "model": model_name,
        "method": method.name,
        "layer": list(explainer.layer_names) if method.multi_layer else explainer.layer_name,
        **method.values(method_settings(args, method)),
        **items,
        "images": int(len(x)),
        "preprocess": args.preprocess,
        "map_shape": list(maps.shape[1:]),
        "seconds": round(seconds, 3),
        "images_per_second": round(len(x) / seconds, 1),
        "outputs": outputs,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The ``explain`` subcommand's options."""
    p = sub.add_parser(
        "explain",
        help="FEM / FAM / MLFEM maps for a set of images (default: the bundled sample and model)",
        description="Writes maps.npy (N, H, W, 1), ids.json, overlay.png and summary.json "
        "(and pairs.json for FAM). FAM explains each image against its --references image, or "
        "by default against its nearest neighbour among the other images (the model's pooled "
        "features at the layer as the embedding: for the bundled CNN, its 'embedding' layer).",
    )
    p.add_argument("images", nargs="?", help=IMAGES_HELP)
    p.add_argument("--model", help=".keras/.h5 model file (default: the bundled CNN)")
    p.add_argument("--references", help="fam: reference images, paired one to one")
    add_method_options(p, METHODS)
    add_run_options(p, "explain")
    p.set_defaults(func=cmd_explain)
