"""``fastfem audit``: a dataset into a resumable result store."""

from __future__ import annotations

import argparse
import json
import sys

from fastfem.cli.options import (
    add_fit_option,
    add_method_options,
    enable_persistent_compile_cache,
    method_settings,
    non_negative_int,
    positive_int,
    positive_seconds,
)
from fastfem.data.decode import BACKGROUNDS, DEFAULT_MAX_PIXELS
from fastfem.data.preprocess import PREPROCESS
from fastfem.explainers.registry import METHODS, method_named

#: The methods the audit runs (those with audit hooks).
AUDITED = tuple(m for m in METHODS if m.audit is not None)


def cmd_audit(args: argparse.Namespace) -> int:
    from fastfem.audit import audit

    distributed: bool | dict = False
    given = [args.coordinator, args.num_processes, args.process_id]
    if any(v is not None for v in given):
        if any(v is None for v in given):
            raise ValueError("--coordinator, --num-processes and --process-id go together")
        distributed = {
            "coordinator_address": args.coordinator,
            "num_processes": args.num_processes,
            "process_id": args.process_id,
            "initialization_timeout": args.peer_timeout,
        }
    elif args.distributed:
        distributed = {"initialization_timeout": args.peer_timeout}
    enable_persistent_compile_cache()  # each CLI run is a new process: reuse compiled steps
    sources = args.source or [None]
    summary = audit(
        sources[0] if len(sources) == 1 else sources,
        model=args.model,
        out=args.out,
        method=args.method,
        layer=args.layer,
        batch_size=args.batch_size,
        part_size=args.part_size,
        resume=args.resume,
        fit=args.fit,
        max_pixels=args.max_pixels,
        alpha=args.alpha,
        distributed=distributed,
        progress=not args.quiet and sys.stderr.isatty(),
        threads=args.threads,
        boxes=args.boxes,
        references=args.references,
        preprocess=args.preprocess,
        allow_new_source=args.allow_new_source,
        image_column=args.image_column,
        label_column=args.label_column,
        label_field=args.label_field,
        **method_settings(args, method_named(args.method), given_only=True),
        **({} if args.reliance_sample is None else {"reliance_sample": args.reliance_sample}),
    )
    print(json.dumps(summary.to_dict(), indent=2))
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """The ``audit`` subcommand's options."""
    a = sub.add_parser(
        "audit",
        help="audit a dataset into a resumable result store (default: the bundled sample)",
        description="Streams SOURCE through the jitted explainer into DIR: Parquet parts (one "
        "row per input, status ok/error), feature-resolution maps, manifest.json.",
    )
    a.add_argument(
        "source",
        nargs="*",
        help="image folder(s), .npy/.npz, TFRecord file(s), a Hugging Face dataset (.parquet/"
        ".arrow files, a save_to_disk folder) or WebDataset .tar shards; quoted globs expand "
        "(e.g. 'data/train-*.tfrecord')",
    )
    a.add_argument("--model", help=".keras/.h5 model file (default: the bundled CNN)")
    add_method_options(a, AUDITED)
    a.add_argument(
        "--boxes",
        help="ground-truth boxes: CSV (columns id,x0,y0,x1,y1 in model-input pixels, x1/y1 "
        "exclusive, several rows per id = union) or JSON {id: [[x0,y0,x1,y1], ...]}, or "
        "'sample' for the bundled sample's boxes; adds pointing_game, energy_pointing_game, "
        "iou and the outside-box flag",
    )
    a.add_argument(
        "--references",
        help="fam: a labelled source (folder with class sub-folders, .npz with labels) whose "
        "class prototypes the images are explained against (default: the audited source)",
    )
    a.add_argument("--batch-size", type=positive_int, default=256)
    a.add_argument(
        "--preprocess",
        choices=PREPROCESS,
        default="unit",
        help="the model's input preprocessing, on the device: unit (pixels/255, default), raw "
        "(0-255), caffe (ResNet50/VGG), torch (DenseNet), tf (MobileNet/Inception/Xception)",
    )
    a.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="host decoding threads (default: half the CPU cores, 1 to 8, when the model runs "
        "on the CPU; every core, 1 to 32, on an accelerator)",
    )
    add_fit_option(a)
    a.add_argument(
        "--max-pixels",
        type=positive_int,
        default=DEFAULT_MAX_PIXELS,
        help="pixel budget per image: larger images are error rows (JPEGs count after "
        f"reduced-size decoding; default {DEFAULT_MAX_PIXELS:,})",
    )
    a.add_argument(
        "--alpha",
        choices=tuple(BACKGROUNDS),
        default="black",
        help="background that transparent images are composited on (default black)",
    )
    a.add_argument(
        "--image-column",
        help="Hugging Face dataset: the image column (default: its Image feature); WebDataset: "
        "the image member's extension (default: the one with an image extension)",
    )
    a.add_argument(
        "--label-column",
        help="Hugging Face dataset: the label column (default: its ClassLabel feature); "
        "WebDataset: the label member's extension (default: cls, else txt, else json)",
    )
    a.add_argument("--label-field", help="WebDataset: the .json label's field (default: label)")
    a.add_argument("--resume", action="store_true", help="continue an interrupted audit")
    a.add_argument(
        "--allow-new-source",
        action="store_true",
        help="with --resume: add a source that lacks inputs already committed (another source) "
        "to the store; without it such a resume is refused",
    )
    a.add_argument(
        "--distributed",
        action="store_true",
        help="jax.distributed.initialize() from the cluster environment",
    )
    a.add_argument("--coordinator", help="host:port of process 0 (multi-process runs)")
    a.add_argument("--num-processes", type=positive_int)
    a.add_argument("--process-id", type=non_negative_int)
    a.add_argument(
        "--peer-timeout",
        type=positive_seconds,
        default=60.0,
        help="multi-process runs: seconds within which a missing peer or a duplicated "
        "process id is reported (default 60)",
    )
    a.add_argument(
        "--part-size",
        type=positive_int,
        default=2048,
        help="rows per committed part: every part holds exactly this many (batches are split), "
        "the last part of a run the rest (default 2048)",
    )
    a.add_argument(
        "--reliance-sample",
        type=non_negative_int,
        help="rows of the reliance test's occlusion sweep: which regions the model relies on "
        "for one class (default: 80 per predicted class, 320 to 2048; 0: no reliance test)",
    )
    a.add_argument("--quiet", action="store_true", help="no progress bar")
    a.add_argument("--out", required=True, help="result store folder")
    a.set_defaults(func=cmd_audit)
