"""Reference FEM maps from Xplique, run in its own process (Keras on the TensorFlow backend).

Usage::

    python tests/support/xplique_reference.py MODEL.keras INPUTS.npy OUT.npy [--layer L] [--k K]
        [--batch-size B]
    python tests/support/xplique_reference.py MODEL.keras INPUTS.npy OUT.npy --cases JSON
        [--batch-size B]
    python tests/support/xplique_reference.py --jobs JOBS.json

``--layer``: a layer name, an integer index, or ``none`` (default: Xplique's default layer).
``--cases``: a JSON list of ``{"layer": str | int | null, "k": float}`` (missing keys take the
defaults), so that one process (TensorFlow start-up costs seconds) computes several cases; OUT
then holds the maps of every case stacked, shape ``(n_cases, N, H, W, 1)``. Without
``--cases``, OUT holds the single case's ``(N, H, W, 1)`` float32 maps.
``--jobs``: a JSON file holding a list of ``{"model": path, "inputs": path, "out": path,
"cases": [...], "batch_size": int}``, to compute several models' cases in one process (each
``out`` as with ``--cases``, each complete as soon as it appears).

`tests/explainers/test_xplique_parity.py` runs this: the pytest process runs Keras on the JAX
backend and a process cannot switch backends, so Xplique (TensorFlow) must run here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def parse_layer(text: str | None) -> str | int | None:
    """``none``/empty -> None, an integer -> int, anything else -> the name."""
    if text is None or text.strip().lower() in ("", "none", "null"):
        return None
    try:
        return int(text)
    except ValueError:
        return text


def reference_maps(
    model_path: str, inputs_path: str, cases: list[dict], batch_size: int = 32
) -> list:
    """Xplique's FEM maps of each case, a list of (N, H, W, 1) float32 arrays."""
    import keras
    import numpy as np
    from xplique.attributions import FEM

    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(f"Xplique needs Keras on TensorFlow; got {keras.backend.backend()!r}")
    model = keras.saving.load_model(model_path, compile=False)
    x = np.load(inputs_path).astype(np.float32)
    maps = []
    for case in cases:
        layer = case.get("layer")
        layer = parse_layer(layer) if isinstance(layer, str) or layer is None else int(layer)
        explainer = FEM(model, batch_size=batch_size, conv_layer=layer, k=case.get("k", 2.0))
        maps.append(np.asarray(explainer.explain(x), dtype=np.float32))
    return maps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", help="a .keras model file")
    parser.add_argument("inputs", nargs="?", help="a .npy array of images (N, H, W, C)")
    parser.add_argument("out", nargs="?", help="where to save the maps (.npy)")
    parser.add_argument("--layer", default=None, help="layer name, index, or 'none'")
    parser.add_argument("--k", type=float, default=2.0)
    parser.add_argument("--cases", default=None, help='JSON list of {"layer": ..., "k": ...}')
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--jobs", default=None, help="JSON file: a list of jobs (see above)")
    args = parser.parse_args(argv)

    import numpy as np

    if args.jobs is not None:
        with open(args.jobs) as f:
            jobs = json.load(f)
        for job in jobs:
            maps = reference_maps(
                job["model"], job["inputs"], job["cases"], job.get("batch_size", 32)
            )
            # Written then renamed, so a reader polling for the file never sees half of it.
            partial = job["out"] + ".partial.npy"
            np.save(partial, np.stack(maps))
            os.replace(partial, job["out"])
        return 0
    if args.model is None or args.inputs is None or args.out is None:
        parser.error("MODEL, INPUTS and OUT are required without --jobs")
    if args.cases is not None:
        maps = reference_maps(args.model, args.inputs, json.loads(args.cases), args.batch_size)
        np.save(args.out, np.stack(maps))
    else:
        case = {"layer": args.layer, "k": args.k}
        np.save(args.out, reference_maps(args.model, args.inputs, [case], args.batch_size)[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
