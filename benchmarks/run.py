"""The benchmark suite: every configuration of fastfem vs its peers, interleaved, one JSON.

``python -m benchmarks.run [--quick] [--only NAME[,NAME...]] [--list]``

Configurations (``--only`` takes these names; see each function's docstring for what is timed):

=================  ==========================================================================
fem_cnn            FEM on the bundled CNN (64x64, N=2048): fastfem vs limit vs Xplique vs the
                   TF forward pass (`benchmarks.bench_fem`)
fem_resnet50       the same on ResNet50 at 224x224 (N=64)
fem_mobilenetv2    the same on MobileNetV2 at 224x224 (N=256)
tf_graph_peers     Xplique's FEM formula as one tf.function per batch, and compiled by XLA
                   (jit_compile=True), vs fastfem and Xplique
fam                FAM pairs: fastfem.FAM vs the eager-TF FAM reference (target >= 3x)
mlfem              MLFEM: fastfem.MLFEM vs Xplique's FEM per layer + the same fusion
kernel             the FEM kernel alone on device-resident activations vs a device copy / read
                   of the same activations (bandwidth fraction), float32 and bfloat16
scaling            N = 1k, 4k, 16k sample images: time per image and peak RSS, fastfem vs Xplique
batch_sweep        batch size sweep: fastfem (and its limit) and Xplique
bf16               fastfem FEM with the model in mixed_bfloat16 vs float32: time, map difference
audit              fastfem audit: PNG folder on disk -> Parquet on disk, vs in-memory FEM.explain
                   (target >= 0.8x); the end-of-run flagging alone, shortcut detectors vs the
                   corner rule they replaced (target: audit with detectors >= 0.9x)
malloc             glibc's default malloc vs a fixed mmap threshold: page faults of fastfem and
                   its limit
detect_scale       the shortcut detectors on a synthetic store of 1,000,000 rows (quick:
                   100,000) of 16x16 maps: time and peak RSS (`benchmarks.detect_scale`)
decode_threads     the audit's host decoding alone, 640x480 JPEG photos cropped to 224: ms per
                   image on 1, 2 and every core's threads
=================  ==========================================================================

``--quick`` runs every configuration small (a few minutes in all). Results go to
``benchmarks/results/run[-quick]-<UTC>.json``; ``python -m benchmarks.render`` makes the table
and the plots.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from .bench_fem import SAMPLE_MODEL, fem_config, summary_line
from .harness import (
    CACHE_DIR,
    ROOT,
    Candidate,
    Workers,
    drop,
    log,
    machine_info,
    paired_ratios,
    ratio,
    run_comparison,
    summarize,
    write_results,
)

C = "benchmarks.candidates:"
#: fastfem's batch size on the bundled CNN (see the batch_sweep configuration).
CNN_BATCH = 64


def _sample(workers: Workers, n: int, split: str = "test") -> str:
    return workers["jax"].call(
        C + "prepare_sample", path=str(CACHE_DIR / f"sample-{split}-{n}.npy"), split=split, n=n
    )["path"]


def _targets(r: dict[str, Any], bound: float) -> dict[str, Any]:
    return {
        "bound": bound,
        "median": r["median"],
        "met": bool(r["median"] is not None and r["median"] >= bound),
        "met_in_every_round": bool(r["min"] is not None and r["min"] >= bound),
    }


# ------------------------------------------------------------------------------ configs


def cfg_fem_cnn(w: Workers, quick: bool) -> dict[str, Any]:
    """FEM on the bundled CNN (`benchmarks.bench_fem.fem_config`)."""
    return fem_config(w, "cnn", quick)


def cfg_fem_resnet50(w: Workers, quick: bool) -> dict[str, Any]:
    """FEM on ResNet50 224x224 (`benchmarks.bench_fem.fem_config`)."""
    return fem_config(w, "resnet50", quick)


def cfg_fem_mobilenetv2(w: Workers, quick: bool) -> dict[str, Any]:
    """FEM on MobileNetV2 224x224 (`benchmarks.bench_fem.fem_config`)."""
    return fem_config(w, "mobilenetv2", quick)


def cfg_tf_graph_peers(w: Workers, quick: bool) -> dict[str, Any]:
    """Bundled CNN, N=2048 (quick 1024): fastfem (B=64) vs Xplique (32) vs Xplique's formula
    in one ``tf.function`` per batch (B=64) vs the same with ``jit_compile=True`` (XLA inside
    TF; the bicubic resize, which has no XLA kernel, runs in a second tf.function)."""
    n = 1024 if quick else 2048
    common = {"model": SAMPLE_MODEL, "inputs": _sample(w, n), "layer": "last_conv"}
    cands = [
        Candidate(
            "fastfem",
            "jax",
            C + "fastfem_fem",
            {**common, "batch_size": CNN_BATCH},
            f"fastfem.FEM(batch_size={CNN_BATCH}).explain",
        ),
        Candidate(
            "xplique",
            "tensorflow",
            C + "xplique_fem",
            {**common, "batch_size": 32},
            "xplique FEM(batch_size=32).explain, eager TF",
        ),
        Candidate(
            "tf_function_fem",
            "tensorflow",
            C + "tf_graph_fem",
            {**common, "batch_size": CNN_BATCH, "jit_compile": False},
            "Xplique's formula, forward + FEM + bicubic resize in one tf.function per batch",
        ),
        Candidate(
            "tf_xla_fem",
            "tensorflow",
            C + "tf_graph_fem",
            {**common, "batch_size": CNN_BATCH, "jit_compile": True},
            "the same, forward + FEM under jit_compile=True (XLA), resize in tf.function",
        ),
    ]
    res = run_comparison(
        w,
        "tf_graph_peers",
        cands,
        reps=3 if quick else 7,
        compare_outputs={"tf_function_fem": "xplique", "tf_xla_fem": "xplique"},
    )
    drop(w, cands)
    res["n"] = n
    res["ratios"] = {
        "fastfem/xplique": ratio(res, "fastfem", "xplique"),
        "fastfem/tf_function_fem": ratio(res, "fastfem", "tf_function_fem"),
        "fastfem/tf_xla_fem": ratio(res, "fastfem", "tf_xla_fem"),
        "tf_function_fem/xplique": ratio(res, "tf_function_fem", "xplique"),
    }
    return res


def cfg_fam(w: Workers, quick: bool) -> dict[str, Any]:
    """FAM pairs on the bundled CNN (layer last_conv, cosine, GAP, max weights, query maps
    resized to 64x64): fastfem.FAM(batch_size=64 pairs) vs the eager-TF reference
    `benchmarks.peers.fam_tf.FamTF` at its default 32 pairs per batch and at fastfem's 64.
    Target: fastfem >= 3x the eager-TF reference (default batch).

    Bounds, in pairs/s over the same 2 x pairs images: ``limit``, fastfem's batch loop around
    the jitted forward pass alone (no FAM, no maps back), and TensorFlow's forward pass, eager
    (what the reference runs) and ``tf.function``. fastfem FAM cannot beat its limit, and the
    reference cannot beat TF's eager forward, so limit / tf_forward_eager bounds what any
    FAM implementation on XLA:CPU can reach against the reference on this machine."""
    if not (ROOT / "benchmarks" / "peers" / "fam_tf.py").exists():
        return {"skipped": "benchmarks/peers/fam_tf.py not found"}
    pairs = 512 if quick else 1024
    common = {
        "model": SAMPLE_MODEL,
        "inputs": _sample(w, 2 * pairs),
        "n_pairs": pairs,
        "layer": "last_conv",
    }
    cands = [
        Candidate("fastfem_fam", "jax", C + "fastfem_fam", {**common, "batch_size": CNN_BATCH}),
        Candidate("fam_tf", "tensorflow", C + "fam_tf", {**common, "batch_size": 32}),
        Candidate(
            f"fam_tf_bs{CNN_BATCH}", "tensorflow", C + "fam_tf", {**common, "batch_size": CNN_BATCH}
        ),
    ]
    images = {k: common[k] for k in ("model", "inputs", "layer")} | {"images_per_item": 2}
    cands += [
        Candidate("limit", "jax", C + "jax_forward_limit", {**images, "batch_size": 2 * CNN_BATCH}),
        Candidate(
            "tf_forward_eager",
            "tensorflow",
            C + "tf_forward",
            {**images, "batch_size": 64, "mode": "eager"},
            "TF forward to the layer, eager, 32 pairs (64 images) per batch",
        ),
        Candidate(
            "tf_forward_function",
            "tensorflow",
            C + "tf_forward",
            {**images, "batch_size": 2 * CNN_BATCH, "mode": "function"},
        ),
    ]
    res = run_comparison(
        w,
        "fam",
        cands,
        reps=3 if quick else 7,
        compare_outputs={"fastfem_fam": "fam_tf"},
    )
    drop(w, cands)
    res["pairs"] = pairs
    res["ratios"] = {
        "fastfem_fam/fam_tf": ratio(res, "fastfem_fam", "fam_tf"),
        f"fastfem_fam/fam_tf_bs{CNN_BATCH}": ratio(res, "fastfem_fam", f"fam_tf_bs{CNN_BATCH}"),
        "fastfem_fam/limit": ratio(res, "fastfem_fam", "limit"),
        "limit/tf_forward_eager": ratio(res, "limit", "tf_forward_eager"),
        "fam_tf/tf_forward_eager": ratio(res, "fam_tf", "tf_forward_eager"),
        "limit/tf_forward_function": ratio(res, "limit", "tf_forward_function"),
    }
    res["targets"] = {
        "fastfem FAM >= 3x eager-TF FAM": _targets(res["ratios"]["fastfem_fam/fam_tf"], 3.0),
        f"fastfem FAM >= 3x eager-TF FAM (bs {CNN_BATCH})": _targets(
            res["ratios"][f"fastfem_fam/fam_tf_bs{CNN_BATCH}"], 3.0
        ),
    }
    return res


def cfg_mlfem(w: Workers, quick: bool) -> dict[str, Any]:
    """MLFEM on the bundled CNN (default layers: conv1 64x64, conv2 32x32, last_conv 16x16;
    mean fusion): fastfem.MLFEM (one forward pass for all layers) vs Xplique's FEM run once
    per layer (one forward pass each) + min-max + mean in NumPy; fastfem FEM for scale."""
    n = 512 if quick else 1024
    inputs = _sample(w, n)
    layers = w["jax"].call(C + "mlfem_layers", model=SAMPLE_MODEL)
    cands = [
        Candidate(
            "fastfem_mlfem",
            "jax",
            C + "fastfem_mlfem",
            {"model": SAMPLE_MODEL, "inputs": inputs, "batch_size": CNN_BATCH},
        ),
        Candidate(
            "xplique_mlfem",
            "tensorflow",
            C + "xplique_mlfem",
            {"model": SAMPLE_MODEL, "inputs": inputs, "batch_size": 32, "layers": layers},
        ),
        Candidate(
            "fastfem_fem",
            "jax",
            C + "fastfem_fem",
            {"model": SAMPLE_MODEL, "inputs": inputs, "batch_size": CNN_BATCH},
        ),
    ]
    res = run_comparison(
        w,
        "mlfem",
        cands,
        reps=3 if quick else 5,
        compare_outputs={"fastfem_mlfem": "xplique_mlfem"},
    )
    drop(w, cands)
    res["n"] = n
    res["layers"] = layers
    res["ratios"] = {
        "fastfem_mlfem/xplique_mlfem": ratio(res, "fastfem_mlfem", "xplique_mlfem"),
        "fastfem_mlfem/fastfem_fem": ratio(res, "fastfem_mlfem", "fastfem_fem"),
    }
    return res


#: (name, batch, feature shape (h, w, C), output size) of the kernel configuration.
KERNEL_SHAPES = [
    ("cnn_last_conv", 64, [16, 16, 64], [64, 64]),
    ("resnet50_conv5", 32, [7, 7, 2048], [224, 224]),
]


def cfg_kernel(w: Workers, quick: bool) -> dict[str, Any]:
    """The FEM kernel alone (`fastfem.kernels.fem.fem_map`, then + the bicubic resize) on
    device-resident activations, vs ``-a`` (a device copy: one read + one write of the
    activations) and ``sum(a)`` (one read), float32 and bfloat16 activations. Bandwidth
    fraction = (activation bytes / kernel time) / (activation bytes / read time): 1.0 means
    the kernel runs at the speed of ONE read of its input."""
    out: dict[str, Any] = {"shapes": {}}
    for name, batch, feat, out_hw in KERNEL_SHAPES:
        per_call = batch * feat[0] * feat[1] * feat[2] * 4
        calls = max(4, int(2.5e9 / per_call / (8 if quick else 2)))  # ~0.3-1 s of reads
        base = {"batch": batch, "feature_shape": feat, "calls": calls}
        cands = [
            Candidate(f"{name}:read", "jax", C + "fem_kernel", {**base, "kind": "read"}),
            Candidate(f"{name}:copy", "jax", C + "fem_kernel", {**base, "kind": "copy"}),
            Candidate(f"{name}:fem", "jax", C + "fem_kernel", {**base, "kind": "fem"}),
            Candidate(
                f"{name}:fem_resize",
                "jax",
                C + "fem_kernel",
                {**base, "kind": "fem_resize", "out_hw": out_hw},
            ),
            Candidate(
                f"{name}:fem_bf16",
                "jax",
                C + "fem_kernel",
                {**base, "kind": "fem", "dtype": "bfloat16"},
            ),
            Candidate(
                f"{name}:read_bf16",
                "jax",
                C + "fem_kernel",
                {**base, "kind": "read", "dtype": "bfloat16"},
            ),
        ]
        res = run_comparison(
            w,
            f"kernel_{name}",
            cands,
            reps=3 if quick else 7,
            compare_outputs={f"{name}:fem_bf16": f"{name}:fem"},
        )
        drop(w, cands)
        gb = per_call * calls / 1e9

        def secs(key: str, res: dict[str, Any] = res, name: str = name) -> float:
            return res["candidates"][f"{name}:{key}"]["seconds"]["median"]

        res["bandwidth"] = {
            "activation_gb_per_rep": round(gb, 3),
            "read_gb_s": round(gb / secs("read"), 2),
            "copy_gb_s (read + write)": round(2 * gb / secs("copy"), 2),
            "fem_gb_s (activation bytes / time)": round(gb / secs("fem"), 2),
            "fem_resize_gb_s": round(gb / secs("fem_resize"), 2),
            "fem_fraction_of_read": round(secs("read") / secs("fem"), 3),
            "fem_fraction_of_copy": round(secs("copy") / secs("fem") / 2, 3),
            "fem_resize_fraction_of_read": round(secs("read") / secs("fem_resize"), 3),
            "fem_bf16_speedup_vs_f32": ratio(res, f"{name}:fem_bf16", f"{name}:fem"),
            "us_per_image_fem": round(1e6 * secs("fem") / (batch * calls), 3),
        }
        out["shapes"][name] = res
    return out


def cfg_scaling(w: Workers, quick: bool) -> dict[str, Any]:
    """Bundled CNN, N = 1024, 4096, 16384 images (quick: 1024, 4096): fastfem (B=64) vs
    Xplique (32). Per N, both workers load the N images, then interleaved rounds; before each
    round the worker's peak RSS (VmHWM) is reset, after it read: ``peak_rss_mb`` is the
    process peak during explain (model, runtime and the N input images included),
    ``peak_over_start_mb`` the growth above the RSS just before the call (the explanation's
    own working memory + its output, (N, 64, 64, 1) float32 = N * 16 KiB). Runs in fresh
    workers, smallest N first."""
    sizes = [1024, 4096] if quick else [1024, 4096, 16384]
    out: dict[str, Any] = {"sizes": {}}
    w.close()  # fresh workers: absolute peaks free of earlier configurations' leftovers
    for n in sizes:
        inputs = _sample(w, n)
        common = {"model": SAMPLE_MODEL, "inputs": inputs, "layer": "last_conv"}
        cands = [
            Candidate(
                f"fastfem@{n}", "jax", C + "fastfem_fem", {**common, "batch_size": CNN_BATCH}
            ),
            Candidate(
                f"xplique@{n}", "tensorflow", C + "xplique_fem", {**common, "batch_size": 32}
            ),
        ]
        reps = 2 if quick else (3 if n >= 16384 else 5)
        res = run_comparison(w, f"scaling_{n}", cands, reps=reps, warmup=1, memory=True)
        drop(w, cands)
        res["n"] = n
        res["ratios"] = {"fastfem/xplique": ratio(res, f"fastfem@{n}", f"xplique@{n}")}
        out["sizes"][str(n)] = res
    return out


def cfg_batch_sweep(w: Workers, quick: bool) -> dict[str, Any]:
    """Bundled CNN, N=2048 (quick 1024): fastfem FEM and its limit (same batch loop, forward
    only) at batch sizes 16..1024, Xplique at 32..2048, all interleaved."""
    n = 1024 if quick else 2048
    common = {"model": SAMPLE_MODEL, "inputs": _sample(w, n), "layer": "last_conv"}
    fast = [32, 64, 256] if quick else [16, 32, 64, 128, 256, 512, 1024]
    xpl = [32, 512] if quick else [32, 128, 512, 2048]
    cands = []
    for b in fast:
        cands.append(
            Candidate(f"fastfem_bs{b}", "jax", C + "fastfem_fem", {**common, "batch_size": b})
        )
        cands.append(
            Candidate(f"limit_bs{b}", "jax", C + "jax_forward_limit", {**common, "batch_size": b})
        )
    for b in xpl:
        cands.append(
            Candidate(
                f"xplique_bs{b}", "tensorflow", C + "xplique_fem", {**common, "batch_size": b}
            )
        )
    res = run_comparison(w, "batch_sweep", cands, reps=3 if quick else 5, warmup=1)
    drop(w, cands)
    res["n"] = n
    res["series"] = {
        "fastfem": {b: res["candidates"][f"fastfem_bs{b}"]["items_per_s"] for b in fast},
        "limit": {b: res["candidates"][f"limit_bs{b}"]["items_per_s"] for b in fast},
        "xplique": {b: res["candidates"][f"xplique_bs{b}"]["items_per_s"] for b in xpl},
    }
    res["ratios"] = {
        f"fastfem/limit@{b}": ratio(res, f"fastfem_bs{b}", f"limit_bs{b}") for b in fast
    }
    return res


def cfg_bf16(w: Workers, quick: bool) -> dict[str, Any]:
    """Bundled CNN, N=2048 (quick 1024), B=64: fastfem FEM with the model cloned under Keras's
    ``mixed_bfloat16`` policy (bf16 convolutions and activations, float32 variables; FEM
    statistics accumulated in float32) vs float32. Map difference: max |bf16 - f32| / max |f32|
    over the first 256 maps."""
    n = 1024 if quick else 2048
    common = {"model": SAMPLE_MODEL, "inputs": _sample(w, n), "batch_size": CNN_BATCH}
    cands = [
        Candidate("fastfem_f32", "jax", C + "fastfem_fem", {**common, "layer": "last_conv"}),
        Candidate(
            "fastfem_bf16", "jax", C + "fastfem_fem", {**common, "layer": "last_conv", "bf16": True}
        ),
    ]
    res = run_comparison(
        w,
        "bf16",
        cands,
        reps=3 if quick else 5,
        compare_outputs={"fastfem_bf16": "fastfem_f32"},
    )
    drop(w, cands)
    res["n"] = n
    res["ratios"] = {"bf16/f32": ratio(res, "fastfem_bf16", "fastfem_f32")}
    return res


def cfg_audit(w: Workers, quick: bool) -> dict[str, Any]:
    """`fastfem.audit.audit` of a folder of N=2048 (quick 512) PNG files of the bundled sample
    (``write_png_folder``) to a Parquet store on disk (the whole call: listing, decoding on the
    audit's default threads, the fused step with the model output and map statistics, Parquet + maps
    written), vs in-memory `FEM.explain` of the same images (float arrays, B=256 like the
    audit's default) in the same worker: resized maps (the default) and feature-resolution
    maps (``resize=False``, what the audit stores). Target: audit >= 0.8x in-memory explain."""
    n = 512 if quick else 2048
    png = w["jax"].call(
        C + "prepare_png_folder", path=str(CACHE_DIR / f"png-test-{n}"), split="test", n=n
    )
    inputs = _sample(w, n)
    work = tempfile.mkdtemp(prefix="fastfem-bench-audit-")
    bs = 256
    cands = [
        Candidate(
            "audit_png_to_parquet",
            "jax",
            C + "audit_folder",
            {"png_dir": png["path"], "model": SAMPLE_MODEL, "batch_size": bs, "workdir": work},
        ),
        Candidate(
            "explain_in_memory",
            "jax",
            C + "fastfem_fem",
            {"model": SAMPLE_MODEL, "inputs": inputs, "batch_size": bs, "layer": "last_conv"},
        ),
        Candidate(
            "explain_in_memory_feature_res",
            "jax",
            C + "fastfem_fem",
            {
                "model": SAMPLE_MODEL,
                "inputs": inputs,
                "batch_size": bs,
                "layer": "last_conv",
                "resize": False,
            },
        ),
    ]
    # the same at batch 64, where XLA's per-step buffers stay under glibc's 32 MiB mmap
    # threshold (see the malloc config)
    cands += [
        Candidate(
            "audit_png_to_parquet_bs64",
            "jax",
            C + "audit_folder",
            {
                "png_dir": png["path"],
                "model": SAMPLE_MODEL,
                "batch_size": 64,
                "workdir": os.path.join(work, "bs64"),
            },
        ),
        Candidate(
            "explain_in_memory_bs64",
            "jax",
            C + "fastfem_fem",
            {"model": SAMPLE_MODEL, "inputs": inputs, "batch_size": 64, "layer": "last_conv"},
        ),
    ]
    # the flagging at the end of the run, alone: the detectors vs the corner rule they replaced
    cands += [
        Candidate(
            f"flags_{rule}",
            "jax",
            C + "flag_rules_on_store",
            {"png_dir": png["path"], "model": SAMPLE_MODEL, "workdir": work, "rule": rule},
        )
        for rule in ("detectors", "corner")
    ]
    res = run_comparison(w, "audit", cands, reps=3 if quick else 5, warmup=2)
    drop(w, cands)
    shutil.rmtree(work, ignore_errors=True)
    res["n"] = n
    res["png"] = png
    loop = [
        r["extra"]["audit_images_per_s"] for r in res["candidates"]["audit_png_to_parquet"]["reps"]
    ]
    res["audit_loop_images_per_s"] = summarize(loop)
    audit_reps = res["candidates"]["audit_png_to_parquet"]["reps"]
    warm = [n / (r["seconds"] - r.get("jax_compile_s", 0.0)) for r in audit_reps]
    res["audit_excluding_compile_images_per_s"] = summarize(warm)
    res["audit_compile_s_per_call"] = summarize([r.get("jax_compile_s", 0.0) for r in audit_reps])
    explain = [r["items_per_s"] for r in res["candidates"]["explain_in_memory"]["reps"]]
    # the audit's throughput had it ended with the corner rule instead of the detectors:
    # seconds - detectors' seconds + corner rule's seconds, per round
    seconds = {
        name: [r["seconds"] for r in res["candidates"][name]["reps"]]
        for name in ("audit_png_to_parquet", "flags_detectors", "flags_corner")
    }
    res["detectors_cost"] = {
        "detectors_s": summarize(seconds["flags_detectors"]),
        "corner_rule_s": summarize(seconds["flags_corner"]),
        "audit_with_detectors/audit_with_corner_rule": summarize(
            [(a - d + c) / a for a, d, c in zip(*seconds.values(), strict=True)]
        ),
    }
    res["ratios"] = {
        "audit/explain": ratio(res, "audit_png_to_parquet", "explain_in_memory"),
        "audit/explain_feature_res": ratio(
            res, "audit_png_to_parquet", "explain_in_memory_feature_res"
        ),
        "audit excluding its compile/explain": paired_ratios(warm, explain),
        "audit/explain at batch 64": ratio(
            res, "audit_png_to_parquet_bs64", "explain_in_memory_bs64"
        ),
    }
    res["targets"] = {
        "audit >= 0.8x in-memory explain": _targets(res["ratios"]["audit/explain"], 0.8),
        "audit >= 0.8x in-memory explain (feature-res maps)": _targets(
            res["ratios"]["audit/explain_feature_res"], 0.8
        ),
        "audit with detectors >= 0.9x audit with the corner rule": _targets(
            res["detectors_cost"]["audit_with_detectors/audit_with_corner_rule"], 0.9
        ),
        "audit >= 0.8x in-memory explain (batch 64)": _targets(
            res["ratios"]["audit/explain at batch 64"], 0.8
        ),
    }
    return res


def cfg_malloc(w: Workers, quick: bool) -> dict[str, Any]:
    """Bundled CNN, N=2048 (quick 1024): fastfem FEM and its limit at batch 64 and 128, each in
    a JAX worker with glibc's default malloc and in one with a fixed mmap threshold (32 MiB)
    and no trimming (`benchmarks.harness.FIXED_MALLOC_ENV`). Records page faults and system
    time per call: with the default, XLA's per-step buffers may be mmap'ed (and page-faulted
    in) afresh at every step, depending on the process's allocation history; above ~32 MiB of
    temporaries (batch 128 here) they always are."""
    n = 1024 if quick else 2048
    common = {"model": SAMPLE_MODEL, "inputs": _sample(w, n), "layer": "last_conv"}
    cands = []
    for kind, tag in (("jax", "default"), ("jax_fixed_malloc", "fixed")):
        for b in (64, 128):
            cands.append(
                Candidate(
                    f"fastfem_bs{b}_{tag}", kind, C + "fastfem_fem", {**common, "batch_size": b}
                )
            )
            cands.append(
                Candidate(
                    f"limit_bs{b}_{tag}", kind, C + "jax_forward_limit", {**common, "batch_size": b}
                )
            )
    res = run_comparison(w, "malloc", cands, reps=3 if quick else 5)
    drop(w, cands)
    res["n"] = n
    res["page_faults_per_call"] = {
        c: summarize([r["page_faults"] for r in v["reps"]]) for c, v in res["candidates"].items()
    }
    res["sys_s_per_call"] = {
        c: summarize([r["sys_s"] for r in v["reps"]]) for c, v in res["candidates"].items()
    }
    res["ratios"] = {}
    for tag in ("default", "fixed"):
        for b in (64, 128):
            res["ratios"][f"fastfem/limit bs{b} {tag}"] = ratio(
                res, f"fastfem_bs{b}_{tag}", f"limit_bs{b}_{tag}"
            )
    for b in (64, 128):
        res["ratios"][f"fastfem bs{b} fixed/default"] = ratio(
            res, f"fastfem_bs{b}_fixed", f"fastfem_bs{b}_default"
        )
    return res


def cfg_detect_scale(w: Workers, quick: bool) -> dict[str, Any]:
    """`fastfem.audit.detectors.detect` on a synthetic store of N = 1,000,000 (quick 100,000)
    rows of 16x16 maps, in a fresh process: time and peak RSS (`benchmarks.detect_scale`)."""
    from .detect_scale import scale_row

    return scale_row(100_000 if quick else 1_000_000)


def cfg_decode_threads(w: Workers, quick: bool) -> dict[str, Any]:
    """The audit's host side alone (`benchmarks.candidates.decode_folder`: listing, reading,
    JPEG draft decoding, ``fit="crop"`` to 224x224; no device) on N=1024 (quick 256) 640x480
    JPEG photos (quality 90), on 1, 2 and every usable core's threads: images per second, ms
    per image (wall time / images) and the speed-up over one thread. The audit's default on
    this machine (`fastfem.data.records.default_threads`) is recorded beside them."""
    n = 256 if quick else 1024
    folder = w["jax"].call(
        C + "prepare_jpeg_folder",
        path=str(CACHE_DIR / f"jpeg-640x480-{n}"),
        n=n,
        width=640,
        height=480,
    )["path"]
    host = w["jax"].call(C + "host_threads_info")
    counts = sorted({1, 2, host["max_threads"]})
    cands = [
        Candidate(
            f"threads_{t}",
            "jax",
            C + "decode_folder",
            {"folder": folder, "size": 224, "threads": t},
            f"decode + crop to 224 on {t} thread{'s' if t > 1 else ''}",
        )
        for t in counts
    ]
    res = run_comparison(w, "decode_threads", cands, reps=3 if quick else 5)
    drop(w, cands)
    res["n"] = n
    res["photo"] = "640x480 JPEG, quality 90"
    res["cores"] = host["cores"]
    res["default_threads"] = host["default_threads"]
    res["ms_per_image"] = {
        c: summarize([1000.0 / r["items_per_s"] for r in v["reps"]])
        for c, v in res["candidates"].items()
    }
    res["ratios"] = {f"{c.name}/threads_1": ratio(res, c.name, "threads_1") for c in cands[1:]}
    return res


CONFIGS: dict[str, Callable[[Workers, bool], dict[str, Any]]] = {
    "fem_cnn": cfg_fem_cnn,
    "fem_resnet50": cfg_fem_resnet50,
    "fem_mobilenetv2": cfg_fem_mobilenetv2,
    "tf_graph_peers": cfg_tf_graph_peers,
    "fam": cfg_fam,
    "mlfem": cfg_mlfem,
    "kernel": cfg_kernel,
    "scaling": cfg_scaling,
    "batch_sweep": cfg_batch_sweep,
    "bf16": cfg_bf16,
    "audit": cfg_audit,
    "malloc": cfg_malloc,
    "detect_scale": cfg_detect_scale,
    "decode_threads": cfg_decode_threads,
}


def _brief(name: str, res: dict[str, Any]) -> dict[str, Any]:
    """What to print for one configuration."""
    if name.startswith("fem_"):
        return summary_line(res)
    if "skipped" in res or "error" in res or name == "detect_scale":
        return res
    brief: dict[str, Any] = {}
    if "candidates" in res:
        brief["items_per_s"] = {
            n: {k: c["items_per_s"][k] for k in ("median", "min", "max")}
            for n, c in res["candidates"].items()
        }
    for key in (
        "ratios",
        "targets",
        "output_diff",
        "foreign_cpus",
        "audit_loop_images_per_s",
        "audit_excluding_compile_images_per_s",
        "page_faults_per_call",
        "ms_per_image",
    ):
        if key in res:
            brief[key] = res[key]
    for group in ("sizes", "shapes"):
        if group in res:
            brief[group] = {k: _brief("", v) for k, v in res[group].items()}
            if group == "shapes":
                for k, v in res[group].items():
                    brief[group][k]["bandwidth"] = v["bandwidth"]
            if group == "sizes":
                for k, v in res[group].items():
                    brief[group][k]["peak_rss_mb"] = {
                        n: c["peak_rss_mb"]["median"] for n, c in v["candidates"].items()
                    }
                    brief[group][k]["peak_over_start_mb"] = {
                        n: c["peak_over_start_mb"]["median"] for n, c in v["candidates"].items()
                    }
    return brief


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="every configuration, small")
    parser.add_argument("--only", default=None, help="comma list of configurations")
    parser.add_argument("--list", action="store_true", help="list the configurations")
    args = parser.parse_args(argv)
    if args.list:
        for name, fn in CONFIGS.items():
            print(f"{name:16s} {(fn.__doc__ or '').strip().splitlines()[0]}")
        return 0
    names = list(CONFIGS) if not args.only else args.only.split(",")
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        parser.error(f"unknown configuration(s) {unknown}; choose from {list(CONFIGS)}")

    started = time.time()
    payload: dict[str, Any] = {
        "benchmark": "run",
        "quick": args.quick,
        "only": args.only,
        "machine": machine_info(),
        "configs": {},
    }
    with Workers() as workers:
        payload["workers"] = {
            b: workers[b].call("benchmarks.harness:worker_versions") for b in ("jax", "tensorflow")
        }
        for name in names:
            t = time.time()
            try:
                res = CONFIGS[name](workers, args.quick)
            except Exception as err:  # noqa: BLE001 - one failing config must not lose the rest
                log(f"[{name}] FAILED: {err}")
                res = {"error": f"{type(err).__name__}: {err}"}
                workers.close()  # fresh workers (started lazily) for the next configuration
            res["wall_s"] = round(time.time() - t, 1)
            payload["configs"][name] = res
            log(f"[{name}] done in {res['wall_s']}s")
    payload["wall_s"] = round(time.time() - started, 1)
    payload["machine"]["loadavg_end"] = list(os.getloadavg())
    path = write_results("run" + ("-quick" if args.quick else ""), payload)
    print(json.dumps({k: _brief(k, v) for k, v in payload["configs"].items()}, indent=1))
    log(f"wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
