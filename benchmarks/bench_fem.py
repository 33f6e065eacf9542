"""FEM throughput: fastfem vs Xplique vs the forward pass alone, same model, same inputs.

``python -m benchmarks.bench_fem [--quick] [--models cnn,resnet50,mobilenetv2] [--reps N]``

For each model, in interleaved rounds (see `benchmarks.harness`), on the same ``.keras`` model
and the same ``.npy`` images:

* ``fastfem``: `fastfem.FEM(model, batch_size=B).explain(x)`, NumPy images in, NumPy maps
  (N, H, W, 1) out, end to end: input validation, batching, padding of the last batch,
  ``device_put``, the fused jitted step (forward to the layer, FEM kernel, bicubic resize,
  finiteness flags), the fetch of the maps, the finiteness check, the concatenation.
* ``limit``: the same batch loop (`fastfem.engine.runner.Runner`, same B, same padding,
  NumPy in) around the jitted Keras-JAX forward pass up to the explained layer ONLY, the
  activations reduced on the device to one float per image (their sum) before the fetch.
  fastfem / limit is the cost of everything FEM adds to the forward pass.
* ``xplique``: `xplique.attributions.FEM(model, batch_size=32).explain(x)` (eager TF 2.21,
  Keras 3 on TensorFlow, oneDNN), converted to NumPy; ``xplique_bs<b>``: at its best batch
  size, found by a one-repetition sweep (when ``XPLIQUE_SWEEP`` lists sizes for the model).
* ``tf_forward_function`` / ``tf_forward_eager``: the TF forward pass alone up to the layer
  (``tf.function`` at B; eager at 32, as Xplique runs it), activations summed per image before
  ``.numpy()``: what TF's own convolutions cost on this CPU (the ceiling argument).

fastfem's batch size: 64 on the CNN (best fastfem/limit and throughput in the batch sweep of
``python -m benchmarks.run --only batch_sweep``), 32 on ResNet50 (Xplique's default), 64 on
MobileNetV2. Compile time: JAX's own trace + lower + compile time of the first call (JAX
monitoring events) for the JAX candidates; first call minus the median call for TF.

Targets: fastfem >= 2x xplique (paired per-round ratio, median), fastfem >= 0.95x limit.
Writes ``benchmarks/results/bench_fem-<UTC>.json`` and prints the summary JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from .harness import (
    CACHE_DIR,
    ROOT,
    Candidate,
    Workers,
    drop,
    log,
    machine_info,
    ratio,
    run_comparison,
    write_results,
)

C = "benchmarks.candidates:"
SAMPLE_MODEL = str(ROOT / "fastfem" / "sample" / "sample_cnn.keras")

#: model key -> how to build it and how big a run is (default, quick).
MODELS: dict[str, dict[str, Any]] = {
    "cnn": {
        "title": "bundled sample CNN, 64x64x3, layer last_conv (16x16x64)",
        "n": 2048,
        "quick_n": 1024,
        "size": 64,
        "batch_size": 64,
        "reps": 7,
        "quick_reps": 3,
        "xplique_sweep": [32, 128, 512, 2048],
    },
    "resnet50": {
        "title": "keras.applications.ResNet50(weights=None, seed 0), 224x224x3, "
        "layer conv5_block3_3_conv (7x7x2048)",
        "arch": "ResNet50",
        "n": 64,
        "quick_n": 16,
        "size": 224,
        "batch_size": 32,
        "reps": 5,
        "quick_reps": 3,
        "xplique_sweep": [32, 64],
    },
    "mobilenetv2": {
        "title": "keras.applications.MobileNetV2(weights=None, seed 0), 224x224x3, "
        "layer Conv_1 (7x7x1280)",
        "arch": "MobileNetV2",
        "n": 128,
        "quick_n": 16,
        "size": 224,
        "batch_size": 64,
        "reps": 5,
        "quick_reps": 3,
        "xplique_sweep": [32, 128],
    },
}
TARGET_VS_XPLIQUE = 2.0
TARGET_VS_LIMIT = 0.95


def prepare(workers: Workers, key: str, quick: bool, n: int | None = None) -> dict[str, Any]:
    """Model file and input file of ``key`` (built once, cached in ``CACHE_DIR``)."""
    spec = MODELS[key]
    n = n or (spec["quick_n"] if quick else spec["n"])
    jax = workers["jax"]
    if key == "cnn":
        model = SAMPLE_MODEL
        inputs = jax.call(
            C + "prepare_sample", path=str(CACHE_DIR / f"sample-test-{n}.npy"), split="test", n=n
        )
        layer = "last_conv"
    else:
        size = spec["size"]
        built = jax.call(
            C + "prepare_app_model",
            path=str(CACHE_DIR / f"{key}-{size}-seed0.keras"),
            arch=spec["arch"],
            size=size,
            timeout=900,
        )
        model, layer = built["path"], built["default_layer"]
        inputs = jax.call(
            C + "prepare_resized_sample",
            path=str(CACHE_DIR / f"sample-test-{n}-{size}px.npy"),
            n=n,
            size=size,
        )
    return {"model": model, "inputs": inputs["path"], "layer": layer, "n": n, "spec": spec}


def fem_config(
    workers: Workers,
    key: str,
    quick: bool = False,
    reps: int | None = None,
    batch_size: int | None = None,
    xplique_sweep: list[int] | None = None,
) -> dict[str, Any]:
    """The FEM comparison on one model (see the module docstring)."""
    data = prepare(workers, key, quick)
    spec = data["spec"]
    reps = reps or (spec["quick_reps"] if quick else spec["reps"])
    bs = batch_size or spec["batch_size"]
    common = {"model": data["model"], "inputs": data["inputs"], "layer": data["layer"]}
    sweep = spec["xplique_sweep"] if xplique_sweep is None else xplique_sweep
    if quick:
        sweep = []

    result: dict[str, Any] = {"model": key, "title": spec["title"], "n": data["n"]}
    best_bs = None
    if sweep:
        sweep_cands = [
            Candidate(
                f"xplique_sweep_bs{b}", "tensorflow", C + "xplique_fem", {**common, "batch_size": b}
            )
            for b in sweep
        ]
        res = run_comparison(workers, f"fem_{key}_xplique_sweep", sweep_cands, reps=1, warmup=1)
        speeds = {
            int(c.kwargs["batch_size"]): res["candidates"][c.name]["items_per_s"]["median"]
            for c in sweep_cands
        }
        drop(workers, sweep_cands)
        best_bs = max(speeds, key=speeds.get)
        result["xplique_sweep"] = {"images_per_s_one_rep": speeds, "best_batch_size": best_bs}

    cands = [
        Candidate(
            "fastfem",
            "jax",
            C + "fastfem_fem",
            {**common, "batch_size": bs},
            "fastfem.FEM.explain, numpy in -> numpy maps (N,H,W,1) out",
        ),
        Candidate(
            "limit",
            "jax",
            C + "jax_forward_limit",
            {**common, "batch_size": bs},
            "jitted Keras-JAX forward to the layer in fastfem's batch loop, "
            "activations summed per image on device",
        ),
        Candidate(
            "xplique",
            "tensorflow",
            C + "xplique_fem",
            {**common, "batch_size": 32},
            "xplique.attributions.FEM(batch_size=32).explain, eager TF",
        ),
    ]
    if best_bs is not None and best_bs != 32:
        cands.append(
            Candidate(
                f"xplique_bs{best_bs}",
                "tensorflow",
                C + "xplique_fem",
                {**common, "batch_size": best_bs},
                f"Xplique FEM at its best batch size ({best_bs})",
            )
        )
    cands += [
        Candidate(
            "tf_forward_function",
            "tensorflow",
            C + "tf_forward",
            {**common, "batch_size": bs, "mode": "function"},
            "TF forward to the layer, tf.function, activations summed per image",
        ),
        Candidate(
            "tf_forward_eager",
            "tensorflow",
            C + "tf_forward",
            {**common, "batch_size": 32, "mode": "eager"},
            "TF forward to the layer, eager, batch 32 (Xplique's forward)",
        ),
    ]
    res = run_comparison(
        workers, f"fem_{key}", cands, reps=reps, compare_outputs={"fastfem": "xplique"}
    )
    drop(workers, cands)
    result.update(res)
    result["batch_size"] = bs
    names = [c.name for c in cands]
    ratios = {
        "fastfem/xplique": ratio(res, "fastfem", "xplique"),
        "fastfem/limit": ratio(res, "fastfem", "limit"),
        "limit/tf_forward_function": ratio(res, "limit", "tf_forward_function"),
        "fastfem/tf_forward_function": ratio(res, "fastfem", "tf_forward_function"),
        "xplique/tf_forward_eager": ratio(res, "xplique", "tf_forward_eager"),
    }
    best_name = next((n for n in names if n.startswith("xplique_bs")), None)
    if best_name:
        ratios[f"fastfem/{best_name}"] = ratio(res, "fastfem", best_name)
    result["ratios"] = ratios
    targets = {
        "fastfem >= 2x xplique (bs 32)": _target(ratios["fastfem/xplique"], TARGET_VS_XPLIQUE),
        "fastfem >= 0.95x limit": _target(ratios["fastfem/limit"], TARGET_VS_LIMIT),
    }
    if best_name:
        targets[f"fastfem >= 2x {best_name}"] = _target(
            ratios[f"fastfem/{best_name}"], TARGET_VS_XPLIQUE
        )
    result["targets"] = targets
    return result


def _target(r: dict[str, Any], bound: float) -> dict[str, Any]:
    return {
        "bound": bound,
        "median": r["median"],
        "met": bool(r["median"] is not None and r["median"] >= bound),
        "met_in_every_round": bool(r["min"] is not None and r["min"] >= bound),
    }


def summary_line(res: dict[str, Any]) -> dict[str, Any]:
    """A compact view of one FEM config for printing."""
    return {
        "model": res["model"],
        "n": res["n"],
        "batch_size": res["batch_size"],
        "images_per_s": {
            n: {k: c["items_per_s"][k] for k in ("median", "min", "max")}
            for n, c in res["candidates"].items()
        },
        "first_call_s": {n: c["first_call_s"] for n, c in res["candidates"].items()},
        "compile_s": {
            n: c["jax_compile_s_first_call"] if c["backend"] == "jax" else c["compile_s_est"]
            for n, c in res["candidates"].items()
        },
        "ratios": {
            k: {q: v[q] for q in ("median", "min", "max")} for k, v in res["ratios"].items()
        },
        "targets": res["targets"],
        "foreign_cpus": res["foreign_cpus"],
        "output_diff": res.get("output_diff"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer images and rounds")
    parser.add_argument(
        "--models", default="cnn,resnet50", help="comma list of " + ",".join(MODELS)
    )
    parser.add_argument("--reps", type=int, default=None, help="rounds (default per model)")
    parser.add_argument("--batch-size", type=int, default=None, help="fastfem batch size")
    args = parser.parse_args(argv)

    started = time.time()
    payload: dict[str, Any] = {
        "benchmark": "bench_fem",
        "quick": args.quick,
        "machine": machine_info(),
        "configs": {},
    }
    with Workers() as workers:
        payload["workers"] = {
            b: workers[b].call("benchmarks.harness:worker_versions") for b in ("jax", "tensorflow")
        }
        for key in args.models.split(","):
            res = fem_config(workers, key, args.quick, args.reps, args.batch_size)
            payload["configs"][f"fem_{key}"] = res
    payload["wall_s"] = round(time.time() - started, 1)
    payload["machine"]["loadavg_end"] = list(os.getloadavg())
    path = write_results("bench_fem" + ("-quick" if args.quick else ""), payload)
    out = {k: summary_line(v) for k, v in payload["configs"].items()}
    print(json.dumps(out, indent=1))
    log(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
