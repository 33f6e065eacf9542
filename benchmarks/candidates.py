"""Benchmark candidates and data preparation, run INSIDE the harness workers.

Every factory here is called by a worker (`benchmarks.harness`) with JSON keyword arguments and
returns a `Bench`; the coordinator never imports this module. The JAX-side factories need
``KERAS_BACKEND=jax`` (fastfem), the TF-side ones ``KERAS_BACKEND=tensorflow`` (Xplique, the
eager/graph TF peers). Every candidate is NumPy in -> NumPy out unless said otherwise.

Models travel between workers as ``.keras`` files and inputs as ``.npy`` files (loaded whole
into memory, float32, before timing).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from .harness import Bench

# ------------------------------------------------------------------------ data preparation


def prepare_sample(path: str, split: str, n: int) -> dict[str, Any]:
    """Save the first ``n`` images of the bundled sample's ``split`` as ``path`` (.npy)."""
    p = Path(path)
    if not p.exists():
        from fastfem.sample import generate

        p.parent.mkdir(parents=True, exist_ok=True)
        x = generate(split, n).images
        np.save(p.with_suffix(".tmp.npy"), x)
        p.with_suffix(".tmp.npy").replace(p)
    return {"path": str(p), "shape": list(np.load(p, mmap_mode="r").shape)}


def prepare_resized_sample(path: str, n: int, size: int, split: str = "test") -> dict[str, Any]:
    """The bundled sample's images resized (bilinear, PIL) to ``size`` x ``size``, as .npy."""
    p = Path(path)
    if not p.exists():
        from PIL import Image

        from fastfem.sample import generate

        p.parent.mkdir(parents=True, exist_ok=True)
        small = generate(split, n).images
        big = np.empty((n, size, size, 3), np.float32)
        for i, img in enumerate(small):
            u8 = Image.fromarray(np.clip(np.rint(img * 255), 0, 255).astype(np.uint8))
            big[i] = np.asarray(u8.resize((size, size), Image.BILINEAR), np.float32) / 255.0
        np.save(p.with_suffix(".tmp.npy"), big)
        p.with_suffix(".tmp.npy").replace(p)
    return {"path": str(p), "shape": list(np.load(p, mmap_mode="r").shape)}


def prepare_app_model(path: str, arch: str, size: int, seed: int = 0) -> dict[str, Any]:
    """Build ``keras.applications.<arch>(weights=None)`` with a fixed seed; save as .keras."""
    import keras

    p = Path(path)
    if not p.exists():
        p.parent.mkdir(parents=True, exist_ok=True)
        keras.utils.set_random_seed(seed)
        model = getattr(keras.applications, arch)(weights=None, input_shape=(size, size, 3))
        tmp = p.with_name(p.stem + ".tmp.keras")
        model.save(tmp)
        tmp.replace(p)
    model = keras.saving.load_model(p, compile=False)
    convs = [layer.name for layer in model.layers if hasattr(layer, "filters")]
    return {"path": str(p), "params": int(model.count_params()), "default_layer": convs[-1]}


def prepare_png_folder(path: str, split: str, n: int) -> dict[str, Any]:
    """Write the bundled sample as PNG files under ``path`` (``write_png_folder`` layout)."""
    p = Path(path)
    done = p / ".complete"
    if not done.exists():
        from fastfem.sample import generate, write_png_folder

        shutil.rmtree(p, ignore_errors=True)
        write_png_folder(generate(split, n), p)
        done.write_text(str(n))
    files = list(p.rglob("*.png"))
    return {"path": str(p), "files": len(files), "bytes": sum(f.stat().st_size for f in files)}


def _load_inputs(path: str, n: int | None = None) -> np.ndarray:
    x = np.load(path)
    if n is not None:
        x = x[:n]
    return np.ascontiguousarray(x, dtype=np.float32)


# ============================================================================ JAX side


def fastfem_fem(
    model: str,
    inputs: str,
    batch_size: int,
    layer: str | None = None,
    n: int | None = None,
    variant: str = "xplique",
    resize: bool = True,
    bf16: bool = False,
) -> Bench:
    """``fastfem.FEM(model, batch_size, layer).explain(x)``: NumPy (N, H, W, 3) in, NumPy maps
    (N, H, W, 1) out, end to end (stream, pad, device_put, fused jitted step, fetch, copy out).

    ``bf16``: the explained model runs with Keras's ``mixed_bfloat16`` policy (bf16 compute
    and activations, float32 variables); the FEM statistics still accumulate in float32.
    """
    import fastfem

    x = _load_inputs(inputs, n)
    target = _bf16_extractor(model, layer) if bf16 else model
    fem = fastfem.FEM(
        target, batch_size=batch_size, conv_layer=None if bf16 else layer, variant=variant
    )
    state: dict[str, Any] = {}

    def run() -> int:
        state["maps"] = fem.explain(x, resize=resize)
        return len(x)

    feat = fem.feature_shape(tuple(x.shape[1:]))
    return Bench(
        run=run,
        output=lambda: state["maps"],
        info={
            "batch_size": fem.batch_size,
            "layer": fem.layer_name,
            "feature_shape": list(feat),
            "n": len(x),
            "image_shape": list(x.shape[1:]),
            "variant": variant,
            "bf16": bf16,
            "source": fem.extractor.source,
        },
    )


def _bf16_extractor(model: str, layer: Any):
    """A FeatureExtractor of ``model`` rebuilt under the ``mixed_bfloat16`` dtype policy."""
    import keras
    from fastfem.converters import from_keras

    src = keras.saving.load_model(model, compile=False)
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        config = src.get_config()
        for lay in config["layers"]:
            lay["config"].pop("dtype", None)
        clone = src.__class__.from_config(config)
    finally:
        keras.config.set_dtype_policy(previous)
    clone.set_weights(src.get_weights())
    return from_keras(clone, layers=layer)


def jax_forward_limit(
    model: str,
    inputs: str,
    batch_size: int,
    layer: str | None = None,
    n: int | None = None,
    images_per_item: int = 1,
) -> Bench:
    """The "limit": fastfem's own batch loop (`fastfem.engine.runner.Runner`, same batch size and
    padding,
    NumPy in) around the jitted forward pass up to the explained layer only. The activations
    are reduced on the device to one float per image (their sum) so that only N floats come
    back to the host; no FEM kernel, no resize, no map fetch, no concatenation.
    ``images_per_item``: items counted per image (2 for FAM pairs: both images of each pair).
    """
    import jax.numpy as jnp
    from fastfem.converters import load

    from fastfem.data.sources import stream_images
    from fastfem.engine.runner import Runner

    x = _load_inputs(inputs, n)
    ext = load(model, layers=layer)

    def step(params: Any, batch: Any) -> Any:
        return {"sum": jnp.sum(ext.apply(params, batch["x"]).activations[0], axis=(1, 2, 3))}

    runner = Runner(step, batch_size)
    state: dict[str, Any] = {}

    def run() -> int:
        stream = stream_images(x, batch_size, ext.input_shape)
        batches = ({"x": b} for b in stream.batches)
        outs = runner.run(ext.params, batches, stream.count)
        state["sums"] = np.concatenate([o["sum"] for o in outs])
        return len(x) // images_per_item

    return Bench(
        run=run,
        output=lambda: state["sums"],
        info={"batch_size": runner.batch_size, "layer": ext.layer_name, "n": len(x)},
    )


# ============================================================================= TF side


def _tf_model(model: str) -> Any:
    import keras

    if keras.backend.backend() != "tensorflow":
        raise RuntimeError("this candidate needs KERAS_BACKEND=tensorflow")
    return keras.saving.load_model(model, compile=False)


def xplique_fem(
    model: str,
    inputs: str,
    batch_size: int | None,
    layer: str | None = None,
    n: int | None = None,
) -> Bench:
    """``xplique.attributions.FEM(model, batch_size, layer).explain(x)`` (eager TF), the
    tf.Tensor result converted to NumPy."""
    from xplique.attributions import FEM

    x = _load_inputs(inputs, n)
    fem = FEM(_tf_model(model), batch_size=batch_size, conv_layer=layer)
    state: dict[str, Any] = {}

    def run() -> int:
        state["maps"] = np.asarray(fem.explain(x))
        return len(x)

    return Bench(
        run=run,
        output=lambda: state["maps"],
        info={"batch_size": batch_size, "layer": fem.conv_layer.name, "n": len(x)},
    )


def tf_graph_fem(
    model: str,
    inputs: str,
    batch_size: int,
    layer: str | None = None,
    n: int | None = None,
    jit_compile: bool = False,
) -> Bench:
    """Xplique's FEM formula as one TF graph per batch (`benchmarks.peers.fem_tf.FemTFGraph`):
    ``tf.function`` (``jit_compile=False``) or XLA (``jit_compile=True``, resize outside XLA)."""
    from .peers.fem_tf import FemTFGraph

    x = _load_inputs(inputs, n)
    peer = FemTFGraph(_tf_model(model), batch_size, layer, jit_compile=jit_compile)
    state: dict[str, Any] = {}

    def run() -> int:
        state["maps"] = peer.explain(x)
        return len(x)

    return Bench(
        run=run,
        output=lambda: state["maps"],
        info={"batch_size": batch_size, "jit_compile": jit_compile, "resize": peer.resize},
    )


def tf_forward(
    model: str,
    inputs: str,
    batch_size: int,
    layer: str | None = None,
    n: int | None = None,
    mode: str = "function",
    images_per_item: int = 1,
) -> Bench:
    """TF forward pass alone up to the explained layer, batch by batch, NumPy in; activations
    reduced to one float per image (their sum) before ``.numpy()``. ``mode``: ``eager`` (as
    Xplique calls its sub-model), ``function`` (``tf.function``), ``xla`` (``jit_compile``).
    ``images_per_item`` as in `jax_forward_limit`."""
    import keras
    import tensorflow as tf

    from .peers.fem_tf import _resolve_layer

    x = _load_inputs(inputs, n)
    m = _tf_model(model)
    sub = keras.Model(m.inputs[0], _resolve_layer(m, layer).output)

    def fwd(xb: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(sub(xb, training=False), axis=[1, 2, 3])

    if mode != "eager":
        spec = tf.TensorSpec([None, *x.shape[1:]], tf.float32)
        fwd = tf.function(fwd, input_signature=[spec], jit_compile=(mode == "xla"))
    state: dict[str, Any] = {}

    def run() -> int:
        outs = []
        for start in range(0, len(x), batch_size):
            outs.append(fwd(tf.convert_to_tensor(x[start : start + batch_size])).numpy())
        state["sums"] = np.concatenate(outs)
        return len(x) // images_per_item

    return Bench(
        run=run,
        output=lambda: state["sums"],
        info={"batch_size": batch_size, "mode": mode, "n": len(x)},
    )


def xplique_mlfem(
    model: str, inputs: str, batch_size: int, layers: list[str], n: int | None = None
) -> Bench:
    """The eager-TF MLFEM a Xplique user would write: Xplique's FEM at each layer (one forward
    pass per layer, bicubic resize to the input size), each map min-max normalised to [0, 1]
    (a constant map -> 0), then the mean over layers (fastfem's default fusion)."""
    from xplique.attributions import FEM

    x = _load_inputs(inputs, n)
    m = _tf_model(model)
    fems = [FEM(m, batch_size=batch_size, conv_layer=name) for name in layers]
    state: dict[str, Any] = {}

    def run() -> int:
        fused = None
        for fem in fems:
            maps = np.asarray(fem.explain(x))[..., 0].astype(np.float32)
            lo = maps.min(axis=(1, 2), keepdims=True)
            hi = maps.max(axis=(1, 2), keepdims=True)
            span = hi - lo
            ok = span > 1e-6 * np.maximum(np.abs(hi), np.abs(lo))
            unit = np.where(ok, (maps - lo) / np.where(ok, span, 1.0), 0.0)
            fused = unit if fused is None else fused + unit
        state["maps"] = (fused / len(fems))[..., None].astype(np.float32)
        return len(x)

    return Bench(
        run=run,
        output=lambda: state["maps"],
        info={"batch_size": batch_size, "layers": layers, "n": len(x)},
    )


def fam_tf(
    model: str, inputs: str, batch_size: int, n_pairs: int, layer: str | None = None
) -> Bench:
    """The eager-TF FAM reference (`benchmarks.peers.fam_tf.FamTF`) on pairs
    ``(x[i], x[n_pairs + i])``: cosine similarity, GAP, max-normalised weights, query maps
    resized (bilinear) to the input size."""
    from .peers.fam_tf import FamTF

    x = _load_inputs(inputs, 2 * n_pairs)
    q, r = x[:n_pairs], x[n_pairs:]
    peer = FamTF(_tf_model(model), conv_layer=layer, batch_size=batch_size)
    state: dict[str, Any] = {}

    def run() -> int:
        state["maps"] = peer.explain(q, r)
        return n_pairs

    return Bench(
        run=run,
        output=lambda: state["maps"],
        info={"batch_size": batch_size, "pairs": n_pairs},
    )


# =========================================================================== JAX side, more


def fastfem_fam(
    model: str, inputs: str, batch_size: int, n_pairs: int, layer: str | None = None
) -> Bench:
    """``fastfem.FAM(model, batch_size).explain(queries, references)`` on the same pairs as
    `fam_tf` (query and reference through the backbone in one stacked step)."""
    import fastfem

    x = _load_inputs(inputs, 2 * n_pairs)
    q, r = x[:n_pairs], x[n_pairs:]
    fam = fastfem.FAM(model, conv_layer=layer, batch_size=batch_size)
    state: dict[str, Any] = {}

    def run() -> int:
        state["maps"] = fam.explain(q, r)
        return n_pairs

    return Bench(
        run=run,
        output=lambda: state["maps"],
        info={"batch_size": fam.batch_size, "pairs": n_pairs, "layer": fam.layer_name},
    )


def mlfem_layers(model: str) -> list[str]:
    """fastfem.MLFEM's default layers of ``model`` (last conv of each resolution stage)."""
    from fastfem.converters import load_keras_file

    from fastfem.explainers.mlfem import default_layers

    return default_layers(load_keras_file(model))


def fastfem_mlfem(model: str, inputs: str, batch_size: int, n: int | None = None) -> Bench:
    """``fastfem.MLFEM(model, batch_size).explain(x)``: default layers, mean fusion, one
    forward pass for every layer."""
    import fastfem

    x = _load_inputs(inputs, n)
    ml = fastfem.MLFEM(model, batch_size=batch_size)
    state: dict[str, Any] = {}

    def run() -> int:
        state["maps"] = ml.explain(x)
        return len(x)

    return Bench(
        run=run,
        output=lambda: state["maps"],
        info={"batch_size": ml.batch_size, "layers": list(ml.layer_names), "n": len(x)},
    )


def fem_kernel(
    kind: str,
    batch: int,
    feature_shape: list[int],
    calls: int,
    dtype: str = "float32",
    out_hw: list[int] | None = None,
    seed: int = 0,
) -> Bench:
    """Device-resident activations (``batch``, h, w, C) of ReLU'd Gaussian noise, ``calls``
    jitted calls per run (dispatched back to back, one block at the end):

    * ``fem``: `fastfem.kernels.fem.fem_map` (xplique variant) -> (batch, h, w) maps;
    * ``fem_resize``: the same plus the bicubic resize to ``out_hw`` (FEM's fused step minus
      the forward pass and the finiteness flags);
    * ``copy``: ``-a`` (one read and one write of the activations: the streaming reference);
    * ``read``: ``sum(a)`` per image (one read: the read-bandwidth reference).
    """
    import jax
    import jax.numpy as jnp

    from fastfem.kernels.fem import fem_map, fem_resize

    h, w, c = feature_shape
    rng = np.random.default_rng(seed)
    host = np.maximum(rng.normal(size=(batch, h, w, c)).astype(np.float32), 0.0)
    a = jax.device_put(host.astype(jnp.bfloat16) if dtype == "bfloat16" else host)
    if kind == "fem":
        fn = jax.jit(fem_map)
    elif kind == "fem_resize":
        fn = jax.jit(lambda t: fem_resize(fem_map(t), tuple(out_hw), "xplique"))
    elif kind == "copy":
        fn = jax.jit(lambda t: -t)
    elif kind == "read":
        fn = jax.jit(lambda t: jnp.sum(t.astype(jnp.float32), axis=(1, 2, 3)))
    else:
        raise ValueError(f"unknown kernel kind {kind!r}")
    state: dict[str, Any] = {}

    def run() -> int:
        outs = [fn(a) for _ in range(calls)]
        jax.block_until_ready(outs)
        state["out"] = outs[-1]
        return batch * calls

    return Bench(
        run=run,
        output=lambda: np.asarray(state["out"], np.float32),
        info={
            "kind": kind,
            "batch": batch,
            "feature_shape": feature_shape,
            "dtype": dtype,
            "calls_per_rep": calls,
            "activation_bytes_per_call": int(a.nbytes),
        },
    )


def audit_folder(
    png_dir: str, model: str, batch_size: int, workdir: str, threads: int | None = None
) -> Bench:
    """``fastfem.audit.audit(png_dir, model, out, batch_size)``: PNG files on disk -> decoded
    on host threads -> fused step (forward with the model output, FEM map at feature
    resolution, map statistics, prediction) -> Parquet part + maps on disk. Each run writes a
    fresh store (the previous one is deleted before the run, untimed); the whole ``audit``
    call is timed (model load and the step's compilation included, as a CLI run pays them).
    The reliance test is off (``reliance_sample=0``): it is a fixed sweep after the pass,
    measured on its own by ``python -m benchmarks.shortcuts --cost N``."""
    from fastfem.audit.run import audit
    from fastfem.data.records import default_threads

    root = Path(workdir)
    out = root / "store"
    state: dict[str, Any] = {}

    def before() -> None:
        shutil.rmtree(out, ignore_errors=True)
        root.mkdir(parents=True, exist_ok=True)

    def run() -> int:
        summary = audit(
            png_dir, model, out=out, batch_size=batch_size, threads=threads, reliance_sample=0
        )
        if summary.errors:
            raise RuntimeError(f"audit reported {summary.errors} error rows")
        state["summary"] = summary.to_dict()
        return summary.processed

    def extra() -> dict[str, Any]:
        summary = state["summary"]
        return {
            "audit_loop_s": summary["seconds"],
            "audit_images_per_s": summary["images_per_second"],
        }

    before()
    return Bench(
        run=run,
        extra=extra,
        before=before,
        info={
            "batch_size": batch_size,
            "threads": default_threads() if threads is None else threads,
            "out": str(out),
        },
    )


def flag_rules_on_store(png_dir: str, model: str, workdir: str, rule: str) -> Bench:
    """The audit's end-of-run flagging alone, on the store of one audit of ``png_dir`` (made
    once, untimed): ``rule="detectors"`` times what `finish` runs — the committed rows read,
    `fastfem.audit.detectors.detect` (streaming k-means over the stored maps on the device,
    hot-spot agreement and contrast, cluster tables) and ``flags.parquet`` /
    ``clusters.parquet`` written; ``rule="corner"`` times the rule it replaced (rows read,
    `benchmarks.corner_rule.flag_rows`). Items = rows flagged over."""
    from fastfem.audit.detectors import detect, write_detection
    from fastfem.audit.run import audit
    from fastfem.audit.store.parts import ResultStore

    from .corner_rule import flag_rows

    out = Path(workdir) / f"store-{rule}"
    if not (out / "manifest.json").exists():
        audit(png_dir, model, out=out)
    store = ResultStore(out)

    def run() -> int:
        rows = store.read_rows()
        if rule == "detectors":
            write_detection(out, detect(store, rows))
        else:
            flag_rows(rows)
        return len(rows["id"])

    return Bench(run=run, info={"rule": rule, "store": str(out)})


# ========================================================================= host decoding


def prepare_jpeg_folder(path: str, n: int, width: int, height: int, seed: int = 0) -> dict:
    """``n`` photo-like JPEGs of ``width x height`` (quality 90) under ``path``, made once
    (`benchmarks.bench_decode.jpeg_folder`)."""
    from .bench_decode import jpeg_folder

    p = Path(path)
    done = p / ".complete"
    if not done.exists():
        jpeg_folder(p, (width, height), n, seed)
        done.write_text(str(n))
    files = sorted(p.glob("*.jpg"))
    return {"path": str(p), "files": len(files), "bytes": sum(f.stat().st_size for f in files)}


def decode_folder(folder: str, size: int, threads: int, fit: str = "crop") -> Bench:
    """The audit's host side alone: `fastfem.data.sources.open_source` of an image folder
    with ``fit`` to ``size x size`` on ``threads`` decoding threads, every record read (listing,
    reading, decoding with the JPEG draft, fitting; no device). An error record fails the run."""
    from fastfem.data.records import ReadOptions
    from fastfem.data.sources import open_source

    options = ReadOptions(fit=fit, threads=threads)

    def run() -> int:
        src = open_source(folder, (size, size, 3), options)
        n = 0
        for rec in src.read(lambda i, rid: True):
            if rec.error is not None:
                raise RuntimeError(f"{rec.id}: {rec.error}")
            n += 1
        return n

    return Bench(run=run, info={"threads": threads, "size": size, "fit": fit})


def host_threads_info() -> dict[str, Any]:
    """This worker's usable cores and the audit's default decoding threads for a model on the
    CPU and on an accelerator (`fastfem.data.records.host_threads`)."""
    from fastfem.data.records import MAX_ACCELERATOR_THREADS, host_threads, usable_cores

    cores = usable_cores()
    return {
        "cores": cores,
        "max_threads": min(cores, MAX_ACCELERATOR_THREADS),
        "default_threads": {b: host_threads(cores, b) for b in ("cpu", "gpu")},
    }
