"""``fastfem convert``: a model to a portable jax.export artifact or a TF SavedModel of FEM."""

from __future__ import annotations

import argparse
import json

from fastfem.cli.options import layer_list_arg, setting_type, shape_arg
from fastfem.explainers.fem import FEM_SETTINGS


def cmd_convert(args: argparse.Namespace) -> int:
    from fastfem.converters import load, save_extractor

    layers = args.layer
    if layers is not None and len(layers) == 1:
        layers = layers[0]
    options = {"signature": args.signature} if args.signature else {}
    extractor = load(
        args.model,
        layers,
        include_output=args.include_output,
        input_shape=args.input_shape,
        method=args.method,
        safe_mode=not args.unsafe,
        **options,
    )
    summary = {
        "model": args.model,
        "path": extractor.source,
        "layers": list(extractor.layer_names),
        "out": args.out,
    }
    if args.tf_savedmodel:
        from fastfem.explainers import FEM
        from fastfem.integrations.tf_savedmodel import export_savedmodel

        if args.method == "auto" and "call_tf" in extractor.source:
            raise ValueError("--tf-savedmodel needs a tf2jax or native path, not call_tf")
        fem = FEM(extractor, k=args.k, variant=args.variant)
        export_savedmodel(fem, args.out, input_shape=args.input_shape)
        summary["format"] = "TF SavedModel of the FEM explainer (jax2tf)"
    else:
        save_extractor(extractor, args.out, input_shape=args.input_shape)
        summary["format"] = "jax.export extractor artifact"
    print(json.dumps(summary, indent=2))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The ``convert`` subcommand's options."""
    c = sub.add_parser(
        "convert",
        help="convert a model to a portable jax.export artifact (or a TF SavedModel of FEM)",
        description="Writes OUT/ with apply.jaxexport, params.npz and extractor.json: the "
        "feature extractor of MODEL at --layer, runnable later with JAX alone (no TensorFlow), "
        "e.g. `fastfem explain --model OUT`. MODEL: .keras/.h5 file, SavedModel directory. With "
        "--tf-savedmodel, OUT is instead a TF SavedModel of the whole jitted FEM explainer "
        "(extractor + FEM + resize), callable from TensorFlow as explain(images).",
    )
    c.add_argument("model", help=".keras/.h5 file or TF SavedModel directory")
    c.add_argument(
        "--layer",
        type=layer_list_arg,
        help="layer name/index, or several comma-separated (default: last conv)",
    )
    c.add_argument("--out", required=True, help="output directory")
    c.add_argument("--input-shape", type=shape_arg, help="H,W,C when the model leaves it free")
    c.add_argument(
        "--method",
        choices=["auto", "tf2jax", "call_tf"],
        default="auto",
        help="TF models: tf2jax conversion or call_tf wrapping (default: auto)",
    )
    c.add_argument("--signature", help="SavedModel signature (default: serving_default)")
    c.add_argument("--include-output", action="store_true", help="also export the model output")
    c.add_argument(
        "--tf-savedmodel",
        action="store_true",
        help="write a TF SavedModel of the FEM explainer instead (jax2tf)",
    )
    for setting in FEM_SETTINGS:  # the FEM of --tf-savedmodel: --k, --variant
        kinds = {"type": setting_type(setting), "choices": setting.choices}
        c.add_argument("--" + setting.name, **kinds, default=setting.default, help=setting.help)
    c.add_argument(
        "--unsafe",
        action="store_true",
        help="allow model files that execute stored code (Lambda layers): trusted only",
    )
    c.set_defaults(func=cmd_convert)
