"""``fastfem explain``: FEM / FAM / MLFEM maps, overlays and a summary for a set of images."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from fastfem.cli.options import add_method_options, layer_arg

#: What the ``images`` argument of ``explain`` and ``evaluate`` accepts (`fastfem.data.sources`).
IMAGES_HELP = (
    "image folder, .npy, .npz, TFRecord file, or a glob of folders / TFRecord shards "
    "(default: the bundled sample)"
)


def load_explain_inputs(
    images: str | None, model_input_shape: tuple, fit: str, limit: int | None = None
) -> tuple[np.ndarray, list[str], list[str | None], str]:
    """The first ``limit`` images of ``images`` (None: the bundled sample's test split) read
    through `fastfem.data.sources.read_images` and fitted to the model by ``fit``: float32 in
    [0, 1] (the model's preprocessing runs on the device, `preprocess_on_device`), their ids,
    labels and the source's description."""
    from fastfem.data.sources import ReadOptions, read_images, unit_float

    x, ids, labels, what = read_images(images, tuple(model_input_shape), ReadOptions(fit), limit)
    return unit_float(x), ids, labels, what


def preprocess_on_device(explainer: Any, preprocess: str) -> None:
    """Put ``preprocess`` (`fastfem.data.preprocess`) in front of ``explainer``'s extractor, so
    it runs inside every jitted step (not on the host); explainers without one are unchanged."""
    from fastfem.data.preprocess import with_preprocessing

    if getattr(explainer, "extractor", None) is not None:
        explainer.extractor = with_preprocessing(explainer.extractor, preprocess)


def _make_explainer(args: argparse.Namespace, model: str):
    """The explainer of ``--method`` with its command-line options."""
    from fastfem import FAM, FEM, MLFEM

    if args.method != "fam" and args.references is not None:
        raise ValueError("--references is only used with --method fam")
    if args.method != "mlfem" and args.layers is not None:
        raise ValueError("--layers is only used with --method mlfem (use --layer otherwise)")
    if args.method == "fem":
        return FEM(
            model, batch_size=args.batch_size, conv_layer=args.layer, k=args.k, variant=args.variant
        )
    if args.method == "fam":
        return FAM(
            model, conv_layer=args.layer, similarity=args.similarity, batch_size=args.batch_size
        )
    if args.layer is not None:
        raise ValueError(
            "--method mlfem takes --layers NAME,NAME,... (default: the last conv "
            "layer of each resolution stage), not --layer"
        )
    layers = None if args.layers is None else [layer_arg(t) for t in args.layers.split(",") if t]
    return MLFEM(
        model,
        layers=layers,
        fusion=args.fusion,
        k=args.k,
        variant=args.variant,
        batch_size=args.batch_size,
    )


def _explain_fam(fam, args, x, ids) -> tuple[np.ndarray, list[dict], str]:
    """FAM maps of each image vs its reference (``--references``, paired one to one) or, by
    default, vs its nearest neighbour among the other images (leave-one-out retrieval)."""
    if args.references is not None:
        r, r_ids, _, _ = load_explain_inputs(
            args.references, fam.extractor.input_shape, args.fit, args.limit
        )
        maps = fam.explain(x, r, progress=not args.quiet)
        sims, refs, how = fam.last_similarities, list(r_ids), "references (paired one to one)"
    else:
        res = fam.explain_retrieval(x, x, top_k=1, exclude_self=True, progress=not args.quiet)
        maps, sims = res.maps[:, 0], res.similarities[:, 0]
        refs, how = [ids[i] for i in res.indices[:, 0]], "nearest neighbour among the others"
    pairs = [
        {"id": i, "reference": r, "similarity": float(s)}
        for i, r, s in zip(ids, refs, sims, strict=True)
    ]
    return maps, pairs, how


def cmd_explain(args: argparse.Namespace) -> int:
    from fastfem.integrations.overlay import save_overlay_grid

    if args.model is None:
        from fastfem.sample import MODEL_PATH

        model, model_name = str(MODEL_PATH), "bundled sample CNN"
    else:
        model, model_name = args.model, args.model
    explainer = _make_explainer(args, model)
    shape = explainer.extractor.input_shape
    x, ids, _, source = load_explain_inputs(args.images, shape, args.fit, args.limit)
    preprocess_on_device(explainer, args.preprocess)
    out = Path(args.out)
    start = time.perf_counter()
    method_info: dict = {}
    outputs = {"maps": "maps.npy", "ids": "ids.json"}
    if args.method == "fam":
        maps, pairs, how = _explain_fam(explainer, args, x, ids)
        method_info = {"similarity": args.similarity, "pooling": "gap", "reference": how}
    else:
        maps = explainer.explain(x, progress=not args.quiet)
        method_info = {"variant": args.variant, "k": args.k}
        if args.method == "mlfem":
            method_info["fusion"] = args.fusion
    seconds = time.perf_counter() - start
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "maps.npy", maps)
    (out / "ids.json").write_text(json.dumps(ids))
    if args.method == "fam":
        (out / "pairs.json").write_text(json.dumps(pairs, indent=1))
        outputs["pairs"] = "pairs.json"
    grid = save_overlay_grid(x, maps, out / "overlay.png", titles=ids)
    outputs["overlay"] = grid.name
    layers = getattr(explainer, "layer_names", None)
    summary = {
        "source": source,
        "model": model_name,
        "method": args.method,
        "layer": list(layers) if args.method == "mlfem" else explainer.layer_name,
        **method_info,
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
    p.add_argument("--method", choices=["fem", "fam", "mlfem"], default="fem")
    p.add_argument("--references", help="fam: reference images, paired one to one")
    add_method_options(p, "explain")
    p.set_defaults(func=cmd_explain)
