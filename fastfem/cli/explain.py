"""``fastfem explain``: FEM / FAM / MLFEM maps, overlays and a summary for a set of images."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from fastfem.cli.options import add_method_options, add_run_options, method_settings, model_inputs
from fastfem.explainers.registry import METHODS, make_explainer, method_named


def load_explain_inputs(
    images: str | None, model_input_shape: tuple, fit: str = "squash"
) -> tuple[np.ndarray, list[str], str]:
    """The images to explain and their ids: a user source (image files decoded by
    `fastfem.data.decode` and fitted to the model by ``fit``), or the bundled sample's test
    split."""
    if images is None:
        from fastfem.sample import generate

        sample = generate("test")
        return sample.images, list(sample.ids), "bundled sample (test split)"
    from fastfem.data.folders import load_images

    h, w, c = model_input_shape
    size = (h, w) if h is not None and w is not None else None
    x, ids = load_images(images, size=size, channels=c or 3, fit=fit)
    return x, ids, str(images)


def make_cli_explainer(args: argparse.Namespace, model: str) -> Any:
    """The explainer of ``--method`` with its command-line settings and ``--layer``
    (`fastfem.explainers.registry.make_explainer`)."""
    method = method_named(args.method)
    settings = method_settings(args, method)
    return make_explainer(method.name, model, args.layer, args.batch_size, settings)


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
    x, ids, source = load_explain_inputs(args.images, explainer.extractor.input_shape, args.fit)
    if args.limit is not None:
        x, ids = x[: args.limit], ids[: args.limit]
    refs, ref_ids = None, ids
    if args.references is not None:
        refs, ref_ids, _ = load_explain_inputs(
            args.references, explainer.extractor.input_shape, args.fit
        )
        if args.limit is not None:
            refs, ref_ids = refs[: args.limit], ref_ids[: args.limit]
        refs = model_inputs(refs, args.preprocess)
    out = Path(args.out)
    start = time.perf_counter()
    maps, items, pairs = method.explain_images(
        explainer, model_inputs(x, args.preprocess), refs, not args.quiet
    )
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
    p.add_argument("images", nargs="?", help="image folder, .npy or .npz (default: bundled)")
    p.add_argument("--model", help=".keras/.h5 model file (default: the bundled CNN)")
    p.add_argument("--references", help="fam: reference images, paired one to one")
    add_method_options(p, METHODS)
    add_run_options(p, "explain")
    p.set_defaults(func=cmd_explain)
