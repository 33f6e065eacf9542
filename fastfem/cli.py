"""The ``fastfem`` command line: ``fastfem explain`` (more subcommands join here)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from fastfem.data.decode import BACKGROUNDS, DEFAULT_MAX_PIXELS
from fastfem.data.fit import FITS
from fastfem.data.preprocess import PREPROCESS
from fastfem.kernels.fam import SIMILARITIES
from fastfem.kernels.fem import VARIANTS


def positive_int(text: str) -> int:
    """A command-line count that must be a positive integer."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """A command-line index that must be an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0; got {text!r}")
    return value


def positive_seconds(text: str) -> float:
    """A command-line duration: a finite number of seconds > 0."""
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds; got {text!r}")
    return value


def finite_k(text: str) -> float:
    """FEM's k on the command line: a finite number >= 0."""
    from fastfem.kernels.fem import check_k

    try:
        return check_k(float(text))
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def enable_persistent_compile_cache(path: str | None = None) -> str | None:
    """Turn on JAX's persistent compilation cache (each CLI run is a new process).

    ``path`` default: ``$FASTFEM_COMPILE_CACHE`` or ``~/.cache/fastfem/jax``; the variable set
    to ``0``/``off`` disables it. Returns the folder, or None when disabled or unavailable.
    """
    import os

    import jax

    env = os.environ.get("FASTFEM_COMPILE_CACHE")
    if env is not None and env.strip().lower() in ("0", "off", "false", "no", ""):
        return None
    folder = Path(path or env or Path.home() / ".cache" / "fastfem" / "jax")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", str(folder))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    except (OSError, AttributeError, ValueError):
        return None
    return str(folder)


def model_inputs(x: np.ndarray, preprocess: str) -> np.ndarray:
    """Images in [0, 1] as the model wants them (`fastfem.data.preprocess`; ``unit``: unchanged)."""
    if preprocess == "unit":
        return x
    from fastfem.data.preprocess import preprocess_fn

    return np.asarray(preprocess_fn(preprocess)(x), np.float32)


def layer_arg(text: str) -> str | int:
    """A layer given on the command line: an int index if it parses as one, else a name."""
    try:
        return int(text)
    except ValueError:
        return text


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
        r, r_ids, _ = load_explain_inputs(args.references, fam.extractor.input_shape, args.fit)
        if args.limit is not None:
            r, r_ids = r[: args.limit], r_ids[: args.limit]
        maps = fam.explain(x, model_inputs(r, args.preprocess), progress=not args.quiet)
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
    x, ids, source = load_explain_inputs(args.images, explainer.extractor.input_shape, args.fit)
    if args.limit is not None:
        x, ids = x[: args.limit], ids[: args.limit]
    out = Path(args.out)
    start = time.perf_counter()
    method_info: dict = {}
    outputs = {"maps": "maps.npy", "ids": "ids.json"}
    xm = model_inputs(x, args.preprocess)
    if args.method == "fam":
        maps, pairs, how = _explain_fam(explainer, args, xm, ids)
        method_info = {"similarity": args.similarity, "pooling": "gap", "reference": how}
    else:
        maps = explainer.explain(xm, progress=not args.quiet)
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
        k=args.k,
        variant=args.variant,
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
        fusion=args.fusion,
        references=args.references,
        preprocess=args.preprocess,
        allow_new_source=args.allow_new_source,
        image_column=args.image_column,
        label_column=args.label_column,
        label_field=args.label_field,
        **({} if args.reliance_sample is None else {"reliance_sample": args.reliance_sample}),
    )
    print(json.dumps(summary.to_dict(), indent=2))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from fastfem.audit.report.page import write_report

    path = write_report(args.store, out=args.out, top=args.top)
    print(path)
    return 0


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
    from fastfem.metrics import MeanActivation, UniformMap

    if args.model is None:
        from fastfem.sample import MODEL_PATH

        model, model_name = str(MODEL_PATH), "bundled sample CNN"
    else:
        model, model_name = args.model, args.model
    if args.method == "mean":
        explainer = MeanActivation(model, batch_size=args.batch_size, conv_layer=args.layer)
    elif args.method == "uniform":
        explainer = UniformMap()
    else:
        explainer = _make_explainer(args, model)
    shape = explainer.extractor.input_shape if hasattr(explainer, "extractor") else (None,) * 3
    labels = None
    if args.images is None:
        from fastfem.sample import generate

        sample = generate("test", args.limit)
        x, ids, source = sample.images, list(sample.ids), "bundled sample (test split)"
        boxes, labels = sample.boxes, sample.labels
    else:
        x, ids, source = load_explain_inputs(args.images, shape, args.fit)
        boxes = None
    if args.limit is not None:
        x, ids = x[: args.limit], ids[: args.limit]
    if args.boxes is not None:
        boxes = _load_array(args.boxes, "--boxes")
    if boxes is not None:
        boxes = boxes[: len(x)]
    targets = None
    if args.method == "fam":
        if args.references is not None:
            targets, _, _ = load_explain_inputs(args.references, shape, args.fit)
            targets = targets[: len(x)]
        elif labels is not None:
            targets = x[_next_same_label(labels[: len(x)])]
        else:
            raise ValueError("--method fam needs --references (reference images, one per image)")
    elif args.targets is not None:
        targets = _load_array(args.targets, "--targets")[: len(x)]
    metrics = None if args.metrics is None else [m for m in args.metrics.split(",") if m]
    evaluator = Evaluator(
        explainer,
        metrics,
        model=None if args.method == "fam" else model,
        threshold=args.threshold,
        normalize=args.normalize,
        steps=args.steps,
        activation=args.activation,
        batch_size=min(args.batch_size, 64),
    )
    if args.method == "fam":
        targets = model_inputs(targets, args.preprocess)
    result = evaluator(
        model_inputs(x, args.preprocess), boxes=boxes, targets=targets, progress=not args.quiet
    )
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


def _shape_arg(text: str) -> tuple[int, int, int]:
    """``H,W,C`` -> (H, W, C)."""
    parts = [int(t) for t in text.replace("x", ",").split(",") if t]
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"expected H,W,C; got {text!r}")
    return parts[0], parts[1], parts[2]


def cmd_convert(args: argparse.Namespace) -> int:
    from fastfem.converters import load, save_extractor

    layers = None
    if args.layer:
        layers = [layer_arg(t) for t in args.layer.split(",") if t]
        layers = layers[0] if len(layers) == 1 else layers
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


def add_method_options(p: argparse.ArgumentParser, verb: str) -> None:
    """The explainer's options (layer, FEM k/variant, FAM similarity, MLFEM layers/fusion),
    batching, ``--limit``, ``--quiet`` and ``--out``, shared by ``explain`` and ``evaluate``."""
    p.add_argument("--layer", type=layer_arg, default=None, help="layer name or index")
    p.add_argument("--k", type=finite_k, default=2.0, help="k of the k-sigma threshold")
    p.add_argument("--variant", choices=VARIANTS, default="xplique")
    p.add_argument("--similarity", choices=SIMILARITIES, default="cosine", help="fam")
    p.add_argument("--layers", help="mlfem: comma-separated layers (default: one per stage)")
    p.add_argument("--fusion", choices=["mean", "product"], default="mean", help="mlfem")
    p.add_argument("--batch-size", type=positive_int, default=256)
    p.add_argument(
        "--preprocess",
        choices=PREPROCESS,
        default="unit",
        help="the model's input preprocessing (unit = pixels/255; raw = 0-255; caffe/torch/tf "
        "= keras.applications' imagenet_utils modes)",
    )
    p.add_argument(
        "--fit",
        choices=FITS,
        default="squash",
        help="image files of another size: squash (resize, default), crop (shorter side to "
        "size, central crop), pad (longer side to size, zero padding) or error",
    )
    p.add_argument(
        "--limit", type=positive_int, default=None, help=f"{verb} only the first N images"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--out", required=True, help="output folder")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastfem", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

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
    p.add_argument("--method", choices=["fem", "fam", "mlfem"], default="fem")
    p.add_argument("--references", help="fam: reference images, paired one to one")
    add_method_options(p, "explain")
    p.set_defaults(func=cmd_explain)

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
    a.add_argument(
        "--method",
        choices=["fem", "mlfem", "fam"],
        default="fem",
        help="fem (default); mlfem: fused multi-layer FEM map at the input size; fam: each image "
        "against its class prototype (mean embedding), see --references",
    )
    a.add_argument(
        "--layer",
        type=layer_arg,
        default=None,
        help="explained layer (name or index); mlfem: comma-separated layers (default: the "
        "last conv of each resolution stage)",
    )
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
    a.add_argument(
        "--fusion", choices=["mean", "product"], default="mean", help="mlfem fusion rule"
    )
    a.add_argument("--k", type=finite_k, default=2.0)
    a.add_argument("--variant", choices=VARIANTS, default="xplique")
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
    a.add_argument(
        "--fit",
        choices=FITS,
        default="error",
        help="images whose size or colour channels are not the model's: error (default: an "
        "error row naming size and mode), squash (resize), crop (shorter side to size, central "
        "crop) or pad (longer side to size, centred, zero padding)",
    )
    a.add_argument(
        "--resize", dest="fit", action="store_const", const="squash", help="= --fit squash"
    )
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
        "for one class (default: fastfem.audit.reliance.SAMPLE, 320; 0: no reliance test)",
    )
    a.add_argument("--quiet", action="store_true", help="no progress bar")
    a.add_argument("--out", required=True, help="result store folder")
    a.set_defaults(func=cmd_audit)

    r = sub.add_parser("report", help="self-contained HTML report of an audit's result store")
    r.add_argument("store", help="the audit's --out folder")
    r.add_argument("--out", help="HTML file (default: STORE/report.html)")
    r.add_argument("--top", type=positive_int, default=24, help="flagged images in the gallery")
    r.set_defaults(func=cmd_report)

    e = sub.add_parser(
        "evaluate",
        help="explanation quality metrics (default: the bundled sample, its boxes and model)",
        description="Localisation (pointing game, energy pointing game, IoU@t, component-box "
        "IoU; need boxes) and faithfulness (average drop, increase in confidence, deletion and "
        "insertion AUC; need the model) of a method's maps. Writes metrics.json (means, "
        "settings), per_sample.csv and curves.npz. FAM is scored by the similarity to its "
        "reference (--references; on the bundled sample, the next image of the same class).",
    )
    e.add_argument("images", nargs="?", help="image folder, .npy or .npz (default: bundled)")
    e.add_argument("--model", help=".keras/.h5 model file (default: the bundled CNN)")
    e.add_argument("--method", choices=["fem", "fam", "mlfem", "mean", "uniform"], default="fem")
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
    add_method_options(e, "evaluate")
    e.set_defaults(func=cmd_evaluate)

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
        "--layer", help="layer name/index, or several comma-separated (default: last conv)"
    )
    c.add_argument("--out", required=True, help="output directory")
    c.add_argument("--input-shape", type=_shape_arg, help="H,W,C when the model leaves it free")
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
    c.add_argument("--k", type=finite_k, default=2.0, help="--tf-savedmodel: FEM's k")
    c.add_argument("--variant", choices=VARIANTS, default="xplique", help="--tf-savedmodel")
    c.add_argument(
        "--unsafe",
        action="store_true",
        help="allow model files that execute stored code (Lambda layers): trusted only",
    )
    c.set_defaults(func=cmd_convert)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line. As an application (not a library), it picks Keras's JAX backend for
    its own process unless ``KERAS_BACKEND`` says otherwise: Keras models then run natively, the
    fastest path. Keras reads the variable at its first import, which no module imported by
    ``fastfem.cli`` does."""
    os.environ.setdefault("KERAS_BACKEND", "jax")
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError, TypeError) as err:
        one_line = " ".join(str(err).split())  # a message quoting a library's lines
        print(f"fastfem {args.command}: error: {one_line}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
