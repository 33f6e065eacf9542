"""The ``fastfem`` command line: ``fastfem explain`` (more subcommands join here)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from .kernels.fem import VARIANTS


def layer_arg(text: str) -> str | int:
    """A layer given on the command line: an int index if it parses as one, else a name."""
    try:
        return int(text)
    except ValueError:
        return text


def load_explain_inputs(
    images: str | None, model_input_shape: tuple
) -> tuple[np.ndarray, list[str], str]:
    """The images to explain and their ids: a user source, or the bundled sample's test split."""
    if images is None:
        from .sample import generate

        sample = generate("test")
        return sample.images, list(sample.ids), "bundled sample (test split)"
    from .image_files import load_images

    h, w, c = model_input_shape
    size = (h, w) if h is not None and w is not None else None
    x, ids = load_images(images, size=size, channels=c or 3)
    return x, ids, str(images)


def cmd_explain(args: argparse.Namespace) -> int:
    from . import FEM
    from .overlay import save_overlay_grid

    if args.model is None:
        from .sample import MODEL_PATH

        model, model_name = str(MODEL_PATH), "bundled sample CNN"
    else:
        model, model_name = args.model, args.model
    fem = FEM(
        model, batch_size=args.batch_size, conv_layer=args.layer, k=args.k, variant=args.variant
    )
    x, ids, source = load_explain_inputs(args.images, fem.extractor.input_shape)
    if args.limit is not None:
        x, ids = x[: args.limit], ids[: args.limit]
    start = time.perf_counter()
    maps = fem.explain(x, progress=not args.quiet)
    seconds = time.perf_counter() - start
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "maps.npy", maps)
    (out / "ids.json").write_text(json.dumps(ids))
    grid = save_overlay_grid(x, maps, out / "overlay.png", titles=ids)
    summary = {
        "source": source,
        "model": model_name,
        "layer": fem.layer_name,
        "variant": args.variant,
        "k": args.k,
        "images": int(len(x)),
        "map_shape": list(maps.shape[1:]),
        "seconds": round(seconds, 3),
        "images_per_second": round(len(x) / seconds, 1),
        "outputs": {"maps": "maps.npy", "ids": "ids.json", "overlay": grid.name},
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastfem", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "explain",
        help="FEM maps for a set of images (default: the bundled sample and model)",
        description="Writes maps.npy (N, H, W, 1), ids.json, overlay.png and summary.json.",
    )
    p.add_argument("images", nargs="?", help="image folder, .npy or .npz (default: bundled)")
    p.add_argument("--model", help=".keras/.h5 model file (default: the bundled CNN)")
    p.add_argument("--layer", type=layer_arg, default=None, help="layer name or index")
    p.add_argument("--k", type=float, default=2.0, help="k of the k-sigma threshold")
    p.add_argument("--variant", choices=VARIANTS, default="xplique")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--limit", type=int, default=None, help="explain only the first N images")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=cmd_explain)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, NotADirectoryError, TypeError) as err:
        print(f"fastfem {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
