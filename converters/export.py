"""Portable artifacts: a `FeatureExtractor` as a `jax.export` file.

`save_extractor` writes a directory that runs later **without TensorFlow, Keras or Flax**, only
JAX: ``apply.jaxexport`` (the serialized StableHLO of ``apply(params, x)``, batch dimension
symbolic), ``params.npz`` (the parameter leaves; read with ``allow_pickle=False``) and
``extractor.json`` (layer names, input shape, source, versions). `load_extractor` (and
``fastfem.converters.load(path)``, and every explainer given the path) turns it back into a
`FeatureExtractor`. Nothing in it is executable Python: loading it runs no code from the file.
An extractor wrapped with ``call_tf`` exports too (the TF computation is already XLA inside it),
but only for one platform (the current one) and with a fixed batch size: the loaded ``apply``
pads and splits any batch into chunks of that size.

The other direction, a whole explainer as a TF SavedModel, is `fastfem.export_savedmodel`.
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

from .feature_extractor import FeatureExtractor, features_apply

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


def full_input_shape(extractor: FeatureExtractor, input_shape: Sequence[int] | None) -> tuple:
    """``input_shape`` or the extractor's, as (H, W, C) ints; a ValueError unless fully known."""
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

    shape = full_input_shape(extractor, input_shape)
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

    return FeatureExtractor(
        apply=features_apply(call, n_layers, has_output),
        params=params,
        input_shape=tuple(meta["input_shape"]),
        layer_names=tuple(meta["layer_names"]),
        has_output=has_output,
        source=f"jax.export artifact {p.name} (from {meta['source']})",
    )
