"""Benchmark harness: one coordinator, persistent worker subprocesses, interleaved repetitions.

Keras picks its backend once per process, so fastfem (Keras on JAX) and its TensorFlow peers
(Xplique, eager/graph TF; Keras on TensorFlow) cannot share a process. The coordinator (this
module, imported by ``benchmarks.bench_fem`` / ``benchmarks.run``; it never imports JAX, Keras
or TensorFlow) starts one persistent **worker** per side::

    python -m benchmarks.harness --worker      (KERAS_BACKEND=jax | tensorflow)

and talks to it with JSON lines on stdin/stdout (the worker moves its own fd 1 to stderr, so
library prints cannot corrupt the protocol). A benchmark **candidate** is built inside a worker
by a factory ``"module:function"`` called with JSON keyword arguments; it returns a `Bench`
(``run() -> items``). The worker times the first call (compilation + one run) and the second
call (warm) at set-up, so compile time is reported apart from throughput.

Timed repetitions are then requested **one at a time, round robin over every candidate of a
configuration** (A B C, B C A, C A B, ...: ``reps`` rounds, the order rotated each round so no
candidate always comes first or right after the other worker): only one worker computes at any
moment and all candidates see the same machine conditions, so a load burst from another job
hits the neighbouring repetitions of every candidate alike. Before each repetition the worker
runs ``gc.collect()``, so no candidate pays for the previous one's garbage. Each repetition
reports its wall time, the worker's CPU time (user and system), JAX compile time spent inside it
(0 unless something retraced), and the CPU time that *other* processes used meanwhile (from
``/proc/stat``): the noise level, recorded in the result JSON next to the numbers.

Statistics: median / min / max over repetitions of the per-repetition throughput
(items / wall second), and *paired* ratios: ratio of candidate A's repetition i to B's
repetition i of the same round (neighbours in time), summarised the same way.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import gc
import importlib
import json
import os
import platform
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = Path(__file__).resolve().parent / "results"
#: Models and inputs shared by the workers (``FASTFEM_BENCH_CACHE`` overrides).
CACHE_DIR = Path(
    os.environ.get("FASTFEM_BENCH_CACHE", Path(tempfile.gettempdir()) / "fastfem-bench-cache")
)
PACKAGES = (
    "fastfem",
    "jax",
    "jaxlib",
    "keras",
    "tensorflow",
    "xplique",
    "numpy",
    "pyarrow",
    "pillow",
)


def log(*args: Any) -> None:
    print(*args, file=sys.stderr, flush=True)


# =========================================================================== worker side


@dataclasses.dataclass
class Bench:
    """What a candidate factory returns (inside a worker).

    run: does the timed work once and returns the number of items processed (images, pairs).
    before: untimed preparation before each call of ``run`` (e.g. delete last run's output).
    output: the result of the last ``run`` to compare with other candidates (an array, saved
      as .npy by the worker on request), or None.
    info: JSON-able facts about the candidate (batch size, layer, shapes...).
    extra: called after each timed ``run`` (untimed); its dict is stored with the repetition.
    """

    run: Callable[[], int]
    before: Callable[[], None] | None = None
    output: Callable[[], Any] | None = None
    info: dict[str, Any] = dataclasses.field(default_factory=dict)
    extra: Callable[[], dict[str, Any]] | None = None


def _proc_status() -> dict[str, int]:
    """VmRSS and VmHWM of this process, in bytes."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key = line.split(":", 1)[0]
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(line.split()[1]) * 1024
    return out


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux: ``echo 5 > /proc/self/clear_refs``)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def _sys_seconds() -> float:
    return os.times().system


def _minor_faults() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


#: Seconds JAX spent tracing, lowering and compiling in this worker (JAX workers only).
_COMPILE_S = [0.0]
_COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)


def _track_jax_compiles() -> None:
    """Accumulate JAX's compile-duration events into ``_COMPILE_S`` (catches recompiles)."""
    import jax.monitoring

    def listener(event: str, duration: float, **_: Any) -> None:
        if event in _COMPILE_EVENTS:
            _COMPILE_S[0] += duration

    jax.monitoring.register_event_duration_secs_listener(listener)


def _resolve(spec: str) -> Callable[..., Any]:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


class _WorkerState:
    def __init__(self) -> None:
        self.cands: dict[str, Bench] = {}

    def setup(self, name: str, factory: str, kwargs: dict[str, Any], warmup: int) -> dict:
        t0 = time.perf_counter()
        bench = _resolve(factory)(**kwargs)
        setup_s = time.perf_counter() - t0
        times, compiles = [], []
        for _ in range(max(1, warmup)):
            if bench.before is not None:
                bench.before()
            c0 = _COMPILE_S[0]
            t = time.perf_counter()
            items = bench.run()
            times.append(time.perf_counter() - t)
            compiles.append(_COMPILE_S[0] - c0)
        self.cands[name] = bench
        return {
            "setup_s": setup_s,
            "first_call_s": times[0],
            "jax_compile_s": compiles,
            "warm_call_s": times[1:],
            "items": items,
            "info": bench.info,
        }

    def rep(self, name: str, memory: bool) -> dict:
        bench = self.cands[name]
        if bench.before is not None:
            bench.before()
        out: dict[str, Any] = {}
        gc.collect()  # the previous run's garbage is not collected inside this one
        if memory:
            out["rss_before"] = _proc_status()["VmRSS"]
            out["peak_reset"] = _reset_peak_rss()
        c0, s0, f0, k0 = _cpu_seconds(), _sys_seconds(), _minor_faults(), _COMPILE_S[0]
        t0 = time.perf_counter()
        items = bench.run()
        out["seconds"] = time.perf_counter() - t0
        out["cpu_s"] = _cpu_seconds() - c0
        out["sys_s"] = _sys_seconds() - s0
        out["page_faults"] = _minor_faults() - f0
        out["jax_compile_s"] = _COMPILE_S[0] - k0
        out["items"] = items
        if memory:
            out["peak_rss"] = _proc_status()["VmHWM"]
        if bench.extra is not None:
            out["extra"] = bench.extra()
        return out

    def save_output(self, name: str, path: str, rows: int | None) -> dict:
        import numpy as np

        bench = self.cands[name]
        if bench.output is None:
            return {"saved": False}
        arr = np.asarray(bench.output())
        if rows is not None:
            arr = arr[:rows]
        np.save(path, arr)
        return {"saved": True, "shape": list(arr.shape), "dtype": str(arr.dtype)}

    def handle(self, msg: dict) -> Any:
        op = msg["op"]
        if op == "setup":
            return self.setup(msg["name"], msg["factory"], msg.get("kwargs", {}), msg["warmup"])
        if op == "rep":
            return self.rep(msg["name"], msg.get("memory", False))
        if op == "call":
            return _resolve(msg["fn"])(**msg.get("kwargs", {}))
        if op == "save_output":
            return self.save_output(msg["name"], msg["path"], msg.get("rows"))
        if op == "drop":
            for name in msg["names"]:
                self.cands.pop(name, None)
            gc.collect()
            return _proc_status()
        if op == "memory":
            return _proc_status()
        if op == "ping":
            return {"pid": os.getpid(), "backend": os.environ.get("KERAS_BACKEND")}
        raise ValueError(f"unknown op {op!r}")


def worker_main() -> None:
    """Serve JSON-line requests on stdin; answers go to the original stdout only."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything printed by libraries now goes to stderr
    sys.stdout = sys.stderr
    if os.environ.get("KERAS_BACKEND") == "jax":
        _track_jax_compiles()
    state = _WorkerState()
    for line in sys.stdin:
        if not line.strip():
            continue
        msg = json.loads(line)
        if msg.get("op") == "exit":
            break
        try:
            reply = {"ok": True, "result": state.handle(msg)}
        except Exception as err:  # noqa: BLE001 - reported to the coordinator
            traceback.print_exc()
            reply = {"ok": False, "error": f"{type(err).__name__}: {err}"}
        proto.write(json.dumps(reply, default=_json_default) + "\n")
        proto.flush()


def _json_default(obj: Any) -> Any:
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:  # pragma: no cover
        pass
    return str(obj)


# ------------------------------------------------------------------ helpers called in workers


def worker_versions() -> dict[str, Any]:
    """Backend facts from inside a worker (JAX devices, TF build, Keras backend)."""
    out: dict[str, Any] = {"keras_backend": os.environ.get("KERAS_BACKEND")}
    if os.environ.get("KERAS_BACKEND") == "jax":
        import jax

        out["jax_devices"] = [str(d) for d in jax.devices()]
        out["jax_backend"] = jax.default_backend()
    else:
        import tensorflow as tf

        out["tf_devices"] = [d.name for d in tf.config.list_physical_devices()]
        try:
            from tensorflow.python.util import _pywrap_util_port

            out["tf_onednn"] = bool(_pywrap_util_port.IsMklEnabled())
        except Exception:  # noqa: BLE001
            pass
        out["tf_threads"] = {
            "intra": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter": tf.config.threading.get_inter_op_parallelism_threads(),
        }
    return out


# ====================================================================== coordinator side


class WorkerError(RuntimeError):
    pass


class Worker:
    """A persistent worker subprocess with one Keras backend (``"jax"`` or ``"tensorflow"``)."""

    def __init__(self, backend: str, log_dir: Path, env: dict[str, str] | None = None):
        self.backend = backend
        self.log_path = log_dir / f"worker-{backend}-{int(time.time() * 1000)}.log"
        full_env = dict(os.environ)
        full_env.update(
            {
                "KERAS_BACKEND": backend,
                "TF_CPP_MIN_LOG_LEVEL": full_env.get("TF_CPP_MIN_LOG_LEVEL", "2"),
                "PYTHONPATH": os.pathsep.join(
                    p for p in (str(ROOT), full_env.get("PYTHONPATH", "")) if p
                ),
                "PYTHONUNBUFFERED": "1",
            }
        )
        full_env.update(env or {})
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.harness", "--worker"],
            cwd=ROOT,
            env=full_env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            bufsize=1,
        )
        self.pid = self.proc.pid

    def request(self, op: str, timeout: float = 1800.0, **kwargs: Any) -> Any:
        if self.proc.poll() is not None:
            raise WorkerError(
                f"{self.backend} worker exited ({self.proc.returncode}){self._tail()}"
            )
        self.proc.stdin.write(json.dumps({"op": op, **kwargs}) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            self.close(kill=True)
            raise WorkerError(f"{self.backend} worker: {op} timed out after {timeout}s")
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(timeout=10)
            raise WorkerError(
                f"{self.backend} worker died during {op} (rc={self.proc.returncode}){self._tail()}"
            )
        reply = json.loads(line)
        if not reply["ok"]:
            raise WorkerError(f"{self.backend} worker: {op} failed: {reply['error']}{self._tail()}")
        return reply["result"]

    def _tail(self, n: int = 4000) -> str:
        try:
            self._log.flush()
            text = self.log_path.read_text()[-n:]
        except OSError:
            return ""
        return f"\n--- worker log tail ({self.log_path}) ---\n{text}"

    def call(self, fn: str, timeout: float = 1800.0, **kwargs: Any) -> Any:
        return self.request("call", timeout=timeout, fn=fn, kwargs=kwargs)

    def close(self, kill: bool = False) -> None:
        if self.proc.poll() is None:
            if kill:
                self.proc.kill()
            else:
                try:
                    self.proc.stdin.write(json.dumps({"op": "exit"}) + "\n")
                    self.proc.stdin.flush()
                    self.proc.wait(timeout=30)
                except (OSError, subprocess.TimeoutExpired):
                    self.proc.kill()
            self.proc.wait()
        self._log.close()


#: glibc malloc with a FIXED mmap threshold (its maximum, 32 MiB) and no heap trimming: buffers
#: below 32 MiB are reused from the heap instead of being mmap'ed fresh (and page-faulted in)
#: every time. Default glibc adjusts the threshold as the process frees memory, so the same
#: code can page-fault 100x more in one process than in another (see the ``malloc`` config).
FIXED_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(32 * 2**20), "MALLOC_TRIM_THRESHOLD_": str(2**32)}
#: Extra worker kinds: name -> (Keras backend, environment).
WORKER_KINDS: dict[str, tuple[str, dict[str, str]]] = {
    "jax": ("jax", {}),
    "tensorflow": ("tensorflow", {}),
    "jax_fixed_malloc": ("jax", FIXED_MALLOC_ENV),
    "tensorflow_fixed_malloc": ("tensorflow", FIXED_MALLOC_ENV),
}


class Workers:
    """The workers of one benchmark run by kind (`WORKER_KINDS`), started lazily, closed on
    exit. ``env`` is added to every worker's environment."""

    def __init__(self, log_dir: Path | None = None, env: dict[str, str] | None = None):
        self.log_dir = log_dir or Path(tempfile.mkdtemp(prefix="fastfem-bench-logs-"))
        self.env = dict(env or {})
        self._workers: dict[str, Worker] = {}

    def __getitem__(self, kind: str) -> Worker:
        if kind not in self._workers:
            backend, env = WORKER_KINDS[kind]
            log(f"[harness] starting {kind} worker")
            self._workers[kind] = Worker(backend, self.log_dir, {**self.env, **env})
            self._workers[kind].request("ping", timeout=120)
        return self._workers[kind]

    def restart(self, kind: str) -> Worker:
        if kind in self._workers:
            self._workers.pop(kind).close()
        return self[kind]

    def close(self) -> None:
        for w in self._workers.values():
            w.close()
        self._workers.clear()

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


@dataclasses.dataclass
class Candidate:
    """One thing to time: built by ``factory(**kwargs)`` in the ``backend`` worker."""

    name: str
    backend: str  # a worker kind: "jax" | "tensorflow" | one of WORKER_KINDS
    factory: str  # "module:function" returning a Bench
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    label: str = ""  # what is timed, in words


# ---------------------------------------------------------------------------- statistics


def summarize(xs: Sequence[float], digits: int = 4) -> dict[str, Any]:
    """median, min, max, n and the spread (max - min) / median of a sample."""
    xs = [float(x) for x in xs]
    if not xs:
        return {"median": None, "min": None, "max": None, "n": 0}
    med = statistics.median(xs)
    return {
        "median": _round(med, digits),
        "min": _round(min(xs), digits),
        "max": _round(max(xs), digits),
        "n": len(xs),
        "spread": _round((max(xs) - min(xs)) / med, 3) if med else None,
    }


def _round(x: float, digits: int) -> float:
    """Round to ``digits`` significant digits."""
    if x == 0 or x != x:
        return x
    from math import floor, log10

    return round(x, max(0, digits - 1 - floor(log10(abs(x)))))


def paired_ratios(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """Summary of ``a[i] / b[i]`` (throughputs of the same round)."""
    return summarize([x / y for x, y in zip(a, b, strict=True) if y])


# ------------------------------------------------------------------------ system sampling


def _proc_stat_busy() -> tuple[float, float]:
    """(busy seconds, total seconds) summed over every CPU, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [float(v) for v in f.readline().split()[1:]]
    hz = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
    total = sum(fields[:8])
    return (total - idle) / hz, total / hz


#: Other distribution names that provide a package (TensorFlow's CPU-only wheel).
DISTRIBUTIONS = {"tensorflow": ("tensorflow", "tensorflow-cpu")}


def _installed_version(pkg: str) -> str | None:
    """The installed version of ``pkg`` under any of its distribution names, else None."""
    for dist in DISTRIBUTIONS.get(pkg, (pkg,)):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def machine_info() -> dict[str, Any]:
    """CPU, memory, OS, Python, package versions, commit (read from .git, no git command)."""
    cpu = platform.processor() or platform.machine()
    flags: list[str] = []
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    flags = sorted(
                        fl
                        for fl in line.split(":", 1)[1].split()
                        if fl.startswith(("avx", "amx", "fma"))
                    )
                    break
    except OSError:
        pass
    mem = None
    try:
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) * 1024
    except OSError:
        pass
    versions = {pkg: _installed_version(pkg) for pkg in PACKAGES}
    return {
        "cpu": cpu,
        "cpu_flags": flags,
        "logical_cpus": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "mem_total_bytes": mem,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
        "commit": _git_commit(),
        "env": {
            k: os.environ.get(k)
            for k in (
                "XLA_FLAGS",
                "TF_ENABLE_ONEDNN_OPTS",
                "OMP_NUM_THREADS",
                "MALLOC_MMAP_THRESHOLD_",
                "MALLOC_TRIM_THRESHOLD_",
            )
        },
        "loadavg_start": list(os.getloadavg()),
    }


def _git_commit() -> str | None:
    head = ROOT / ".git" / "HEAD"
    try:
        ref = head.read_text().strip()
        if ref.startswith("ref: "):
            path = ROOT / ".git" / ref[5:]
            if path.exists():
                return path.read_text().strip()
            packed = ROOT / ".git" / "packed-refs"
            for line in packed.read_text().splitlines():
                if line.endswith(ref[5:]):
                    return line.split()[0]
            return None
        return ref
    except OSError:
        return None


# ---------------------------------------------------------------------- the comparison


def run_comparison(
    workers: Workers,
    config: str,
    candidates: Sequence[Candidate],
    reps: int,
    warmup: int = 2,
    memory: bool = False,
    compare_outputs: dict[str, str] | None = None,
    output_rows: int | None = 256,
    timeout: float = 1800.0,
) -> dict[str, Any]:
    """Set up every candidate, then time ``reps`` rounds of one repetition each, round robin.

    Args:
      compare_outputs: ``{candidate: reference candidate}``: after set-up, both outputs (first
        ``output_rows`` rows) are compared: max |a - b| / max |b| and the shape.
      memory: reset the worker's peak RSS before each repetition and record the peak.

    Returns a dict: per candidate the set-up / first-call / warm-call seconds and the
    repetitions (seconds, items/s, worker CPU, other processes' CPU), and per round the
    foreign CPU load.
    """
    log(f"[{config}] set-up of {len(candidates)} candidates")
    out: dict[str, Any] = {"config": config, "reps": reps, "candidates": {}}
    for c in candidates:
        t = time.perf_counter()
        res = workers[c.backend].request(
            "setup",
            timeout=timeout,
            name=c.name,
            factory=c.factory,
            kwargs=c.kwargs,
            warmup=warmup,
        )
        first, warm = res["first_call_s"], res["warm_call_s"]
        log(
            f"[{config}]   {c.name}: set-up {res['setup_s']:.1f}s, first call {first:.2f}s, "
            f"warm {', '.join(f'{w:.2f}' for w in warm)}s ({time.perf_counter() - t:.0f}s)"
        )
        out["candidates"][c.name] = {
            "backend": c.backend,
            "label": c.label,
            "factory": c.factory,
            "kwargs": c.kwargs,
            "setup_s": _round(res["setup_s"], 4),
            "first_call_s": _round(first, 4),
            "warm_call_s": [_round(w, 4) for w in warm],
            "jax_compile_s_first_call": _round(res["jax_compile_s"][0], 4),
            "items": res["items"],
            "info": res["info"],
            "reps": [],
        }
    if compare_outputs:
        out["output_diff"] = _compare_outputs(workers, candidates, compare_outputs, output_rows)

    by_name = {c.name: c for c in candidates}
    loads = []
    for r in range(reps):
        # rotate the order every round: no candidate always runs first (or right after the
        # other worker), and each round still times every candidate once
        shift = r % len(candidates)
        for c in [*candidates[shift:], *candidates[:shift]]:
            busy0, tot0 = _proc_stat_busy()
            t0 = time.perf_counter()
            res = workers[c.backend].request("rep", timeout=timeout, name=c.name, memory=memory)
            wall = time.perf_counter() - t0
            busy1, tot1 = _proc_stat_busy()
            foreign = max(0.0, (busy1 - busy0) - res["cpu_s"]) / max(wall, 1e-9)
            rec = {
                "seconds": res["seconds"],
                "items_per_s": res["items"] / res["seconds"],
                "cpu_s": res["cpu_s"],
                "sys_s": res["sys_s"],
                "page_faults": res["page_faults"],
                "foreign_cpus": foreign,
            }
            if res.get("jax_compile_s"):
                rec["jax_compile_s"] = _round(res["jax_compile_s"], 4)
            if memory:
                rec.update({k: res[k] for k in ("rss_before", "peak_rss", "peak_reset")})
            if "extra" in res:
                rec["extra"] = res["extra"]
            out["candidates"][c.name]["reps"].append(rec)
            loads.append(foreign)
        line = ", ".join(
            f"{n} {out['candidates'][n]['reps'][-1]['items_per_s']:.1f}" for n in by_name
        )
        log(f"[{config}]   round {r + 1}/{reps}: {line}  (load {os.getloadavg()[0]:.2f})")

    for cand in out["candidates"].values():
        reps_ = cand["reps"]
        cand["items_per_s"] = summarize([x["items_per_s"] for x in reps_])
        cand["seconds"] = summarize([x["seconds"] for x in reps_])
        cand["compile_s_est"] = _round(
            max(0.0, cand["first_call_s"] - cand["seconds"]["median"]), 3
        )
        cand["cpu_utilisation"] = summarize([x["cpu_s"] / x["seconds"] for x in reps_], 3)
        cand["cpu_us_per_item"] = summarize(
            [1e6 * x["cpu_s"] / (x["items_per_s"] * x["seconds"]) for x in reps_]
        )
        cand["jax_compile_s_during_reps"] = _round(
            sum(x.get("jax_compile_s", 0.0) for x in reps_), 4
        )
        if memory:
            cand["peak_rss_mb"] = summarize([x["peak_rss"] / 2**20 for x in reps_])
            cand["peak_over_start_mb"] = summarize(
                [(x["peak_rss"] - x["rss_before"]) / 2**20 for x in reps_]
            )
        for x in reps_:
            for k in ("seconds", "items_per_s", "cpu_s", "sys_s", "foreign_cpus"):
                x[k] = _round(x[k], 4)
    out["foreign_cpus"] = summarize(loads, 3)
    out["loadavg_end"] = list(os.getloadavg())
    return out


def _compare_outputs(
    workers: Workers,
    candidates: Sequence[Candidate],
    pairs: dict[str, str],
    rows: int | None,
) -> dict[str, Any]:
    import numpy as np

    by_name = {c.name: c for c in candidates}
    tmp = Path(tempfile.mkdtemp(prefix="fastfem-bench-out-"))
    try:
        arrays = {}
        for name in {n for pair in pairs.items() for n in pair}:
            path = tmp / f"{name}.npy"
            res = workers[by_name[name].backend].request(
                "save_output", name=name, path=str(path), rows=rows
            )
            if res["saved"]:
                arrays[name] = np.load(path)
        diffs = {}
        for a, b in pairs.items():
            if a not in arrays or b not in arrays:
                continue
            x, y = arrays[a].astype(np.float64), arrays[b].astype(np.float64)
            if x.shape != y.shape:
                diffs[f"{a} vs {b}"] = {"shape_a": x.shape, "shape_b": y.shape}
                continue
            scale = float(np.max(np.abs(y))) or 1.0
            diffs[f"{a} vs {b}"] = {
                "rows": int(x.shape[0]),
                "max_abs_diff": float(np.max(np.abs(x - y))),
                "max_rel_diff": float(np.max(np.abs(x - y)) / scale),
                "mean_rel_diff": float(np.mean(np.abs(x - y)) / scale),
            }
        return diffs
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def ratio(result: dict[str, Any], a: str, b: str) -> dict[str, Any]:
    """Paired per-round ratio of the throughputs of candidates ``a`` / ``b`` of one result."""
    ra = [x["items_per_s"] for x in result["candidates"][a]["reps"]]
    rb = [x["items_per_s"] for x in result["candidates"][b]["reps"]]
    return paired_ratios(ra, rb)


def drop(workers: Workers, candidates: Sequence[Candidate]) -> None:
    """Free the candidates' memory in their workers."""
    for backend in {c.backend for c in candidates}:
        workers[backend].request("drop", names=[c.name for c in candidates if c.backend == backend])


# ------------------------------------------------------------------------------ results


def utc_stamp() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def write_results(name: str, payload: dict[str, Any], directory: Path = RESULTS_DIR) -> Path:
    """Write ``payload`` to ``<directory>/<name>-<UTC timestamp>.json``; returns the path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}-{utc_stamp()}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=1, default=_json_default) + "\n")
    tmp.replace(path)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true", help="serve requests (internal)")
    args = parser.parse_args(argv)
    if args.worker:
        worker_main()
    else:
        parser.print_help()


if __name__ == "__main__":
    main()
