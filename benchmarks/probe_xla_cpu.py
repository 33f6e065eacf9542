#!/usr/bin/env python
"""Probe XLA:CPU forward-pass throughput for fastfem-style Keras-JAX models.

Measures (all timings interleaved within a process, repeated, median/min/max):

  * small CNN (64x64x3; Conv16-Pool-Conv32-Pool-Conv64, relu, same padding)
      - Keras-JAX ``model.stateless_call`` under ``jax.jit`` (device-resident
        input, and numpy input so that the host->device copy is included)
      - the same network written directly with ``lax.conv_general_dilated``
        in NHWC and NCHW, and NHWC in bfloat16
      - TensorFlow eager and ``tf.function(jit_compile=False)`` in a separate
        subprocess (KERAS_BACKEND=tensorflow), with identical weights
  * ResNet50 (weights=None) truncated at ``conv5_block3_3_conv``: Keras-JAX jit
    vs TF eager / tf.function (subprocess)
  * XLA_FLAGS sweep: every setting runs in its own subprocess (flags are read
    when the XLA backend initialises); subprocesses for the different settings
    are run round-robin (A B C A B C ...) so that machine load hits them alike,
    and each reports throughput relative to the "default" runs.

Usage::

    python benchmarks/probe_xla_cpu.py --quick          # ~5 min
    python benchmarks/probe_xla_cpu.py                  # full (~25 min on 2 cores)
    python benchmarks/probe_xla_cpu.py --parts cnn,flags --out results.json

Prints a JSON summary on stdout (progress goes to stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.abspath(__file__)

# ---------------------------------------------------------------------------
# XLA_FLAGS settings compared in the flag sweep (name -> XLA_FLAGS string, or
# a dict with extra options).  All of these flags exist in jaxlib 0.10.2
# (verified: an unknown flag aborts with "Unknown flag in XLA_FLAGS").
# ---------------------------------------------------------------------------
FLAG_CONFIGS = {
    "default": "",
    # YNNPACK fusions (conv/dot/eltwise/reduce-window chains) are on by default
    # in jaxlib 0.10.2; an empty list switches them off -> Eigen convolutions.
    "no_ynn_fusion": "--xla_cpu_experimental_ynn_fusion_type=",
    "no_xnnpack": "--xla_cpu_use_xnnpack=false",
    "xnn_graph_greedy": "--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY",
    "onednn": "--xla_cpu_use_onednn=true",
    "single_thread_eigen": "--xla_cpu_multi_thread_eigen=false",
    "fast_math": "--xla_cpu_enable_fast_math=true",
    "vector_width_512": "--xla_cpu_prefer_vector_width=512",
    "opt_preset_fast_runtime": "--xla_cpu_opt_preset=CPU_OPT_PRESET_FAST_RUNTIME",
    # Not an XLA flag: pin the whole process to one core (thread-pool effect).
    "taskset_1core": {"flags": "", "taskset": "0"},
}
QUICK_FLAG_CONFIGS = [
    "default",
    "no_ynn_fusion",
    "no_xnnpack",
    "onednn",
    "single_thread_eigen",
    "fast_math",
]

CNN_BATCHES = [16, 32, 64, 96, 128, 192, 256, 512]
RESNET_BATCHES = [8, 16, 32, 64]


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def summarize(xs):
    xs = [float(x) for x in xs]
    return {
        "median": round(statistics.median(xs), 2),
        "min": round(min(xs), 2),
        "max": round(max(xs), 2),
        "n": len(xs),
    }


# ---------------------------------------------------------------------------
# Model builders (work under both Keras backends) and deterministic weights.
# ---------------------------------------------------------------------------
def build_small_cnn(keras):
    L = keras.layers
    inp = keras.Input((64, 64, 3))
    x = L.Conv2D(16, 3, padding="same", activation="relu", name="c1")(inp)
    x = L.MaxPooling2D(name="p1")(x)
    x = L.Conv2D(32, 3, padding="same", activation="relu", name="c2")(x)
    x = L.MaxPooling2D(name="p2")(x)
    x = L.Conv2D(64, 3, padding="same", activation="relu", name="c3")(x)
    return keras.Model(inp, x)


def build_resnet_trunc(keras):
    base = keras.applications.ResNet50(weights=None, include_top=False, input_shape=(224, 224, 3))
    return keras.Model(base.input, base.get_layer("conv5_block3_3_conv").output)


def det_weights(model, seed=0):
    """Deterministic weights, identical for both backends (same layer order)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = []
    for w in model.weights:
        shape = tuple(w.shape)
        name = w.path if hasattr(w, "path") else w.name
        if "moving_variance" in name:
            a = rng.uniform(0.5, 1.5, shape)
        elif "gamma" in name:
            a = rng.uniform(0.8, 1.2, shape)
        elif len(shape) >= 2:
            fan_in = int(np.prod(shape[:-1]))
            a = rng.normal(0.0, (2.0 / fan_in) ** 0.5, shape)
        else:
            a = rng.normal(0.0, 0.05, shape)
        out.append(a.astype("float32"))
    model.set_weights(out)
    return out


def make_input(b, hw, seed=1):
    import numpy as np

    return np.random.default_rng(seed).random((b, hw, hw, 3), dtype=np.float32)


def timed_throughput(step, finish, batch, min_time, min_iters=None):
    """Run step() (synchronised after every call, so JAX's async dispatch
    cannot queue up unbounded work) until >= min_time s and >= min_iters
    calls; returns images/s."""
    if min_iters is None:
        min_iters = 1 if min_time <= 0 else 2
    t0 = time.perf_counter()
    n = 0
    while True:
        finish(step())
        n += 1
        if n >= min_iters and time.perf_counter() - t0 >= min_time:
            break
    return n * batch / (time.perf_counter() - t0)


def interleaved(candidates, batches, reps, min_time, warm=1):
    """candidates: name -> (make(b) -> (step, finish)).  Round-robin order:
    for rep: for batch: for candidate.  Returns {name: {batch: [img/s,...]}}."""
    fns = {}
    for b in batches:
        for name, make in candidates.items():
            t = time.perf_counter()
            fns[(name, b)] = make(b)
            step, finish = fns[(name, b)]
            for _ in range(warm):
                finish(step())
            log(f"    prepared {name} b={b} ({time.perf_counter() - t:.1f}s incl. compile)")
    res = {name: {b: [] for b in batches} for name in candidates}
    for r in range(reps):
        for b in batches:
            for name in candidates:
                step, finish = fns[(name, b)]
                res[name][b].append(timed_throughput(step, finish, b, min_time))
        log(f"    rep {r + 1}/{reps} done")
    return res


# ---------------------------------------------------------------------------
# Workers (each runs in its own subprocess)
# ---------------------------------------------------------------------------
def worker_jax_cnn(args):
    os.environ["KERAS_BACKEND"] = "jax"
    import jax
    import jax.numpy as jnp
    import keras
    import numpy as np
    from jax import lax

    model = build_small_cnn(keras)
    W = det_weights(model)
    tv = [v.value for v in model.trainable_variables]
    ntv = [v.value for v in model.non_trainable_variables]

    @jax.jit
    def keras_fwd(tv, ntv, x):
        y, _ = model.stateless_call(tv, ntv, x)
        return y

    # Direct lax versions of the same network (weights W: k1,b1,k2,b2,k3,b3).
    def lax_net(params, x, layout):
        if layout == "NHWC":
            dn = ("NHWC", "HWIO", "NHWC")
            win, bshape = (1, 2, 2, 1), (1, 1, 1, -1)
        else:
            dn = ("NCHW", "OIHW", "NCHW")
            win, bshape = (1, 1, 2, 2), (1, -1, 1, 1)
        for i in range(3):
            k, bias = params[2 * i], params[2 * i + 1]
            x = lax.conv_general_dilated(x, k, (1, 1), "SAME", dimension_numbers=dn)
            x = jnp.maximum(x + bias.reshape(bshape), 0)
            if i < 2:
                x = lax.reduce_window(x, jnp.array(-jnp.inf, x.dtype), lax.max, win, win, "VALID")
        return x

    p_nhwc = [jnp.asarray(w) for w in W]
    p_nchw = [jnp.asarray(w.transpose(3, 2, 0, 1)) if w.ndim == 4 else jnp.asarray(w) for w in W]
    p_bf16 = [p.astype(jnp.bfloat16) for p in p_nhwc]
    nhwc = jax.jit(lambda p, x: lax_net(p, x, "NHWC"))
    nchw = jax.jit(lambda p, x: lax_net(p, x, "NCHW"))

    def blk(y):
        y.block_until_ready()

    def keras_call(x):
        return keras_fwd(tv, ntv, x)

    variants = args.variants.split(",")
    # variant -> (candidate name, input of batch b, forward of that input)
    table = {
        "keras": ("jax_keras_jit", lambda b: jnp.asarray(make_input(b, 64)), keras_call),
        "keras_np": ("jax_keras_jit_numpy_in", lambda b: make_input(b, 64), keras_call),
        "lax_nhwc": (
            "jax_lax_nhwc",
            lambda b: jnp.asarray(make_input(b, 64)),
            lambda x: nhwc(p_nhwc, x),
        ),
        "lax_nchw": (
            "jax_lax_nchw",
            lambda b: jnp.asarray(make_input(b, 64).transpose(0, 3, 1, 2)),
            lambda x: nchw(p_nchw, x),
        ),
        "lax_bf16": (
            "jax_lax_nhwc_bf16",
            lambda b: jnp.asarray(make_input(b, 64)).astype(jnp.bfloat16),
            lambda x: nhwc(p_bf16, x),
        ),
    }

    def candidate(make_x, fwd):
        def mk(b):
            x = make_x(b)
            return (lambda: fwd(x)), blk

        return mk

    cands = {
        name: candidate(make_x, fwd) for v, (name, make_x, fwd) in table.items() if v in variants
    }

    # correctness cross-check (fixed input, batch 4)
    x4 = make_input(4, 64)
    ref = np.asarray(keras_fwd(tv, ntv, jnp.asarray(x4)))
    check = {"checksum": float(ref.sum()), "max_abs": float(np.abs(ref).max())}
    if "lax_nhwc" in variants:
        check["lax_nhwc_max_err"] = float(
            np.abs(np.asarray(nhwc(p_nhwc, jnp.asarray(x4))) - ref).max()
        )
    if "lax_nchw" in variants:
        y = np.asarray(nchw(p_nchw, jnp.asarray(x4.transpose(0, 3, 1, 2)))).transpose(0, 2, 3, 1)
        check["lax_nchw_max_err"] = float(np.abs(y - ref).max())

    # HLO inspection: which ops end up in library (YNN/XNN/oneDNN) fusions
    hlo = {}
    if args.hlo:
        import re

        for b in args.batches:
            txt = keras_fwd.lower(tv, ntv, jnp.zeros((b, 64, 64, 3))).compile().as_text()
            ent = txt[txt.index("ENTRY") :]
            hlo[b] = {
                "fusion_kinds": re.findall(r'"kind":"(\w+)"', ent),
                "standalone_convolutions": len(re.findall(r"\sconvolution\(", ent)),
            }

    res = interleaved(cands, args.batches, args.reps, args.min_time)
    out = {
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "check": check,
        "hlo": hlo,
        "raw": {k: {str(b): v for b, v in d.items()} for k, d in res.items()},
    }
    print("RESULT " + json.dumps(out))


def worker_tf(args, which):
    os.environ["KERAS_BACKEND"] = "tensorflow"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np
    import tensorflow as tf

    if which == "cnn":
        model, hw = build_small_cnn(keras), 64
    else:
        model, hw = build_resnet_trunc(keras), 224
    det_weights(model)
    fn = tf.function(lambda x: model(x, training=False), jit_compile=False)

    def fin(y):
        y.numpy()

    cands = {
        "tf_eager": lambda b: (
            (lambda x=tf.constant(make_input(b, hw)): model(x, training=False)),  # noqa: B008 (bind this batch's input)
            fin,
        ),
        "tf_function": lambda b: ((lambda x=tf.constant(make_input(b, hw)): fn(x)), fin),  # noqa: B008
    }
    x4 = make_input(4, hw)
    ref = model(tf.constant(x4), training=False).numpy()
    check = {"checksum": float(ref.sum()), "max_abs": float(np.abs(ref).max())}
    res = interleaved(cands, args.batches, args.reps, args.min_time)
    out = {
        "check": check,
        "tf_version": tf.__version__,
        "raw": {k: {str(b): v for b, v in d.items()} for k, d in res.items()},
    }
    print("RESULT " + json.dumps(out))


def worker_jax_resnet(args):
    os.environ["KERAS_BACKEND"] = "jax"
    import jax
    import jax.numpy as jnp
    import keras
    import numpy as np

    model = build_resnet_trunc(keras)
    det_weights(model)
    tv = [v.value for v in model.trainable_variables]
    ntv = [v.value for v in model.non_trainable_variables]

    @jax.jit
    def fwd(tv, ntv, x):
        y, _ = model.stateless_call(tv, ntv, x, training=False)
        return y

    def mk(b):
        x = jnp.asarray(make_input(b, 224))
        return (lambda: fwd(tv, ntv, x)), (lambda y: y.block_until_ready())

    ref = np.asarray(fwd(tv, ntv, jnp.asarray(make_input(4, 224))))
    check = {"checksum": float(ref.sum()), "max_abs": float(np.abs(ref).max())}
    res = interleaved({"jax_keras_jit": mk}, args.batches, args.reps, args.min_time)
    out = {
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "check": check,
        "raw": {k: {str(b): v for b, v in d.items()} for k, d in res.items()},
    }
    print("RESULT " + json.dumps(out))


# ---------------------------------------------------------------------------
# Orchestration
# ---------------------------------------------------------------------------
def run_worker(kind, batches, reps, min_time, flags="", extra=(), taskset=None, timeout=1800):
    env = dict(os.environ)
    env["XLA_FLAGS"] = flags
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    cmd = [
        sys.executable,
        HERE,
        "--worker",
        kind,
        "--batches",
        ",".join(map(str, batches)),
        "--reps",
        str(reps),
        "--min-time",
        str(min_time),
        *extra,
    ]
    if taskset is not None:
        cmd = ["taskset", "-c", taskset] + cmd
    t = time.perf_counter()
    p = subprocess.run(
        cmd, env=env, stdout=subprocess.PIPE, stderr=None, text=True, timeout=timeout
    )
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            r = json.loads(line[7:])
            r["wall_s"] = round(time.perf_counter() - t, 1)
            return r
    raise RuntimeError(f"worker {kind} failed (rc={p.returncode})")


def merge_raw(results):
    """Concatenate raw samples of several worker runs: {cand: {batch: [..]}}."""
    out = {}
    for r in results:
        for cand, d in r["raw"].items():
            for b, xs in d.items():
                out.setdefault(cand, {}).setdefault(b, []).extend(xs)
    return out


def part_cnn(a):
    """JAX (several variants, one process) vs TF (other process), alternating
    the two processes `rounds` times so that load drift hits both."""
    variants = "keras,keras_np,lax_nhwc,lax_nchw"
    jax_runs, tf_runs = [], []
    for rnd in range(a.rounds):
        log(f"[cnn] round {rnd + 1}/{a.rounds}: JAX worker")
        jax_runs.append(
            run_worker(
                "jax_cnn",
                a.cnn_batches,
                a.reps,
                a.min_time,
                extra=["--variants", variants] + (["--hlo"] if rnd == 0 else []),
            )
        )
        log(f"[cnn] round {rnd + 1}/{a.rounds}: TF worker")
        tf_runs.append(run_worker("tf_cnn", a.cnn_batches, a.reps, a.min_time))
    # bf16 is far slower on CPU: measured once, at one batch size, interleaved
    # with f32 NHWC in the same process.
    log("[cnn] bf16 vs f32 (lax NHWC), batch 64")
    bf = run_worker("jax_cnn", [64], a.reps, a.min_time, extra=["--variants", "lax_nhwc,lax_bf16"])
    raw = merge_raw(jax_runs + tf_runs)
    table = {c: {b: summarize(xs) for b, xs in d.items()} for c, d in raw.items()}
    bf_raw = bf["raw"]
    bf16 = {c: summarize(d["64"]) for c, d in bf_raw.items()}
    bf16["ratio_bf16_over_f32_median"] = round(
        statistics.median(bf_raw["jax_lax_nhwc_bf16"]["64"])
        / statistics.median(bf_raw["jax_lax_nhwc"]["64"]),
        3,
    )
    # per-sample ratio is impossible across processes; ratio of medians instead
    ratios = {}
    for b in map(str, a.cnn_batches):
        j = table["jax_keras_jit"][b]["median"]
        ratios[b] = {c: round(table[c][b]["median"] / j, 3) for c in table}
    return {
        "img_per_s": table,
        "ratio_vs_jax_keras_jit": ratios,
        "bf16_b64": bf16,
        "hlo": jax_runs[0]["hlo"],
        "checks": {"jax": jax_runs[0]["check"], "tf": tf_runs[0]["check"]},
    }


def part_resnet(a):
    runs_j, runs_t = [], []
    for rnd in range(a.resnet_rounds):
        log(f"[resnet] round {rnd + 1}: JAX worker")
        runs_j.append(run_worker("jax_resnet", a.resnet_batches, a.resnet_reps, a.resnet_min_time))
        log(f"[resnet] round {rnd + 1}: TF worker")
        runs_t.append(run_worker("tf_resnet", a.resnet_batches, a.resnet_reps, a.resnet_min_time))
    raw = merge_raw(runs_j + runs_t)
    table = {c: {b: summarize(xs) for b, xs in d.items()} for c, d in raw.items()}
    return {"img_per_s": table, "checks": {"jax": runs_j[0]["check"], "tf": runs_t[0]["check"]}}


def part_flags(a):
    names = a.flag_configs
    per = {n: [] for n in names}
    for rnd in range(a.flag_rounds):
        for n in names:
            cfg = FLAG_CONFIGS[n]
            flags = cfg if isinstance(cfg, str) else cfg["flags"]
            taskset = None if isinstance(cfg, str) else cfg.get("taskset")
            log(f"[flags] round {rnd + 1}/{a.flag_rounds}: {n}")
            try:
                per[n].append(
                    run_worker(
                        "jax_cnn",
                        a.flag_batches,
                        a.flag_reps,
                        a.min_time,
                        flags=flags,
                        taskset=taskset,
                        extra=["--variants", "keras", "--hlo"],
                    )
                )
            except Exception as e:  # noqa: BLE001
                log(f"    FAILED: {e}")
    out = {}
    base = merge_raw(per["default"])["jax_keras_jit"] if per.get("default") else None
    for n in names:
        if not per[n]:
            out[n] = {"error": "failed"}
            continue
        raw = merge_raw(per[n])["jax_keras_jit"]
        cfg = FLAG_CONFIGS[n]
        ent = {
            "xla_flags": cfg if isinstance(cfg, str) else cfg,
            "hlo": per[n][0]["hlo"].get(
                str(a.flag_batches[0]), per[n][0]["hlo"].get(a.flag_batches[0])
            ),
            "checksum": per[n][0]["check"]["checksum"],
            "img_per_s": {b: summarize(xs) for b, xs in raw.items()},
        }
        if base:
            ent["ratio_vs_default_median"] = {
                b: round(statistics.median(raw[b]) / statistics.median(base[b]), 3) for b in raw
            }
        out[n] = ent
    return out


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="fewer batches/reps/configs")
    ap.add_argument("--parts", default="cnn,resnet,flags")
    ap.add_argument("--out", default=None, help="also write the JSON summary here")
    ap.add_argument(
        "--flag-configs",
        default=None,
        help="comma list of FLAG_CONFIGS names for the flag sweep (must include default)",
    )
    ap.add_argument(
        "--flag-rounds", type=int, default=None, help="round-robin rounds in the flag sweep"
    )
    # worker-side options
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--batches", default="64", help=argparse.SUPPRESS)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--min-time", type=float, default=None, help="seconds per timed sample")
    ap.add_argument("--variants", default="keras", help=argparse.SUPPRESS)
    ap.add_argument("--hlo", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()

    if a.worker:
        a.batches = [int(b) for b in a.batches.split(",")]
        a.min_time = a.min_time or 0.4
        {
            "jax_cnn": worker_jax_cnn,
            "tf_cnn": lambda x: worker_tf(x, "cnn"),
            "tf_resnet": lambda x: worker_tf(x, "resnet"),
            "jax_resnet": worker_jax_resnet,
        }[a.worker](a)
        return

    cli_flag_configs, cli_flag_rounds = a.flag_configs, a.flag_rounds
    if a.quick:
        a.cnn_batches, a.rounds, a.reps = [16, 64, 128, 512], 1, 5
        a.min_time = a.min_time or 0.25
        a.resnet_batches, a.resnet_rounds, a.resnet_reps, a.resnet_min_time = [8], 1, 3, 0.0
        a.flag_configs, a.flag_rounds, a.flag_reps, a.flag_batches = (
            QUICK_FLAG_CONFIGS,
            1,
            3,
            [64, 256],
        )
    else:
        a.cnn_batches, a.rounds, a.reps = CNN_BATCHES, 2, 3
        a.min_time = a.min_time or 0.4
        a.resnet_batches, a.resnet_rounds, a.resnet_reps, a.resnet_min_time = (
            RESNET_BATCHES,
            1,
            3,
            0.0,
        )
        a.flag_configs, a.flag_rounds, a.flag_reps, a.flag_batches = (
            list(FLAG_CONFIGS),
            2,
            3,
            [64, 256],
        )

    if cli_flag_configs:
        a.flag_configs = cli_flag_configs.split(",")
    if cli_flag_rounds:
        a.flag_rounds = cli_flag_rounds

    import platform

    summary = {
        "python": sys.version.split()[0],
        "machine": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "quick": a.quick,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    t0 = time.perf_counter()
    parts = a.parts.split(",")
    if "cnn" in parts:
        summary["small_cnn"] = part_cnn(a)
    if "resnet" in parts:
        summary["resnet50_to_conv5_block3_3_conv"] = part_resnet(a)
    if "flags" in parts:
        summary["xla_flags_small_cnn"] = part_flags(a)
    summary["wall_s"] = round(time.perf_counter() - t0, 1)
    txt = json.dumps(summary, indent=1)
    if a.out:
        with open(a.out, "w") as f:
            f.write(txt)
    print(txt)


if __name__ == "__main__":
    main()
