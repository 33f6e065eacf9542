"""Option types and option groups shared by the ``fastfem`` subcommands."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from fastfem.data.fit import FITS
from fastfem.data.preprocess import PREPROCESS
from fastfem.explainers.method import Method, Setting
from fastfem.explainers.registry import METHODS, check_settings


def bounded(kind: type, low: float, what: str, strict: bool = False) -> Callable[[str], Any]:
    """An argparse type: ``kind(text)``, finite and ``>= low`` (``> low`` when ``strict``),
    else a usage error expecting ``what``."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = float("nan")
        if not ((value > low) if strict else (value >= low)) or value == float("inf"):
            raise argparse.ArgumentTypeError(f"expected {what}; got {text!r}")
        return value

    parse.__name__ = what
    return parse


positive_int = bounded(int, 1, "a positive integer")
non_negative_int = bounded(int, 0, "an integer >= 0")
positive_seconds = bounded(float, 0, "a positive number of seconds", strict=True)


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


def layer_list_arg(text: str) -> list[str | int]:
    """``--layer``: one layer or several comma-separated (multi-layer methods), each a name or
    an int index."""
    layers = [layer_arg(t.strip()) for t in text.split(",") if t.strip()]
    if not layers:
        raise argparse.ArgumentTypeError(f"expected a layer name or index; got {text!r}")
    return layers


def setting_type(setting: Setting) -> Callable[[str], Any]:
    """A method setting's parser as an argparse type (its ValueError -> a usage error)."""

    def parse(text: str) -> Any:
        try:
            return setting.parse(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    parse.__name__ = setting.name
    return parse


def add_method_options(
    p: argparse.ArgumentParser, methods: Sequence[Method], extra: Mapping[str, str] = {}
) -> None:
    """``--method`` (one of ``methods``, the first the default, or a name of ``extra``: name ->
    help), ``--layer`` and every setting of those methods (one option per setting name;
    default: the method's own), from the registry (`fastfem.explainers.registry`)."""
    helps = {**{m.name: m.summary for m in methods}, **extra}
    p.add_argument(
        "--method",
        choices=list(helps),
        default=methods[0].name,
        help="; ".join(f"{name}: {text}" for name, text in helps.items()),
    )
    p.add_argument(
        "--layer",
        type=layer_list_arg,
        default=None,
        help="explained layer (name or index; default: the last conv layer); multi-layer "
        "methods (mlfem): comma-separated layers (default: the last conv of each stage)",
    )
    seen: set[str] = set()
    for setting in (s for m in methods for s in m.settings):
        if setting.name in seen:
            continue
        seen.add(setting.name)
        p.add_argument(
            "--" + setting.name.replace("_", "-"),
            dest=setting.name,
            type=setting_type(setting),
            choices=setting.choices,
            default=None,
            help=f"{setting.help}; default {setting.default}",
        )


def method_settings(
    args: argparse.Namespace, method: Method, given_only: bool = False
) -> dict[str, Any]:
    """``method``'s settings from the command line (not given: the default; with
    ``given_only`` left out); a ValueError naming an option given that ``method`` does not
    use."""
    given = {s.name: getattr(args, s.name) for m in METHODS for s in m.settings}
    values = check_settings(method, given, spell=lambda name: "--" + name.replace("_", "-"))
    return {k: v for k, v in values.items() if given[k] is not None} if given_only else values


def add_fit_option(p: argparse.ArgumentParser) -> None:
    """``--fit``, the same in every verb."""
    p.add_argument(
        "--fit",
        choices=FITS,
        default="error",
        help="images whose size or colour channels are not the model's: error (default: "
        "refused, naming size and mode), squash (resize), crop (shorter side to size, central "
        "crop) or pad (longer side to size, centred, zero padding)",
    )


def add_run_options(p: argparse.ArgumentParser, verb: str) -> None:
    """Batching, preprocessing, ``--fit``, ``--limit``, ``--quiet`` and ``--out``, shared by
    ``explain`` and ``evaluate``."""
    p.add_argument("--batch-size", type=positive_int, default=256)
    p.add_argument(
        "--preprocess",
        choices=PREPROCESS,
        default="unit",
        help="the model's input preprocessing (unit = pixels/255; raw = 0-255; caffe/torch/tf "
        "= keras.applications' imagenet_utils modes)",
    )
    add_fit_option(p)
    p.add_argument(
        "--limit", type=positive_int, default=None, help=f"{verb} only the first N images"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--out", required=True, help="output folder")
