"""One call that measures fastfem on an accelerator (or the CPU) and writes one JSON.

Needs JAX, Flax, NumPy, Pillow and PyArrow; no TensorFlow and no Keras (the model is a Flax
ResNet built here, `ResNet`, run through `fastfem.converters.from_flax`). Phases, each timed
after a warm-up call (its first call, compilation included, reported apart), every rate the
median (min-max) over ``--reps`` rounds:

1. ``fem``: ``fastfem.FEM.explain`` of N random images (float32, NumPy in, maps out) vs the
   forward pass alone to the explained layer (the same batch loop, `fastfem.engine.runner.Runner`,
   activations summed on the device: nothing else comes back), interleaved round by round;
   the model in float32 and in bfloat16 (compute and activations in bf16, parameters float32),
   with the bf16 maps' difference from the float32 ones;
2. ``mlfem``: ``fastfem.MLFEM`` on the last convolution of each of the four stages;
3. ``fam``: ``fastfem.FAM`` on N / 2 query-reference pairs (both images through the model);
4. ``audit``: ``fastfem.audit.audit`` of a folder of generated JPEG photos (default 20,000 of
   640x480, quality 90; a pool of photo-like images shifted and re-encoded) with ``fit="crop"``
   and the audit's default host threads (every core on an accelerator), and the same folder
   read by the audit's source alone on those threads (decoding, no device): the host decode
   share is that decode time over the audit's time after compilation (near 1: the host
   decoding bounds the audit);
5. ``decode_threads``: the audit's host side alone on ``--decode-n`` (2,000) of those photos,
   on 1, 2 and all cores' threads: img/s, ms per image, speed-up over one thread;
6. the device's peak memory (``memory_stats()["peak_bytes_in_use"]``; null where the backend
   keeps none, e.g. the CPU), read after each phase.

Phases run in the order fem, audit, decode_threads, mlfem, fam. A phase that would start after
``--budget-s`` seconds (default 360: the last one started has two minutes left of eight) is
skipped (named in the JSON); the JSON is rewritten after each phase, so a run stopped from
outside keeps what it measured. ``peak_device_bytes``: the peak so far, after each phase.
Usage (``benchmarks/device_check.sh`` wraps it)::

    python -m benchmarks.device_check --out device-check.json             # ResNet50-224
    python -m benchmarks.device_check --size 32 --stages 1,1,1,1 --width 8 --n 16 \\
        --batch 8 --reps 1 --audit-n 12 --photo 64x48 --out tiny.json     # a smoke run
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# ----------------------------------------------------------------------------- the model


def resnet_module(stages: Sequence[int], width: int, classes: int, dtype: Any) -> Any:
    """A ResNet v1.5 (bottleneck blocks; ``stages`` = (3, 4, 6, 3), ``width`` 64: ResNet50) as a
    Flax linen module computing in ``dtype`` (parameters float32). Convolutions are named
    ``stage{s}_block{b}/conv{1,2,3}`` (and ``/proj``), the stem ``stem``; BatchNorm in
    inference mode (running averages)."""
    import flax.linen as nn
    import jax.numpy as jnp

    def norm(name: str) -> Any:
        return nn.BatchNorm(use_running_average=True, dtype=dtype, name=name)

    class Bottleneck(nn.Module):
        features: int
        stride: int

        @nn.compact
        def __call__(self, x: Any) -> Any:
            conv = lambda f, k, s, name: nn.Conv(  # noqa: E731
                f, (k, k), (s, s), use_bias=False, dtype=dtype, name=name
            )
            y = nn.relu(norm("bn1")(conv(self.features, 1, 1, "conv1")(x)))
            y = nn.relu(norm("bn2")(conv(self.features, 3, self.stride, "conv2")(y)))
            y = norm("bn3")(conv(4 * self.features, 1, 1, "conv3")(y))
            if x.shape[-1] != 4 * self.features or self.stride != 1:
                x = norm("proj_bn")(conv(4 * self.features, 1, self.stride, "proj")(x))
            return nn.relu(x + y)

    class ResNet(nn.Module):
        @nn.compact
        def __call__(self, x: Any) -> Any:
            x = nn.Conv(width, (7, 7), (2, 2), use_bias=False, dtype=dtype, name="stem")(x)
            x = nn.relu(norm("stem_bn")(x))
            x = nn.max_pool(x, (3, 3), (2, 2), padding="SAME")
            for s, blocks in enumerate(stages):
                for b in range(blocks):
                    stride = 2 if s > 0 and b == 0 else 1
                    x = Bottleneck(width * 2**s, stride, name=f"stage{s + 1}_block{b + 1}")(x)
            x = jnp.mean(x, axis=(1, 2))
            return nn.Dense(classes, dtype=jnp.float32, name="head")(x.astype(jnp.float32))

    return ResNet()


def stage_layers(stages: Sequence[int]) -> list[str]:
    """The last convolution of each stage (MLFEM's layers; the last one is FEM's default)."""
    return [f"stage{s + 1}_block{b}/conv3" for s, b in enumerate(stages)]


@dataclass(frozen=True)
class Models:
    """The float32 and bfloat16 modules sharing one set of variables; ``forward`` keeps the
    forward-pass loops made so far (one compilation each, shared by the phases)."""

    f32: Any
    bf16: Any
    variables: Any
    input_shape: tuple[int, int, int]
    layers: list[str]
    forward: dict[str, Callable[[], int]] = field(default_factory=dict, compare=False)


def init_variables(module: Any, input_shape: tuple[int, int, int], seed: int = 0) -> Any:
    """The module's variables made on the host from their shapes alone (``jax.eval_shape`` of
    ``init``: nothing compiled): convolution and dense kernels He-normal (std ``sqrt(2 /
    fan_in)``), BatchNorm scales and running variances 1, biases and running means 0."""
    import jax
    import jax.numpy as jnp

    shapes = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, *input_shape)))
    rng = np.random.default_rng(seed)

    def make(path: Any, leaf: Any) -> np.ndarray:
        name = str(getattr(path[-1], "key", path[-1]))
        if name == "kernel":
            fan_in = int(np.prod(leaf.shape[:-1]))
            w = rng.standard_normal(leaf.shape, dtype=np.float32)
            return w * np.float32(np.sqrt(2.0 / fan_in))
        fill = 1.0 if name in ("scale", "var") else 0.0
        return np.full(leaf.shape, fill, np.float32)

    return jax.tree_util.tree_map_with_path(make, shapes)


def build_models(size: int, stages: Sequence[int], width: int, classes: int) -> Models:
    """Both modules, their variables made once (`init_variables`, seed 0) at ``size x size x
    3``."""
    import jax.numpy as jnp

    f32 = resnet_module(stages, width, classes, jnp.float32)
    bf16 = resnet_module(stages, width, classes, jnp.bfloat16)
    shape = (size, size, 3)
    return Models(f32, bf16, init_variables(f32, shape), shape, stage_layers(stages))


def extractor(
    models: Models, bf16: bool = False, layers: Any = None, include_output: bool = False
) -> Any:
    """`fastfem.converters.from_flax` of the float32 or bfloat16 module (``layers`` default:
    the last stage's last convolution)."""
    from fastfem.converters import from_flax

    return from_flax(
        models.bf16 if bf16 else models.f32,
        models.variables,
        layers=models.layers[-1] if layers is None else layers,
        input_shape=models.input_shape,
        include_output=include_output,
    )


# ------------------------------------------------------------------------------ timing


def rate_summary(xs: Sequence[float]) -> dict[str, Any]:
    """median, min, max (3 significant digits) and n of a sample of rates."""
    if not xs:
        return {"median": None, "min": None, "max": None, "n": 0}
    r = lambda v: float(f"{v:.3g}")  # noqa: E731
    return {"median": r(statistics.median(xs)), "min": r(min(xs)), "max": r(max(xs)), "n": len(xs)}


def rounds(cands: dict[str, Callable[[], int]], reps: int) -> dict[str, Any]:
    """Each candidate called once untimed-for-rate (its first call: compilation included, in
    seconds), then ``reps`` rounds of one call each, the order rotated every round: items per
    second per round, summarised, with the first candidate's rate over each other's, paired by
    round."""
    names = list(cands)
    first = {}
    for name in names:
        t = time.perf_counter()
        cands[name]()
        first[name] = round(time.perf_counter() - t, 3)
    rates: dict[str, list[float]] = {name: [] for name in names}
    for r in range(reps):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            t = time.perf_counter()
            items = cands[name]()
            rates[name].append(items / (time.perf_counter() - t))
    out: dict[str, Any] = {
        name: {"items_per_s": rate_summary(v), "first_call_s": first[name]}
        for name, v in rates.items()
    }
    for other in names[1:]:
        pairs = [a / b for a, b in zip(rates[names[0]], rates[other], strict=True)]
        out[f"{names[0]}/{other}"] = rate_summary(pairs)
    return out


def forward_loop(models: Models, bf16: bool, x: np.ndarray, batch_size: int) -> Callable[[], int]:
    """The forward pass alone in fastfem's batch loop: the explained layer's activations summed
    per image on the device (N floats back); made once per dtype (``models.forward``)."""
    import jax.numpy as jnp

    from fastfem.data.sources import stream_images
    from fastfem.engine.runner import Runner

    key = f"{'bfloat16' if bf16 else 'float32'}-{batch_size}-{x.shape}"
    if key in models.forward:
        return models.forward[key]
    ext = extractor(models, bf16)

    def step(params: Any, batch: Any) -> Any:
        act = ext.apply(params, batch["x"]).activations[0]
        return {"sum": jnp.sum(act.astype(jnp.float32), axis=(1, 2, 3))}

    runner = Runner(step, batch_size)

    def run() -> int:
        stream = stream_images(x, batch_size, ext.input_shape)
        outs = runner.run(ext.params, ({"x": b} for b in stream.batches), stream.count)
        np.concatenate([o["sum"] for o in outs])
        return len(x)

    models.forward[key] = run
    return run


def peak_device_bytes() -> int | None:
    """The first local device's peak bytes in use so far; None where the backend keeps none."""
    import jax

    stats = jax.local_devices()[0].memory_stats()
    if not stats or "peak_bytes_in_use" not in stats:
        return None
    return int(stats["peak_bytes_in_use"])


# ------------------------------------------------------------------------------- phases


@dataclass
class Config:
    """Sizes of a run (command-line options)."""

    size: int = 224
    stages: tuple[int, ...] = (3, 4, 6, 3)
    width: int = 64
    classes: int = 1000
    n: int = 4096
    batch: int = 256
    reps: int = 3
    audit_n: int = 20_000
    photo: tuple[int, int] = (640, 480)
    audit_batch: int = 256
    decode_n: int = 2000
    budget_s: float = 360.0
    workdir: str | None = None


def fem_phase(cfg: Config, models: Models, x: np.ndarray) -> dict[str, Any]:
    """Phase 1 (module docstring): FEM vs the forward pass, float32 and bfloat16."""
    from fastfem import FEM

    out: dict[str, Any] = {"n": len(x), "batch_size": cfg.batch, "layer": models.layers[-1]}
    maps = {}
    for dtype, bf16 in (("float32", False), ("bfloat16", True)):
        ext = extractor(models, bf16)
        fem = FEM(ext, batch_size=cfg.batch)
        state: dict[str, Any] = {}

        def explain(fem: Any = fem, state: dict = state) -> int:
            state["maps"] = fem.explain(x)
            return len(x)

        forward = forward_loop(models, bf16, x, cfg.batch)
        res = rounds({"fem": explain, "forward": forward}, cfg.reps)
        maps[dtype] = state["maps"]
        out[dtype] = {
            "fem_images_per_s": res["fem"]["items_per_s"],
            "forward_images_per_s": res["forward"]["items_per_s"],
            "fem_vs_forward": res["fem/forward"],
            "first_call_s": {k: res[k]["first_call_s"] for k in ("fem", "forward")},
        }
    ref = maps["float32"].astype(np.float64)
    diff = np.abs(maps["bfloat16"].astype(np.float64) - ref)
    scale = float(np.abs(ref).max()) or 1.0
    out["bf16_vs_f32_maps"] = {
        "max_abs_diff_over_max": float(f"{diff.max() / scale:.3g}"),
        "mean_abs_diff_over_max": float(f"{diff.mean() / scale:.3g}"),
    }
    medians = [out[d]["fem_images_per_s"]["median"] for d in ("bfloat16", "float32")]
    out["bf16_over_f32_fem_medians"] = float(f"{medians[0] / medians[1]:.3g}")
    return out


def mlfem_phase(cfg: Config, models: Models, x: np.ndarray) -> dict[str, Any]:
    """Phase 2: MLFEM over the four stages' last convolutions (float32), vs the forward pass to
    the deepest of them."""
    from fastfem import MLFEM

    ext = extractor(models, layers=models.layers)
    ml = MLFEM(ext, batch_size=cfg.batch)
    res = rounds(
        {
            "mlfem": lambda: len(ml.explain(x)),
            "forward": forward_loop(models, False, x, cfg.batch),
        },
        cfg.reps,
    )
    return {
        "n": len(x),
        "layers": models.layers,
        "mlfem_images_per_s": res["mlfem"]["items_per_s"],
        "forward_images_per_s": res["forward"]["items_per_s"],
        "mlfem_vs_forward": res["mlfem/forward"],
        "first_call_s": res["mlfem"]["first_call_s"],
    }


def fam_phase(cfg: Config, models: Models, x: np.ndarray) -> dict[str, Any]:
    """Phase 3: FAM on N/2 pairs (float32; both images of a pair through the model)."""
    from fastfem import FAM

    half = len(x) // 2
    q, r = x[:half], x[half : 2 * half]
    fam = FAM(extractor(models), batch_size=cfg.batch)
    res = rounds({"fam": lambda: len(fam.explain(q, r))}, cfg.reps)
    return {
        "pairs": half,
        "fam_pairs_per_s": res["fam"]["items_per_s"],
        "first_call_s": res["fam"]["first_call_s"],
    }


def photo_pool(width: int, height: int, count: int, threads: int) -> list[np.ndarray]:
    """``count`` photo-like images (`benchmarks.bench_decode.photo`, seeds 0..count-1)."""
    from .bench_decode import photo

    def one(seed: int) -> np.ndarray:
        return photo(width, height, np.random.default_rng(seed))

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, range(count)))


def write_photos(folder: Path, n: int, size: tuple[int, int], threads: int) -> dict[str, Any]:
    """``n`` JPEGs (quality 90) of ``size`` = (width, height) under ``folder``: a pool of 16
    photos, each file one of them shifted (wrapped) by its own offsets, encoded on ``threads``
    threads. Made once per folder (a ``.complete`` marker)."""
    from PIL import Image

    done = folder / ".complete"
    if not done.exists():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        pool = photo_pool(*size, min(16, n), threads)
        rng = np.random.default_rng(1)
        shifts = rng.integers(0, max(size), (n, 2))

        def one(i: int) -> None:
            img = np.roll(pool[i % len(pool)], tuple(shifts[i]), axis=(0, 1))
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="JPEG", quality=90)
            (folder / f"photo-{i:06d}.jpg").write_bytes(buf.getvalue())

        with ThreadPoolExecutor(threads) as ex:
            list(ex.map(one, range(n)))
        done.write_text(str(n))
    files = list(folder.glob("*.jpg"))
    return {"files": len(files), "bytes": sum(f.stat().st_size for f in files)}


def audit_phase(cfg: Config, models: Models, work: Path) -> dict[str, Any]:
    """Phase 4: the audit of generated JPEGs vs its host decoding alone (module docstring)."""
    from fastfem.audit import audit
    from fastfem.data.records import ReadOptions, default_threads, usable_cores
    from fastfem.data.sources import open_source

    w, h = cfg.photo
    folder = work / f"jpeg-{w}x{h}-{cfg.audit_n}"
    t = time.perf_counter()
    made = write_photos(folder, cfg.audit_n, cfg.photo, usable_cores())
    made_s = time.perf_counter() - t
    threads = default_threads()
    ext = extractor(models, include_output=True)
    store = work / "store"
    shutil.rmtree(store, ignore_errors=True)
    summary = audit(folder, ext, out=store, fit="crop", batch_size=cfg.audit_batch).to_dict()
    shutil.rmtree(store, ignore_errors=True)
    t = time.perf_counter()
    src = open_source(folder, models.input_shape, ReadOptions(fit="crop", threads=threads))
    decoded = sum(1 for rec in src.read(lambda i, rid: True) if rec.error is None)
    decode_s = time.perf_counter() - t
    running = summary["seconds"] - summary["compile_seconds"]
    return {
        "images": cfg.audit_n,
        "photo": f"{w}x{h} JPEG, quality 90",
        "fit": "crop",
        "batch_size": cfg.audit_batch,
        "threads": threads,
        "generated": {**made, "seconds": round(made_s, 2)},
        "audit_images_per_s": round(summary["images_per_second"], 1),
        "audit_seconds": round(summary["seconds"], 2),
        "audit_compile_seconds": round(summary["compile_seconds"], 2),
        "processed": summary["processed"],
        "errors": summary["errors"],
        "decode_only_images_per_s": round(decoded / decode_s, 1),
        "decode_only_seconds": round(decode_s, 2),
        "decode_only_ok": decoded,
        "host_decode_share": round(decode_s / running, 3) if running > 0 else None,
    }


def decode_threads_phase(cfg: Config, models: Models, work: Path) -> dict[str, Any]:
    """Phase 5: the audit's host side alone (`benchmarks.candidates.decode_folder`: listing,
    reading, JPEG draft decoding, crop to the model's size) on ``--decode-n`` generated photos,
    on 1, 2 and every usable core's threads (at most the accelerator bound): img/s, ms per
    image, and the speed-up over one thread, paired by round."""
    from fastfem.data.records import MAX_ACCELERATOR_THREADS, usable_cores

    from .candidates import decode_folder

    w, h = cfg.photo
    folder = work / f"jpeg-{w}x{h}-{cfg.decode_n}"
    cores = usable_cores()
    write_photos(folder, cfg.decode_n, cfg.photo, cores)
    counts = sorted({1, 2, min(cores, MAX_ACCELERATOR_THREADS)})
    cands = {
        f"threads_{t}": decode_folder(str(folder), models.input_shape[0], t).run for t in counts
    }
    res = rounds(cands, cfg.reps)
    rows = {}
    for name in cands:
        ips = res[name]["items_per_s"]
        rows[name] = {
            "images_per_s": ips,
            "ms_per_image": float(f"{1000 / ips['median']:.3g}"),
            "vs_threads_1": res.get(f"threads_1/{name}", {}).get("median"),
        }
        if rows[name]["vs_threads_1"]:  # rounds gives threads_1 / other: invert to a speed-up
            rows[name]["vs_threads_1"] = float(f"{1 / rows[name]['vs_threads_1']:.3g}")
    return {"images": cfg.decode_n, "photo": f"{w}x{h} JPEG, quality 90", "cores": cores, **rows}


# ---------------------------------------------------------------------------------- run


def environment() -> dict[str, Any]:
    """Where it ran: devices, versions, cores, the audit's default threads."""
    import jax

    from fastfem.data.records import default_threads, usable_cores

    dev = jax.local_devices()[0]
    versions = {}
    for pkg in ("jax", "jaxlib", "flax", "numpy", "PIL", "pyarrow"):
        try:
            versions[pkg] = __import__(pkg).__version__
        except Exception:  # noqa: BLE001 - a version we cannot read is reported as None
            versions[pkg] = None
    return {
        "backend": jax.default_backend(),
        "matmul_precision": str(jax.config.jax_default_matmul_precision),
        "device": dev.device_kind,
        "devices": len(jax.local_devices()),
        "cores": usable_cores(),
        "default_threads": default_threads(),
        "python": platform.python_version(),
        "versions": versions,
        **{f"{m}_imported": sys.modules.get(m) is not None for m in ("tensorflow", "keras")},
    }


PHASES = ("fem", "audit", "decode_threads", "mlfem", "fam")  # the headline ones first


def run(cfg: Config, out: Path, phases: Sequence[str] = PHASES) -> dict[str, Any]:
    """Every phase in order, the JSON at ``out`` rewritten after each (module docstring)."""
    started = time.perf_counter()
    work = Path(cfg.workdir or tempfile.mkdtemp(prefix="fastfem-device-check-"))
    result: dict[str, Any] = {
        "check": "device_check",
        "utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": {**cfg.__dict__, "stages": list(cfg.stages), "photo": list(cfg.photo)},
        "environment": environment(),
        "phases": {},
        "peak_device_bytes": {},
    }
    t = time.perf_counter()
    models = build_models(cfg.size, cfg.stages, cfg.width, cfg.classes)
    x = np.random.default_rng(0).random((cfg.n, cfg.size, cfg.size, 3), dtype=np.float32)
    result["build_s"] = round(time.perf_counter() - t, 2)
    runners = {
        "fem": lambda: fem_phase(cfg, models, x),
        "mlfem": lambda: mlfem_phase(cfg, models, x),
        "fam": lambda: fam_phase(cfg, models, x),
        "audit": lambda: audit_phase(cfg, models, work),
        "decode_threads": lambda: decode_threads_phase(cfg, models, work),
    }
    for name in phases:
        elapsed = time.perf_counter() - started
        if elapsed > cfg.budget_s:
            result["phases"][name] = {"skipped": f"{elapsed:.0f} s spent, over --budget-s"}
            continue
        t = time.perf_counter()
        try:
            res = runners[name]()
        except Exception as err:  # noqa: BLE001 - one failing phase must not lose the others
            res = {"error": f"{type(err).__name__}: {err}"}
        res["wall_s"] = round(time.perf_counter() - t, 2)
        result["phases"][name] = res
        result["peak_device_bytes"][name] = peak_device_bytes()
        result["wall_s"] = round(time.perf_counter() - started, 2)
        write_json(result, out)
        print(f"[device_check] {name} done in {res['wall_s']} s", file=sys.stderr, flush=True)
    if cfg.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    result["wall_s"] = round(time.perf_counter() - started, 2)
    write_json(result, out)
    return result


def write_json(result: dict[str, Any], out: Path) -> None:
    """``result`` as indented JSON at ``out``, replaced atomically."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(out)


def parse_config(argv: Sequence[str] | None) -> tuple[Config, Path, list[str]]:
    """Command line -> (`Config`, the JSON path, the phases to run)."""
    d = Config()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="benchmarks/results/device-check.json")
    p.add_argument("--size", type=int, default=d.size, help="model input side (224)")
    p.add_argument("--stages", default="3,4,6,3", help="blocks per stage (ResNet50: 3,4,6,3)")
    p.add_argument("--width", type=int, default=d.width, help="first stage's width (64)")
    p.add_argument("--classes", type=int, default=d.classes)
    p.add_argument("--n", type=int, default=d.n, help="images for FEM/MLFEM (FAM: n/2 pairs)")
    p.add_argument("--batch", type=int, default=d.batch)
    p.add_argument("--reps", type=int, default=d.reps)
    p.add_argument("--audit-n", type=int, default=d.audit_n, help="JPEG files to audit")
    p.add_argument("--photo", default="640x480", help="audited photos' WIDTHxHEIGHT")
    p.add_argument("--audit-batch", type=int, default=d.audit_batch)
    p.add_argument("--decode-n", type=int, default=d.decode_n, help="JPEGs per threads row")
    p.add_argument("--budget-s", type=float, default=d.budget_s, help="no phase starts after")
    p.add_argument("--workdir", default=None, help="keep the generated JPEGs here (reused)")
    p.add_argument("--phases", default=",".join(PHASES), help=f"subset of {','.join(PHASES)}")
    a = p.parse_args(argv)
    phases = [s for s in a.phases.split(",") if s]
    unknown = [s for s in phases if s not in PHASES]
    if unknown:
        p.error(f"unknown phases {unknown}; choose from {list(PHASES)}")
    pw, ph = (int(v) for v in a.photo.lower().split("x"))
    cfg = Config(
        a.size,
        tuple(int(s) for s in a.stages.split(",")),
        a.width,
        a.classes,
        a.n,
        a.batch,
        a.reps,
        a.audit_n,
        (pw, ph),
        a.audit_batch,
        a.decode_n,
        a.budget_s,
        a.workdir,
    )
    return cfg, Path(a.out), phases


def main(argv: Sequence[str] | None = None) -> int:
    cfg, out, phases = parse_config(argv)
    result = run(cfg, out, phases)
    failed = [k for k, v in result["phases"].items() if "error" in v]
    print(json.dumps({"out": str(out), "wall_s": result["wall_s"], "failed": failed}))
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    sys.exit(main())
