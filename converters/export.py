"""Portable artifacts: a `FeatureExtractor` as a `jax.export` file, and an explainer as a TF
SavedModel.

`save_extractor` writes a directory that runs later **without TensorFlow, Keras or Flax**, only
JAX: ``apply.jaxexport`` (the serialized StableHLO of ``apply(params, x)``, batch dimension
symbolic), ``params.npz`` (the parameter leaves; read with ``allow_pickle=False``) and
``extractor.json`` (layer names, input shape, source, versions). `load_extractor` (and
``fastfem.converters.load(path)``, and every explainer given the path) turns it back into a
`FeatureExtractor`. Nothing in it is executable Python: loading it runs no code from the file.
An extractor wrapped with ``call_tf`` exports too (the TF computation is already XLA inside it),
but only for one platform (the current one) and with a fixed batch size: the loaded ``apply``
pads and splits any batch into chunks of that size.

`export_explainer_savedmodel` goes the other way, for TensorFlow users: the whole jitted step of a
`fastfem.FEM`, `fastfem.MLFEM` or `fastfem.FAM` explainer (extractor, kernel, resize) becomes a
``tf.function`` through ``jax2tf.convert`` (weights as ``tf.Variable`` s, batch polymorphic) saved
as a SavedModel: ``tf.saved_model.load(dir).explain(images)`` (FAM: ``explain(queries,
references)``) returns the maps, as the explainer's ``explain`` does.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .feature_extractor import FeatureExtractor, Features

FORMAT = "fastfem-extractor"
FORMAT_VERSION = 1
META_FILE = "extractor.json"
PARAMS_FILE = "params.npz"
EXPORT_FILE = "apply.jaxexport"
#: Platforms an artifact is lowered for when the extractor allows it (pure JAX code).
DEFAULT_PLATFORMS = ("cpu", "cuda", "tpu")


def is_artifact(path: str | os.PathLike) -> bool:
    p = Path(path)
    return p.is_dir() and (p / META_FILE).is_file() and (p / EXPORT_FILE).is_file()


def _full_shape(extractor: FeatureExtractor, input_shape: Sequence[int] | None) -> tuple:
    shape = tuple(input_shape) if input_shape is not None else tuple(extractor.input_shape)
    if len(shape) != 3 or any(d is None for d in shape):
        raise ValueError(
            f"the input shape must be fully known to export (H, W, C); got {shape}: pass "
            "input_shape= (command line: --input-shape H,W,C)"
        )
    return tuple(int(d) for d in shape)


def _export(fn: Any, leaf_specs: list, x_spec: Any, platforms: Sequence[str]) -> Any:
    from jax import export

    return export.export(jax.jit(fn), platforms=tuple(platforms))(leaf_specs, x_spec)


def save_extractor(
    extractor: FeatureExtractor,
    out: str | os.PathLike,
    input_shape: Sequence[int] | None = None,
    batch_size: int = 32,
    platforms: Sequence[str] | None = None,
) -> Path:
    """Write ``extractor`` as a portable artifact directory; returns its path.

    Args:
      extractor: any `FeatureExtractor` (Keras, TF via tf2jax or call_tf, Flax, JAX).
      out: the directory to write (created; existing artifact files are replaced).
      input_shape: per-sample (H, W, C) when the extractor leaves a dimension free.
      batch_size: the fixed batch of the export when the batch cannot be symbolic (call_tf).
      platforms: lowering platforms; default ``cpu, cuda, tpu`` (call_tf: the current one).
    """
    from jax import export

    shape = _full_shape(extractor, input_shape)
    leaves, _ = jax.tree_util.tree_flatten(extractor.params)
    leaves = [np.asarray(leaf) for leaf in leaves]
    treedef = jax.tree_util.tree_structure(extractor.params)
    n_layers = len(extractor.layer_names)

    def flat_apply(flat: list, x: jax.Array) -> tuple:
        feats = extractor.apply(jax.tree_util.tree_unflatten(treedef, flat), x)
        outs = tuple(feats.activations[:n_layers])
        return outs + ((feats.output,) if extractor.has_output else ())

    leaf_specs = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in leaves]
    (b,) = export.symbolic_shape("b")
    attempts: list[tuple[Any, tuple[str, ...]]] = []
    wanted = tuple(platforms) if platforms else None
    here = (jax.default_backend(),)
    for batch in (b, int(batch_size)):
        for plats in [wanted] if wanted else [DEFAULT_PLATFORMS, here]:
            attempts.append((batch, plats))
    exported, errors = None, []
    for batch, plats in attempts:
        try:
            spec = jax.ShapeDtypeStruct((batch, *shape), jnp.float32)
            exported = _export(flat_apply, leaf_specs, spec, plats)
            break
        except Exception as err:  # noqa: BLE001 - try the next, narrower export
            errors.append(f"batch={batch} platforms={plats}: {str(err).splitlines()[0][:200]}")
    if exported is None:
        raise RuntimeError("jax.export failed for this extractor:\n" + "\n".join(errors))

    dest = Path(out)
    dest.mkdir(parents=True, exist_ok=True)
    np.savez(dest / PARAMS_FILE, **{f"p{i:05d}": a for i, a in enumerate(leaves)})
    (dest / EXPORT_FILE).write_bytes(bytes(exported.serialize()))
    fixed = exported.in_avals[-1].shape[0]
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "layer_names": list(extractor.layer_names),
        "input_shape": list(shape),
        "has_output": bool(extractor.has_output),
        "source": extractor.source,
        "batch": fixed if isinstance(fixed, int) else None,
        "platforms": list(exported.platforms),
        "n_params": len(leaves),
        "jax_version": jax.__version__,
        "notes": errors,
    }
    (dest / META_FILE).write_text(json.dumps(meta, indent=2))
    return dest


def load_extractor(path: str | os.PathLike) -> FeatureExtractor:
    """A `FeatureExtractor` from a `save_extractor` directory (needs only JAX and NumPy)."""
    from jax import export

    p = Path(path)
    if not is_artifact(p):
        raise FileNotFoundError(f"not a fastfem extractor artifact (no {META_FILE}): {p}")
    meta = json.loads((p / META_FILE).read_text())
    if meta.get("format") != FORMAT or meta.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(f"{p}: unsupported artifact format {meta.get('format')!r}")
    exported = export.deserialize(bytearray((p / EXPORT_FILE).read_bytes()))
    with np.load(p / PARAMS_FILE, allow_pickle=False) as data:
        params = [data[f"p{i:05d}"] for i in range(meta["n_params"])]
    platform = jax.default_backend()
    if platform not in exported.platforms and not (
        platform == "gpu" and {"cuda", "rocm"} & set(exported.platforms)
    ):
        raise RuntimeError(
            f"{p.name} was exported for {exported.platforms}, not for this {platform!r} backend"
        )
    n_layers = len(meta["layer_names"])
    has_output = bool(meta["has_output"])
    fixed = meta.get("batch")

    def call(flat: list, x: jax.Array) -> tuple:
        if fixed is None:
            return exported.call(flat, x)
        n = x.shape[0]
        chunks = max(1, math.ceil(n / fixed))
        pad = chunks * fixed - n
        xs = jnp.pad(x, ((0, pad),) + ((0, 0),) * (x.ndim - 1))
        xs = xs.reshape((chunks, fixed, *x.shape[1:]))
        out = jax.lax.map(lambda xb: exported.call(flat, xb), xs)
        return tuple(o.reshape((chunks * fixed, *o.shape[2:]))[:n] for o in out)

    def apply(flat: list, x: jax.Array) -> Features:
        out = call(flat, x)
        return Features(
            activations=tuple(out[:n_layers]), output=out[n_layers] if has_output else None
        )

    return FeatureExtractor(
        apply=apply,
        params=params,
        input_shape=tuple(meta["input_shape"]),
        layer_names=tuple(meta["layer_names"]),
        has_output=has_output,
        source=f"jax.export artifact {p.name} (from {meta['source']})",
    )


# ------------------------------------------------------------------------------------------------
# explainer -> TF SavedModel
# ------------------------------------------------------------------------------------------------


def _explainer_step(explainer: Any, shape: tuple[int, int, int]):
    """``(step(params, *inputs) -> dict, params, input names)`` of an explainer at ``shape``."""
    from ..explainers.fam import FAM, make_pair_step
    from ..explainers.fem import FEM, make_fem_step
    from ..explainers.mlfem import MLFEM, make_mlfem_step
    from ..kernels.fem import RESIZE_METHOD
    from ..kernels.resize import resize_matrices

    ext = explainer.extractor
    if isinstance(explainer, FEM):
        h, w, _ = explainer.feature_shape(shape)
        mats = resize_matrices((h, w), shape[:2], RESIZE_METHOD[explainer.variant])
        fem_step = make_fem_step(ext, explainer.k, explainer.variant, mats)

        def step(params: Any, x: jax.Array) -> dict:
            maps, finite = fem_step(params, x)
            return {"maps": maps[..., None], "finite": finite}

        return step, ext.params, ("images",)
    if isinstance(explainer, MLFEM):
        ml_step = make_mlfem_step(
            ext,
            explainer.k,
            explainer.variant,
            explainer.fusion,
            explainer.weights,
            tuple(shape[:2]),
            False,
        )

        def step(params: Any, x: jax.Array) -> dict:
            return {"maps": ml_step(params, x)["fused"][..., None]}

        return step, ext.params, ("images",)
    if isinstance(explainer, FAM):
        head = explainer._head(shape)
        pair_step = make_pair_step(ext, explainer._opts, head, tuple(shape[:2]), False)
        params = (ext.params, () if head is None else head.params)

        def step(p: Any, q: jax.Array, r: jax.Array) -> dict:
            out = pair_step(p, (q, r))
            return {"maps": out["query_maps"][..., None], "similarity": out["similarity"]}

        return step, params, ("queries", "references")
    raise TypeError(f"cannot export {type(explainer).__name__}: expected FEM, MLFEM or FAM")


def export_explainer_savedmodel(
    explainer: Any,
    out: str | os.PathLike,
    input_shape: Sequence[int] | None = None,
    platforms: Sequence[str] = ("cpu", "cuda"),
) -> Path:
    """Save an explainer's jitted step as a TF SavedModel (``jax2tf.convert``).

    The SavedModel has a ``tf.function`` ``explain`` (also the ``serving_default`` signature):
    ``explain(images (N, H, W, C) float32) -> {"maps": (N, H, W, 1), ...}``, N free; FAM takes
    ``(queries, references)``. Weights are ``tf.Variable`` s, not graph constants. Runs wherever
    TensorFlow can run the embedded StableHLO for one of ``platforms``.
    """
    import tensorflow as tf
    from jax.experimental import jax2tf

    if "call_tf" in explainer.extractor.source:
        raise ValueError(
            "this explainer's model is wrapped with call_tf (a TF graph inside JAX); export a "
            "tf2jax-converted or native extractor instead (method='tf2jax')"
        )
    shape = _full_shape(explainer.extractor, input_shape)
    step, params, names = _explainer_step(explainer, shape)
    poly = [None] + ["(b, " + ", ".join(str(d) for d in shape) + ")"] * len(names)
    converted = jax2tf.convert(
        step,
        polymorphic_shapes=poly,
        with_gradient=False,
        native_serialization_platforms=tuple(platforms),
    )
    module = tf.Module()
    leaves, treedef = jax.tree_util.tree_flatten(params)
    module.weights = [tf.Variable(np.asarray(a), trainable=False) for a in leaves]
    specs = [tf.TensorSpec((None, *shape), tf.float32, name=n) for n in names]

    def explain(*inputs):
        p = jax.tree_util.tree_unflatten(treedef, list(module.weights))
        return converted(p, *inputs)

    module.explain = tf.function(explain, input_signature=specs, autograph=False)
    dest = Path(out)
    tf.saved_model.save(module, str(dest), signatures={"serving_default": module.explain})
    (dest / "fastfem.json").write_text(
        json.dumps(
            {
                "explainer": type(explainer).__name__,
                "layers": list(explainer.extractor.layer_names),
                "input_shape": list(shape),
                "inputs": list(names),
                "source": explainer.extractor.source,
            },
            indent=2,
        )
    )
    return dest
