#!/usr/bin/env python
"""Extractor forward throughput per converter path, relative to the Keras-JAX native path.

ResNet50 (keras.applications, random weights, no top) cut at its default FEM layer
(``conv5_block3_3_conv``), a batch of ``--batch`` images of ``--size`` x ``--size``:

* ``native``: Keras 3 on JAX, ``stateless_call`` (`fastfem.converters.from_keras`);
* ``jax.export artifact``: the native extractor saved with `save_extractor` and loaded back;
* ``tf2jax``: Keras 3 on TensorFlow, the sub-model converted by tf2jax (`from_tf`);
* ``tf2jax (tf_keras model, timed beside native)``: tf_keras's ResNet50 with the same weights,
  converted by tf2jax in the native process and timed round by round with it: the side-by-side
  ratio the target (tf2jax >= 0.9x native) is judged on;
* ``call_tf``: the same sub-model wrapped by ``jax2tf.call_tf`` (`from_tf(method="call_tf")`);
* ``tensorflow``: for scale, TensorFlow running the sub-model itself (``tf.function``, the
  fastest of with and without XLA ``jit_compile``).

The TF paths need Keras on TensorFlow, so they run in a second process (this script with
``--worker``), after the first; both build ResNet50 and time warm, jitted forwards (compilation
excluded; best of ``--repeats`` runs of ``--steps`` batches, paths interleaved within a process).
Also reported: the seconds to build each extractor (tf2jax conversion, call_tf wrapping, loading
the artifact) and its first call (trace + compile + one batch). Writes
benchmarks/results/converters.{json,md}.

Usage::

    python -m benchmarks.bench_converters                    # 128x128, batch 16
    python -m benchmarks.bench_converters --size 224 --batch 32 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .harness import paired_ratios

RESULTS = Path(__file__).resolve().parent / "results"
LAYER = "conv5_block3_3_conv"


def _time(fn, x, steps: int) -> float:
    """Seconds per batch of one warm run of ``steps`` batches."""
    import jax

    start = time.perf_counter()
    for _ in range(steps):
        out = fn(x)
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / steps


def _bench(fns: dict, x, steps: int, repeats: int) -> dict:
    import jax

    compile_s = {}
    for name, fn in fns.items():
        start = time.perf_counter()
        jax.block_until_ready(fn(x))
        compile_s[name] = time.perf_counter() - start
    runs: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(repeats):  # interleaved rounds, the order alternating
        for name in list(fns) if r % 2 == 0 else list(fns)[::-1]:
            runs[name].append(_time(fns[name], x, steps))
    n = x.shape[0]
    return {
        name: {
            "ms_per_batch": round(min(runs[name]) * 1e3, 2),
            "images_per_s": round(n / min(runs[name]), 1),
            "first_call_s": round(compile_s[name], 2),
            "round_ms": [round(t * 1e3, 2) for t in runs[name]],
        }
        for name in fns
    }


def paired_ratio(rows: dict, a: str, b: str) -> dict:
    """Speed of ``a`` over ``b``, round by round (`benchmarks.harness.paired_ratios`)."""
    return paired_ratios(*([1 / t for t in rows[k]["round_ms"]] for k in (a, b)))


def _model(size: int):
    import keras

    return keras.applications.ResNet50(weights=None, include_top=False, input_shape=(size, size, 3))


#: tf2jax timed in the native process, interleaved with it (tf_keras's ResNet50, same weights).
TF2JAX_HERE = "tf2jax (tf_keras model, timed beside native)"


def _tf2jax_beside_native(model, size: int):
    """A builder of the tf2jax extractor of tf_keras's ResNet50 carrying ``model``'s weights, or
    None without tf_keras/tf2jax. tf_keras (Keras 2) runs beside Keras 3 on JAX, so the tf2jax
    path can be timed in the same process as the native one, round by round."""
    import importlib.util

    if any(importlib.util.find_spec(m) is None for m in ("tf_keras", "tf2jax")):
        return None

    def build():
        import tf_keras
        from fastfem.converters import from_tf

        twin = tf_keras.applications.ResNet50(
            weights=None, include_top=False, input_shape=(size, size, 3)
        )
        twin.set_weights(model.get_weights())
        return from_tf(twin, LAYER, method="tf2jax")

    return build


def run_native(args) -> dict:
    os.environ.setdefault("KERAS_BACKEND", "jax")
    import jax
    import numpy as np
    from fastfem.converters import from_keras, load_extractor, save_extractor

    model = _model(args.size)
    start = time.perf_counter()
    ext = from_keras(model, LAYER)
    build = {"native": time.perf_counter() - start}
    with tempfile.TemporaryDirectory() as tmp:
        save_extractor(ext, tmp)
        start = time.perf_counter()
        art = load_extractor(tmp)
        build["jax.export artifact"] = time.perf_counter() - start
    x = np.random.default_rng(0).random((args.batch, args.size, args.size, 3), dtype=np.float32)
    fns = {
        "native": (lambda f, p: lambda x: f(p, x).activations[0])(jax.jit(ext.apply), ext.params),
        "jax.export artifact": (lambda f, p: lambda x: f(p, x).activations[0])(
            jax.jit(art.apply), art.params
        ),
    }
    side = _tf2jax_beside_native(model, args.size)
    if side is not None:
        start = time.perf_counter()
        t2j = side()
        build[TF2JAX_HERE] = time.perf_counter() - start
        fns[TF2JAX_HERE] = (lambda f, p: lambda x: f(p, x).activations[0])(
            jax.jit(t2j.apply), t2j.params
        )
    result = _bench(fns, jax.device_put(x), args.steps, args.repeats)
    for name, seconds in build.items():
        result[name]["build_s"] = round(seconds, 2)
    return result


def run_tf(args) -> dict:
    os.environ["KERAS_BACKEND"] = "tensorflow"
    import jax
    import keras
    import numpy as np
    import tensorflow as tf
    from fastfem.converters import from_tf

    model = _model(args.size)
    x = np.random.default_rng(0).random((args.batch, args.size, args.size, 3), dtype=np.float32)
    fns = {}
    sources = {}
    build = {}
    for method in ("tf2jax", "call_tf"):
        start = time.perf_counter()
        ext = from_tf(model, LAYER, method=method)
        build[method] = time.perf_counter() - start
        sources[method] = ext.source
        fns[method] = (lambda f, p: lambda x: f(p, x).activations[0])(
            jax.jit(ext.apply), ext.params
        )
    result = _bench(fns, jax.device_put(x), args.steps, args.repeats)
    for name, seconds in build.items():
        result[name]["build_s"] = round(seconds, 2)
    sub = keras.Model(model.inputs, model.get_layer(LAYER).output)
    tf_best = None
    xt = tf.constant(x)
    for xla in (False, True):
        fn = tf.function(lambda t: sub(t, training=False), jit_compile=xla)
        timed = _bench({"tf": lambda t, fn=fn: _TfOut(fn(t))}, xt, args.steps, args.repeats)
        timed = timed["tf"] | {"jit_compile": xla}
        if tf_best is None or timed["ms_per_batch"] < tf_best["ms_per_batch"]:
            tf_best = timed
    result["tensorflow"] = tf_best
    result["_sources"] = sources
    return result


class _TfOut:
    """Makes a TF tensor look blockable to `jax.block_until_ready` (TF eager is synchronous
    once ``.numpy()`` is called)."""

    def __init__(self, t):
        self.t = t

    def block_until_ready(self):
        self.t.numpy()
        return self


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3, help="batches per timed run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--worker", choices=["tf"], help=argparse.SUPPRESS)
    parser.add_argument("--out", default=str(RESULTS / "converters"), help="path stem")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if args.worker == "tf":
        print(json.dumps(run_tf(args)))
        return 0

    native = run_native(args)
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.bench_converters",
        "--worker",
        "tf",
        "--size",
        str(args.size),
        "--batch",
        str(args.batch),
        "--steps",
        str(args.steps),
        "--repeats",
        str(args.repeats),
    ]
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    proc = subprocess.run(
        cmd, env=env, cwd=RESULTS.parent.parent, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        print(proc.stderr[-4000:], file=sys.stderr)
        return proc.returncode
    tf_side = json.loads(proc.stdout.strip().splitlines()[-1])
    sources = tf_side.pop("_sources")
    rows = {**native, **tf_side}
    base = rows["native"]["images_per_s"]
    for row in rows.values():
        row["relative_to_native"] = round(row["images_per_s"] / base, 3)

    import jax

    side_by_side = {}
    if TF2JAX_HERE in rows:
        side_by_side["tf2jax/native"] = paired_ratio(rows, TF2JAX_HERE, "native")
    side_by_side["artifact/native"] = paired_ratio(rows, "jax.export artifact", "native")
    result = {
        "model": f"ResNet50 (no top) -> {LAYER}",
        "side_by_side": side_by_side,
        "input": [args.batch, args.size, args.size, 3],
        "steps": args.steps,
        "repeats": args.repeats,
        "paths": rows,
        "sources": sources,
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "jax": jax.__version__,
            "device": str(jax.devices()[0]),
        },
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    lines = [
        f"# Extractor throughput per converter path: {result['model']}",
        "",
        f"Batch {args.batch} x {args.size}x{args.size}x3, warm jitted forwards, best of "
        f"{args.repeats} runs of {args.steps} batches; {result['machine']['device']}, "
        f"{result['machine']['cpus']} CPUs, jax {jax.__version__}.",
        "",
        "build: making the extractor (conversion / wrapping / loading the artifact); first call: "
        "tracing + compilation + one batch.",
        "",
        "| path | ms / batch | images / s | vs native | build (s) | first call (s) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, row in rows.items():
        extra = f" (jit_compile={row['jit_compile']})" if "jit_compile" in row else ""
        lines.append(
            f"| {name}{extra} | {row['ms_per_batch']} | {row['images_per_s']} | "
            f"{row['relative_to_native']:.2f}x | {row.get('build_s', '-')} | "
            f"{row['first_call_s']} |"
        )
    lines += [
        "",
        "Timed side by side (same process, interleaved rounds; speed ratio per round, median "
        "(min-max)):",
        "",
    ]
    for name, r in side_by_side.items():
        target = " (target >= 0.9x: " + ("met" if r["median"] >= 0.9 else "NOT met") + ")"
        lines.append(
            f"- {name}: {r['median']:.2f}x ({r['min']:.2f}-{r['max']:.2f})"
            + (target if name.startswith("tf2jax") else "")
        )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
