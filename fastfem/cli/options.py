"""Option types and option groups shared by the ``fastfem`` subcommands."""

from __future__ import annotations

import argparse
from pathlib import Path

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


def layer_arg(text: str) -> str | int:
    """A layer given on the command line: an int index if it parses as one, else a name."""
    try:
        return int(text)
    except ValueError:
        return text


def shape_arg(text: str) -> tuple[int, int, int]:
    """``H,W,C`` -> (H, W, C)."""
    parts = [int(t) for t in text.replace("x", ",").split(",") if t]
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"expected H,W,C; got {text!r}")
    return parts[0], parts[1], parts[2]


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
