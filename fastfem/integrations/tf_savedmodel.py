"""A whole explainer as a TensorFlow SavedModel, through its `fastfem.engine.step.Step`.

For TensorFlow users: the jitted step of any explainer (extractor, kernel, resize) becomes a
``tf.function`` through ``jax2tf.convert`` (weights as ``tf.Variable`` s, not graph constants;
batch dimension polymorphic) saved as a SavedModel with one function ``explain`` (also the
``serving_default`` signature)::

    tf.saved_model.load(dir).explain(images)            # FEM, MLFEM, baselines
    tf.saved_model.load(dir).explain(queries, refs)     # FAM pairs

returning a dict of the step's outputs, ``maps`` (N, H, W, 1) as the explainer's ``explain``
returns them. Only the `Step` contract is used: ``explainer.step(shape, resize=True)`` gives the
function, its params and the names of its inputs (``"x"`` is exported as ``images``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from fastfem.converters.export import full_input_shape
from fastfem.engine.step import Step


def _tf_name(key: str) -> str:
    return "images" if key == "x" else key


def _with_channel_axis(step: Step) -> Any:
    """``(params, *inputs) -> outputs`` of the step, maps as (N, H, W, 1)."""

    def fn(params: Any, *inputs: Any) -> dict[str, Any]:
        out = step.fn(params, dict(zip(step.inputs, inputs, strict=True)))
        out["maps"] = out["maps"][..., None]
        return out

    return fn


def export_savedmodel(
    explainer: Any,
    out: str | os.PathLike,
    input_shape: Sequence[int] | None = None,
    platforms: Sequence[str] = ("cpu", "cuda"),
) -> Path:
    """Save an explainer's jitted step (``resize=True``) as a TF SavedModel; returns its path.

    Runs wherever TensorFlow can run the embedded StableHLO for one of ``platforms``. An
    explainer whose model is wrapped with ``call_tf`` cannot be exported (a TF graph inside
    JAX): convert it with tf2jax instead.
    """
    import tensorflow as tf
    from jax.experimental import jax2tf

    if "call_tf" in explainer.extractor.source:
        raise ValueError(
            "this explainer's model is wrapped with call_tf (a TF graph inside JAX); export a "
            "tf2jax-converted or native extractor instead (method='tf2jax')"
        )
    shape = full_input_shape(explainer.extractor, input_shape)
    step = explainer.step(shape, resize=True)
    if step.inputs[0] != "x" or any(k not in ("reference",) for k in step.inputs[1:]):
        raise ValueError(f"cannot export a step with inputs {step.inputs}: images only")
    poly = [None] + ["(b, " + ", ".join(str(d) for d in shape) + ")"] * len(step.inputs)
    converted = jax2tf.convert(
        _with_channel_axis(step),
        polymorphic_shapes=poly,
        with_gradient=False,
        native_serialization_platforms=tuple(platforms),
    )
    module = tf.Module()
    leaves, treedef = jax.tree_util.tree_flatten(step.params)
    module.weights = [tf.Variable(np.asarray(a), trainable=False) for a in leaves]
    names = [_tf_name(k) for k in step.inputs]
    specs = [tf.TensorSpec((None, *shape), tf.float32, name=n) for n in names]

    def explain(*inputs: Any) -> Any:
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
                "inputs": names,
                "source": explainer.extractor.source,
            },
            indent=2,
        )
    )
    return dest
