#!/usr/bin/env python
"""Decoding photo-sized JPEGs, with and without JPEG draft, and the JPEG audit end to end.

Three measurements, each timed in interleaved repetitions (A B, B A, ...) in one process, so
the ratios compare neighbours in time (`benchmarks.harness.paired_ratios`):

1. ``decode``: `fastfem.data.decode.decode_image` of a set of JPEG photos (smooth gradients, shapes
   and noise, quality 90) to a model input with ``fit="crop"`` on one thread, with
   ``draft=True`` (the default: a JPEG at least twice its fitted size decodes at 1/2, 1/4 or
   1/8 scale) vs ``draft=False`` (full decode, then the antialiased resample). Photo sizes
   500x375 (ImageNet's typical size), 1024x768, 2048x1536 and 4032x3024 (a phone camera), to
   224x224 and to 64x64 (the bundled CNN). Images per second, median/min/max over repetitions.
2. ``audit_jpeg``: `fastfem.audit.audit` of a folder of N 500x375 JPEGs with ``fit="crop"``
   (listing, decoding on 4 threads, the fused step, Parquet and maps written; the whole call,
   compiled step cached after the first), vs reading the same folder through the audit's
   source alone (``decode_only``: the decode cost apart), vs in-memory `FEM.explain` of the
   already decoded pixels at feature resolution (``explain_in_memory``). Two models: the bundled
   CNN (64x64) and MobileNetV2 at 224x224 (random weights, ``preprocess="tf"``).

Writes ``benchmarks/results/decode-<UTC>.json``. Usage::

    python -m benchmarks.bench_decode            # the full run
    python -m benchmarks.bench_decode --quick    # smaller sets, fewer repetitions
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .harness import log, machine_info, paired_ratios, summarize, write_results

PHOTO_SIZES = ((500, 375), (1024, 768), (2048, 1536), (4032, 3024))  # (width, height)
TARGETS = (224, 64)


def photo(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A photo-like RGB image: smooth gradients, a few soft shapes and sensor noise."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.empty((height, width, 3), np.float32)
    for c in range(3):
        a, b = rng.random(2) * 2 - 1
        img[..., c] = 128 + 60 * (a * xx / width + b * yy / height)
    for _ in range(4):
        cx, cy, r = rng.random() * width, rng.random() * height, (0.1 + rng.random() * 0.2) * width
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))
        img += blob[..., None] * (rng.random(3) * 160 - 80)
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def jpeg_folder(root: Path, size: tuple[int, int], n: int, seed: int = 0) -> list[Path]:
    """``n`` JPEG photos of ``size`` (width, height) under ``root`` (kept between runs)."""
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = root / f"photo-{i:05d}.jpg"
        if not path.exists():
            Image.fromarray(photo(*size, rng)).save(path, quality=90)
        paths.append(path)
    return paths


def interleaved(cands: dict[str, Callable[[], int]], reps: int) -> dict[str, list[float]]:
    """Items per second of each candidate per repetition, the order rotated each round."""
    names = list(cands)
    for name in names:  # warm-up (compilation, page cache)
        cands[name]()
    rates: dict[str, list[float]] = {name: [] for name in names}
    for r in range(reps):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            items = cands[name]()
            rates[name].append(items / (time.perf_counter() - start))
    return rates


def decode_bench(quick: bool, cache: Path) -> list[dict[str, Any]]:
    """Measurement 1 (module docstring)."""
    from fastfem.data.decode import DecodeOptions, decode_image

    out = []
    for w, h in PHOTO_SIZES:
        n = max(4, (8 if quick else 40) * 500 * 375 // (w * h))
        files = [p.read_bytes() for p in jpeg_folder(cache / f"jpeg-{w}x{h}", (w, h), n)]
        for target in TARGETS:

            def run(draft: bool, files=files, target=target) -> int:
                opts = DecodeOptions(size=(target, target), fit="crop", draft=draft)
                for data in files:
                    decode_image(data, opts)
                return len(files)

            rates = interleaved(
                {"draft": lambda run=run: run(True), "full": lambda run=run: run(False)},
                3 if quick else 7,
            )
            row = {
                "photo": f"{w}x{h}",
                "target": f"{target}x{target}",
                "images": n,
                "draft_images_per_s": summarize(rates["draft"]),
                "full_images_per_s": summarize(rates["full"]),
                "draft_vs_full": paired_ratios(rates["draft"], rates["full"]),
            }
            log(f"decode {w}x{h} -> {target}: draft/full {row['draft_vs_full']['median']}x")
            out.append(row)
    return out


def mobilenet_224(path: Path) -> str:
    """MobileNetV2 at 224x224 with random weights, saved once as a .keras file."""
    if not path.exists():
        import keras

        keras.utils.set_random_seed(0)
        keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3)).save(path)
    return str(path)


def audit_bench(quick: bool, cache: Path) -> list[dict[str, Any]]:
    """Measurement 2 (module docstring)."""
    from fastfem import FEM
    from fastfem.audit import audit
    from fastfem.data.preprocess import preprocess_fn
    from fastfem.data.records import ReadOptions
    from fastfem.data.sources import open_source
    from fastfem.sample import MODEL_PATH

    work = Path(tempfile.mkdtemp(prefix="fastfem-bench-decode-"))
    models = [
        ("bundled CNN 64x64", str(MODEL_PATH), 64, "unit", 512 if quick else 2048),
        (
            "MobileNetV2 224x224",
            mobilenet_224(cache / "mobilenetv2-224.keras"),
            224,
            "tf",
            64 if quick else 256,
        ),
    ]
    out = []
    for label, model, size, preprocess, n in models:
        folder = cache / f"audit-jpeg-500x375-{n}"
        jpeg_folder(folder, (500, 375), n, seed=1)
        expected = (size, size, 3)

        def decoded(draft: bool = True, folder=folder, expected=expected) -> list[np.ndarray]:
            src = open_source(folder, expected, ReadOptions(fit="crop", draft=draft))
            return [r.image for r in src.read(lambda i, rid: True)]

        x = np.stack(decoded())
        fem = FEM(model)
        xin = np.asarray(preprocess_fn(preprocess)(x), np.float32)  # the model's own input

        def run_audit(model=model, folder=folder, preprocess=preprocess) -> int:
            shutil.rmtree(work / "store", ignore_errors=True)
            s = audit(folder, model, out=work / "store", fit="crop", preprocess=preprocess)
            if s.errors:
                raise RuntimeError(f"{s.errors} error rows")
            return s.processed

        cands = {
            "audit_jpeg": run_audit,
            "decode_only": lambda decoded=decoded: len(decoded(True)),
            "decode_only_no_draft": lambda decoded=decoded: len(decoded(False)),
            "explain_in_memory": lambda fem=fem, xin=xin: len(fem.explain(xin, resize=False)),
        }
        rates = interleaved(cands, 3 if quick else 5)
        row = {
            "model": label,
            "images": n,
            "photo": "500x375 JPEG, quality 90",
            "fit": "crop",
            **{f"{k}_images_per_s": summarize(v) for k, v in rates.items()},
            "audit_vs_explain_in_memory": paired_ratios(
                rates["audit_jpeg"], rates["explain_in_memory"]
            ),
            "decode_draft_vs_full": paired_ratios(
                rates["decode_only"], rates["decode_only_no_draft"]
            ),
        }
        log(f"audit {label}: {row['audit_vs_explain_in_memory']['median']}x in-memory explain")
        out.append(row)
    shutil.rmtree(work, ignore_errors=True)
    return out


def markdown(result: dict[str, Any]) -> str:
    """The results as two Markdown tables (medians, [min, max])."""

    def cell(s: dict[str, Any]) -> str:
        return f"{s['median']} [{s['min']}, {s['max']}]"

    lines = [
        "| photo | to | draft img/s | full img/s | draft / full |",
        "|---|---|---|---|---|",
    ]
    for r in result["decode"]:
        lines.append(
            f"| {r['photo']} | {r['target']} | {cell(r['draft_images_per_s'])} | "
            f"{cell(r['full_images_per_s'])} | {cell(r['draft_vs_full'])} |"
        )
    lines += [
        "",
        "| model | N | audit img/s | decode only img/s (draft / full) | in-memory explain img/s "
        "| audit / in-memory |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["audit"]:
        lines.append(
            f"| {r['model']} | {r['images']} | {cell(r['audit_jpeg_images_per_s'])} | "
            f"{r['decode_only_images_per_s']['median']} / "
            f"{r['decode_only_no_draft_images_per_s']['median']} | "
            f"{cell(r['explain_in_memory_images_per_s'])} | "
            f"{cell(r['audit_vs_explain_in_memory'])} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--skip-audit", action="store_true", help="decode only")
    args = parser.parse_args(argv)
    os.environ.setdefault("KERAS_BACKEND", "jax")
    cache = Path(tempfile.gettempdir()) / "fastfem-bench-cache" / "decode"
    cache.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"machine": machine_info(), "quick": args.quick}
    result["decode"] = decode_bench(args.quick, cache)
    result["audit"] = [] if args.skip_audit else audit_bench(args.quick, cache)
    result["table"] = markdown(result)
    path = write_results("decode-quick" if args.quick else "decode", result)
    print(result["table"])
    print(path)


if __name__ == "__main__":
    main()
