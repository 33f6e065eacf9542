"""TensorFlow front-end: tf.keras / Keras 2 / Keras-on-TensorFlow models and TF graphs -> JAX.

Two ways to run a TensorFlow model under ``jax.jit`` (``method=``):

``"tf2jax"``
  The TF graph of the sub-model up to the chosen layer(s) is *converted* op by op to JAX
  (`tf2jax <https://github.com/google-deepmind/tf2jax>`_): the result is ordinary JAX code, so it
  jits, vmaps, shards, exports with `jax.export` and runs on every JAX platform (CPU, GPU, TPU).
  The model's variables become the extractor's ``params``.
``"call_tf"``
  The TF graph is *wrapped*: ``jax.experimental.jax2tf.call_tf`` compiles it with TensorFlow's
  XLA bridge (``tf.function(jit_compile=True)``) and inlines that XLA computation into the JAX
  program. It accepts any op that XLA can compile, including ops tf2jax does not know, and the
  weights are still arguments (``params``), not constants. What it costs: TensorFlow must be
  imported in the process (at trace time and whenever the step is compiled), each compilation
  goes through TF's graph -> HLO lowering first, the batch size must be static when exporting,
  and it does not run on TPU (the embedded computation is lowered by TensorFlow, which has no
  TPU backend beside JAX's in the same process). On CPU and GPU it runs inside the same jitted
  step as the explanation kernel.
``"auto"`` (default)
  tf2jax when it is installed and converts the graph; otherwise call_tf, and the extractor's
  ``source`` says why (e.g. ``Unsupported operations in graph: ['Softsign']``).

Inputs accepted by `from_tf`:

* a Keras 3 model in a process whose Keras runs the TensorFlow backend (call_tf then uses the
  model's own ``stateless_call``),
* a ``tf_keras`` (Keras 2) model, or a legacy ``.h5`` file (read by ``tf_keras`` when installed,
  after checking its config for Lambda layers: ``tf_keras`` itself deserializes their Python
  bytecode even with ``safe_mode=True``),
* a ``tf.function`` or ``ConcreteFunction`` of one image tensor: the explained tensors are picked
  by name in its graph (see `GraphFunction.resolve`), as for SavedModels
  (`fastfem.converters.savedmodel`).

Layer selection for Keras models follows Xplique (`fastfem.converters.keras.resolve_layer`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from .feature_extractor import FeatureExtractor, Features
from .keras import LayerSpec, _as_list, cut_at_layers

METHODS = ("auto", "tf2jax", "call_tf")

SOURCES = {
    "tf2jax": "tf2jax (TF graph converted to JAX ops)",
    "call_tf": "jax2tf.call_tf (TF graph compiled by XLA, embedded in the JAX step; CPU/GPU only)",
}

#: TF ops whose output is a conv layer's pre-activation; the default layer is the last of these
#: (Xplique takes the last layer with ``filters``, which excludes DepthwiseConv2D).
CONV_OPS = ("Conv2D", "Conv3D", "Conv2DBackpropInput", "FusedConv2DBiasActivation")

#: Ops that make no activation (weights, plumbing) and are never offered as explained tensors.
_NOT_ACTIVATIONS = {
    "Const",
    "Identity",
    "IdentityN",
    "Placeholder",
    "ReadVariableOp",
    "NoOp",
    "Shape",
    "StopGradient",
}


def import_tf() -> Any:
    """Import TensorFlow, with an install hint when it is missing."""
    try:
        import tensorflow as tf
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "this model needs TensorFlow: pip install 'fastfem[tf]' (tensorflow-cpu + tf2jax)"
        ) from err
    return tf


def tf2jax_available() -> bool:
    """Whether the tf2jax converter can be imported."""
    try:
        import tf2jax  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure means "not usable here"
        return False
    return True


def tf2jax_convert(fn: Any, *specs: Any) -> tuple[Any, dict]:
    """``tf2jax.convert`` without TF's custom gradients.

    The forward pass is all an explainer needs, and JAX differentiates the converted ops anyway.
    It also avoids a tf2jax 0.3.8 bug: a graph with several custom-gradient subgraphs (Keras's
    swish in EfficientNet) fails with ``AttributeError: property of '_Subgraph' object has no
    setter`` in ``_Subgraph.rewrite``.
    """
    import tf2jax

    with tf2jax.override_config("convert_custom_gradient", False), _absl_level(logging.ERROR):
        return tf2jax.convert(fn, *specs)


@contextlib.contextmanager
def _absl_level(level: int):
    """Quiet absl's per-node notes (``Ignored custom gradient ...``) for a block."""
    logger = logging.getLogger("absl")
    old = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(old)


class _NoCaptureNote(logging.Filter):
    """Drop call_tf's "works best without captures" note: the weights are arguments here; what
    it still sees are small constants (e.g. a Normalization layer's mean), which are fine."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "call_tf works best" not in record.getMessage()


def quiet_call_tf_notes() -> None:
    logger = logging.getLogger("absl")
    if not any(isinstance(f, _NoCaptureNote) for f in logger.filters):
        logger.addFilter(_NoCaptureNote())


def check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}")


# ------------------------------------------------------------------------------------------------
# Model kinds
# ------------------------------------------------------------------------------------------------


def _mro_modules(obj: Any) -> list[str]:
    return [c.__module__ for c in type(obj).__mro__]


def is_tf_keras_model(obj: Any) -> bool:
    """A Keras 2 model (``tf_keras`` or ``tf.keras`` of TF < 2.16)."""
    return any(
        m.startswith(("tf_keras.", "keras.engine.", "tensorflow.python.keras."))
        for m in _mro_modules(obj)
    ) and hasattr(obj, "layers")


def is_keras3_model(obj: Any) -> bool:
    return any(m.startswith("keras.src.") for m in _mro_modules(obj)) and hasattr(obj, "layers")


def is_tf_function(obj: Any) -> bool:
    """A ``tf.function`` (polymorphic or concrete)."""
    return any(
        m.startswith(("tensorflow.python.eager.", "tensorflow.core.function."))
        for m in _mro_modules(obj)
    ) and (hasattr(obj, "get_concrete_function") or hasattr(obj, "structured_outputs"))


# ------------------------------------------------------------------------------------------------
# Safety: legacy .h5 files
# ------------------------------------------------------------------------------------------------


def _config_has_lambda(config: Any) -> bool:
    if isinstance(config, dict):
        if config.get("class_name") in ("Lambda", "TFOpLambda") and "function" in json.dumps(
            config.get("config", {})
        ):
            return config.get("class_name") == "Lambda"
        return any(_config_has_lambda(v) for v in config.values())
    if isinstance(config, list):
        return any(_config_has_lambda(v) for v in config)
    return False


def check_h5_safe(path: str | os.PathLike) -> None:
    """Refuse a legacy .h5 model whose config has a Lambda layer (its code would be executed).

    Reads only the file's JSON ``model_config`` attribute with h5py; nothing is deserialized.
    """
    import h5py

    with h5py.File(path, "r") as f:
        raw = f.attrs.get("model_config")
    if raw is None:
        return
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8")
    if _config_has_lambda(json.loads(raw)):
        raise ValueError(
            f"{Path(path).name} contains a Lambda layer: loading it would execute the Python "
            "code stored in the file. If you trust the file, pass safe_mode=False "
            "(command line: --unsafe)"
        )


def load_tf_keras_file(path: str | os.PathLike, safe_mode: bool = True) -> Any:
    """Load a legacy Keras 2 ``.h5`` (or ``tf_keras`` ``.keras``) file with ``tf_keras``.

    ``safe_mode=True`` refuses Lambda layers before anything is deserialized (``tf_keras`` would
    run their bytecode from an .h5 file even in its own safe mode).
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"model file not found: {p}")
    try:
        import tf_keras
    except ImportError as err:
        raise ImportError(
            "reading a Keras 2 model file with tf_keras needs `pip install tf-keras`; or load "
            "it with Keras 3 (fastfem.converters.from_keras)"
        ) from err
    if p.suffix in (".h5", ".hdf5"):
        if safe_mode:
            check_h5_safe(p)
        return tf_keras.models.load_model(p, compile=False)
    if p.suffix == ".keras":
        try:
            return tf_keras.models.load_model(p, compile=False, safe_mode=safe_mode)
        except ValueError as err:
            if "safe_mode" in str(err) or "Lambda" in str(err):
                raise ValueError(
                    f"{p.name} contains code (e.g. a Lambda layer) that will not be deserialized "
                    "with safe_mode=True; if you trust the file, pass safe_mode=False "
                    "(command line: --unsafe)"
                ) from err
            raise
    raise ValueError(f"unsupported Keras 2 model file {p.name!r}: expected .h5 or .keras")


# ------------------------------------------------------------------------------------------------
# Keras models (Keras 3 on TensorFlow, tf_keras)
# ------------------------------------------------------------------------------------------------


def _keras_sub_model(model: Any, layers: Any, include_output: bool, keras_mod: Any):
    inputs = getattr(model, "inputs", None)
    if not inputs:
        raise ValueError(
            f"model {model.name!r} has no defined inputs (a subclassed or unbuilt model); build a "
            "Functional/Sequential model, or pass a tf.function (fastfem.converters.from_tf)"
        )
    if len(inputs) != 1:
        raise ValueError(f"model {model.name!r} has {len(inputs)} inputs; FEM needs one image")
    sub, names = cut_at_layers(model, layers, include_output, keras_mod)
    shape = tuple(None if d is None else int(d) for d in inputs[0].shape[1:])
    return sub, names, shape


def _tf2jax_keras(sub: Any, input_shape: tuple, tf: Any):
    """tf2jax conversion of ``sub(x, training=False)``: ``(apply_flat, params)``."""

    @tf.function(autograph=False)
    def forward(x):
        out = sub(x, training=False)
        return list(out) if isinstance(out, (list, tuple)) else [out]

    spec = tf.TensorSpec((None, *input_shape), tf.float32)
    jax_fn, params = tf2jax_convert(forward, spec)
    params = {k: np.asarray(v) for k, v in params.items()}

    def call(p: Any, x: jax.Array) -> list:
        out, _ = jax_fn(p, x)
        return list(out)

    return call, params


def _features_apply(call: Any, n_layers: int, include_output: bool):
    def apply(p: Any, x: jax.Array) -> Features:
        out = call(p, x)
        out = list(out) if isinstance(out, (list, tuple)) else [out]
        return Features(
            activations=tuple(out[:n_layers]),
            output=out[n_layers] if include_output else None,
        )

    return apply


def _check_traces(apply: Any, params: Any, input_shape: tuple) -> None:
    """Trace once (no compilation) so that conversion gaps show up now, not in the first step."""
    if any(d is None for d in input_shape):
        return
    jax.eval_shape(apply, params, jax.ShapeDtypeStruct((1, *input_shape), np.float32))


def _fallback_reason(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text[:300]


def _from_keras_model(
    model: Any, layers: Any, include_output: bool, method: str, keras3: bool
) -> FeatureExtractor:
    tf = import_tf()
    if keras3:
        import keras as keras_mod

        if keras_mod.backend.backend() != "tensorflow":
            raise ValueError(
                "this Keras 3 model runs on the JAX backend: use fastfem.converters.from_keras "
                "(the native path); from_tf is for Keras on TensorFlow and tf_keras models"
            )
    else:
        import tf_keras as keras_mod
    sub, names, input_shape = _keras_sub_model(model, layers, include_output, keras_mod)
    n = len(names)
    notes = ""
    if method in ("auto", "tf2jax"):
        if not tf2jax_available():
            if method == "tf2jax":
                raise ImportError("method='tf2jax' needs `pip install tf2jax` (fastfem[tf])")
            notes = " [tf2jax not installed]"
        else:
            try:
                call, params = _tf2jax_keras(sub, input_shape, tf)
                apply = _features_apply(call, n, include_output)
                _check_traces(apply, params, input_shape)
                return FeatureExtractor(
                    apply=apply,
                    params=params,
                    input_shape=input_shape,
                    layer_names=names,
                    has_output=include_output,
                    source=SOURCES["tf2jax"],
                )
            except Exception as err:  # noqa: BLE001 - any conversion gap falls back to call_tf
                if method == "tf2jax":
                    raise
                notes = f" [tf2jax could not convert it: {_fallback_reason(err)}]"
    quiet_call_tf_notes()
    if keras3:
        import jax.numpy as jnp

        from .keras import _stateless_call_tf

        params = (
            [jnp.asarray(v.value) for v in sub.trainable_variables],
            [jnp.asarray(v.value) for v in sub.non_trainable_variables],
        )
        call = _stateless_call_tf(sub)
    else:

        @tf.function(autograph=False)
        def forward(x):
            out = sub(x, training=False)
            return list(out) if isinstance(out, (list, tuple)) else [out]

        concrete = forward.get_concrete_function(tf.TensorSpec((None, *input_shape), tf.float32))
        graph = GraphFunction(concrete)
        call, params = graph.call_tf(graph.output_names)
    return FeatureExtractor(
        apply=_features_apply(call, n, include_output),
        params=params,
        input_shape=input_shape,
        layer_names=names,
        has_output=include_output,
        source=SOURCES["call_tf"] + notes,
    )


# ------------------------------------------------------------------------------------------------
# TF graphs (tf.function, ConcreteFunction, SavedModel signatures)
# ------------------------------------------------------------------------------------------------


def short_name(node_name: str) -> str:
    """A graph node's name without the ``StatefulPartitionedCall``/``PartitionedCall`` scopes
    that function inlining adds: ``StatefulPartitionedCall/model/conv/BiasAdd`` ->
    ``model/conv/BiasAdd``.
    """
    parts = [
        p for p in node_name.split("/") if not re.fullmatch(r"(Stateful)?PartitionedCall(_\d+)?", p)
    ]
    return "/".join(parts)


class GraphFunction:
    """A TF ConcreteFunction of one image input, frozen and inlined so that any of its
    intermediate tensors can be fetched, with the frozen variables fed back in as arguments.
    """

    def __init__(self, concrete: Any, input_name: str | None = None):
        tf = import_tf()
        from tensorflow.python.framework.convert_to_constants import (
            convert_variables_to_constants_v2,
        )

        self.tf = tf
        n_args = len(concrete.inputs) - len(concrete.captured_inputs)
        args = concrete.inputs[:n_args]
        images = [t for t in args if t.dtype == tf.float32 and t.shape.rank == 4] or [
            t for t in args if t.shape.rank == 4
        ]
        if input_name is not None:
            images = [t for t in args if t.op.name == input_name or t.name == input_name]
            if not images:
                raise ValueError(
                    f"no input named {input_name!r}; inputs: {[t.op.name for t in args]}"
                )
        if len(images) != 1 or (len(args) != 1 and input_name is None):
            raise ValueError(
                "the function must take one image tensor (N, H, W, C); its inputs are "
                f"{[(t.op.name, tuple(t.shape)) for t in args]} (pick one with input_name=)"
            )
        image = images[0]
        self.input_op = image.op.name
        self.input_shape = tuple(None if d is None else int(d) for d in image.shape[1:])
        self.output_names = [
            t.op.name if t.name.endswith(":0") else t.name for t in concrete.outputs
        ]
        self.output_tensors = [t.name for t in concrete.outputs]

        # Which captured placeholders are variables, and their names (for params keys).
        handles = {id(v.handle): v for v in concrete.variables}
        var_names: dict[str, str] = {}
        for placeholder, captured in zip(
            concrete.inputs[n_args:], concrete.captured_inputs, strict=True
        ):
            if captured.dtype == tf.resource:
                v = handles.get(id(captured))
                name = v.name if v is not None else placeholder.op.name
                var_names[placeholder.op.name] = name.split(":")[0]

        frozen = convert_variables_to_constants_v2(concrete)
        self.graph_def = frozen.graph.as_graph_def()
        weights, keys, used = {}, [], set()
        for node in self.graph_def.node:
            if node.op == "Const" and node.name in var_names:
                value = tf.make_ndarray(node.attr["value"].tensor)
                if value.dtype.kind != "f":
                    continue
                key = var_names[node.name]
                while key in used:
                    key += "_"
                used.add(key)
                keys.append((node.name, key))
                weights[key] = value
        self.weight_nodes = [node for node, _ in keys]
        self.weight_keys = [key for _, key in keys]
        self.weights = weights

        def _import():
            tf.compat.v1.import_graph_def(self.graph_def, name="")

        self.wrapped = tf.compat.v1.wrap_function(_import, [])
        self.graph = self.wrapped.graph

    # -- tensor candidates ------------------------------------------------------------------------

    def candidates(self) -> list[tuple[str, str, tuple]]:
        """``(node name, op type, shape)`` of every 4-D float tensor an explainer could use, in
        graph order."""
        out = []
        for op in self.graph.get_operations():
            if op.type in _NOT_ACTIVATIONS or not op.outputs:
                continue
            t = op.outputs[0]
            if t.dtype.is_floating and t.shape.rank == 4:
                out.append((op.name, op.type, tuple(t.shape.as_list())))
        return out

    def layer_outputs(self) -> dict[str, str]:
        """Scope (``model/conv_b``) -> the last 4-D tensor of that scope: a layer's output."""
        scopes: dict[str, str] = {}
        for name, _, _ in self.candidates():
            short = short_name(name)
            scope = short.rsplit("/", 1)[0] if "/" in short else short
            scopes[scope] = name
        return scopes

    def candidates_text(self, limit: int = 40) -> str:
        scopes = list(self.layer_outputs())
        shown = ", ".join(repr(s) for s in scopes[-limit:])
        more = f" (last {limit} of {len(scopes)})" if len(scopes) > limit else ""
        return f"layers{more}: {shown}" if scopes else "(none: no 4-D float tensor in the graph)"

    def default_tensor(self) -> str:
        """Xplique's default: the output of the layer of the last (non-depthwise) conv op."""
        convs = [name for name, op, _ in self.candidates() if op in CONV_OPS]
        if not convs:
            raise ValueError(
                "the graph has no convolution; pass layers= a tensor or layer name: "
                + self.candidates_text()
            )
        short = short_name(convs[-1])
        scope = short.rsplit("/", 1)[0] if "/" in short else short
        return self.layer_outputs()[scope]

    def resolve(self, spec: str | None) -> tuple[str, str]:
        """``(display name, node name)`` of a tensor given by node name, short name or layer
        scope (its last 4-D tensor); None -> `default_tensor`."""
        if spec is None:
            node = self.default_tensor()
            short = short_name(node)
            return (short.rsplit("/", 1)[0] if "/" in short else short), node
        if not isinstance(spec, str):
            raise TypeError(f"a TF graph's layers are tensor or layer names; got {spec!r}")
        name = spec[:-2] if spec.endswith(":0") else spec
        cands = {n: (op, shape) for n, op, shape in self.candidates()}
        if name in cands:
            return short_name(name), name
        by_short = [n for n in cands if short_name(n) == name]
        if len(by_short) == 1:
            return name, by_short[0]
        scopes = self.layer_outputs()
        matches = [s for s in scopes if s == name or s.endswith("/" + name)]
        if not matches:
            # Keras 3 traces layers in name scopes with a "_1" suffix (small_cnn_1/conv_b_1)
            bare = {s: "/".join(re.sub(r"_\d+$", "", c) for c in s.split("/")) for s in scopes}
            matches = [s for s, b in bare.items() if b == name or b.endswith("/" + name)]
        if len(matches) == 1:
            return name, scopes[matches[0]]
        if len(matches) > 1:
            raise ValueError(f"layer name {spec!r} is ambiguous: {matches}")
        detail = ""
        for op in self.graph.get_operations():
            if (op.name == name or short_name(op.name) == name) and op.outputs:
                shape = op.outputs[0].shape
                detail = f" (it is a {op.type} with output {shape}, not 4-D float)"
                break
        raise ValueError(
            f"no 4-D tensor or layer named {spec!r}{detail}; " + self.candidates_text()
        )

    # -- building the JAX callable ----------------------------------------------------------------

    def pruned(self, fetch_nodes: Sequence[str]):
        """A ConcreteFunction ``(x, *weights) -> [tensors]``."""
        g = self.graph
        feeds = [g.get_tensor_by_name(self.input_op + ":0")] + [
            g.get_tensor_by_name(n + ":0") for n in self.weight_nodes
        ]
        fetches = [g.get_tensor_by_name(n if ":" in n else n + ":0") for n in fetch_nodes]
        return self.wrapped.prune(feeds=feeds, fetches=fetches)

    def _tf_function(self, fetch_nodes: Sequence[str], jit_compile: bool):
        tf = self.tf
        pruned = self.pruned(fetch_nodes)
        keys = list(self.weight_keys)

        def forward(x, weights):
            return list(pruned(x, *[weights[k] for k in keys]))

        return tf.function(forward, jit_compile=jit_compile, autograph=False)

    def _specs(self):
        tf = self.tf
        x = tf.TensorSpec((None, *self.input_shape), tf.float32)
        w = {k: tf.TensorSpec(v.shape, tf.as_dtype(v.dtype)) for k, v in self.weights.items()}
        return x, w

    def tf2jax(self, fetch_nodes: Sequence[str]):
        """``(call(params, x) -> [arrays], params)`` converted by tf2jax."""
        fn = self._tf_function(fetch_nodes, jit_compile=False)
        jax_fn, extra = tf2jax_convert(fn, *self._specs())
        params = {
            "weights": dict(self.weights),
            "tf2jax": {k: np.asarray(v) for k, v in extra.items()},
        }

        def call(p: Any, x: jax.Array) -> list:
            out, _ = jax_fn(p["tf2jax"], x, p["weights"])
            return list(out)

        return call, params

    def call_tf(self, fetch_nodes: Sequence[str]):
        """``(call(params, x) -> [arrays], params)`` wrapped by jax2tf.call_tf."""
        from jax.experimental import jax2tf

        quiet_call_tf_notes()
        # Pure forward pass: no side effects, so exported artifacts carry no call_tf effect
        # (whose deserialization would need TensorFlow).
        bridged = jax2tf.call_tf(
            self._tf_function(fetch_nodes, jit_compile=True), has_side_effects=False
        )

        def call(p: Any, x: jax.Array) -> list:
            return list(bridged(x, p))

        return call, dict(self.weights)


def graph_extractor(
    graph: GraphFunction,
    layers: Any,
    include_output: bool,
    method: str,
    output_node: str | None = None,
    what: str = "TF graph",
) -> FeatureExtractor:
    """A `FeatureExtractor` of a `GraphFunction` for tensors picked by name (see `resolve`)."""
    check_method(method)
    specs = _as_list(layers)
    resolved = [graph.resolve(s) for s in specs]
    names = tuple(display for display, _ in resolved)
    fetch = [node for _, node in resolved]
    if include_output:
        fetch.append(output_node or graph.output_tensors[0])
    n = len(names)
    notes = ""
    if method in ("auto", "tf2jax"):
        if not tf2jax_available():
            if method == "tf2jax":
                raise ImportError("method='tf2jax' needs `pip install tf2jax` (fastfem[tf])")
            notes = " [tf2jax not installed]"
        else:
            try:
                call, params = graph.tf2jax(fetch)
                apply = _features_apply(call, n, include_output)
                _check_traces(apply, params, graph.input_shape)
                return FeatureExtractor(
                    apply=apply,
                    params=params,
                    input_shape=graph.input_shape,
                    layer_names=names,
                    has_output=include_output,
                    source=f"{what} -> " + SOURCES["tf2jax"],
                )
            except Exception as err:  # noqa: BLE001 - any conversion gap falls back to call_tf
                if method == "tf2jax":
                    raise
                notes = f" [tf2jax could not convert it: {_fallback_reason(err)}]"
    call, params = graph.call_tf(fetch)
    return FeatureExtractor(
        apply=_features_apply(call, n, include_output),
        params=params,
        input_shape=graph.input_shape,
        layer_names=names,
        has_output=include_output,
        source=f"{what} -> " + SOURCES["call_tf"] + notes,
    )


def _concrete_of(fn: Any, input_shape: Sequence[int | None] | None) -> Any:
    tf = import_tf()
    if hasattr(fn, "get_concrete_function"):
        if getattr(fn, "input_signature", None):
            return fn.get_concrete_function()
        if input_shape is None:
            raise ValueError("a tf.function without an input_signature needs input_shape=(H, W, C)")
        return fn.get_concrete_function(tf.TensorSpec((None, *input_shape), tf.float32))
    return fn  # already a ConcreteFunction


# ------------------------------------------------------------------------------------------------
# Public entry point
# ------------------------------------------------------------------------------------------------


def from_tf(
    model: Any,
    layers: LayerSpec | Sequence[LayerSpec] = None,
    include_output: bool = False,
    method: str = "auto",
    input_shape: Sequence[int | None] | None = None,
    safe_mode: bool = True,
) -> FeatureExtractor:
    """A `FeatureExtractor` for a TensorFlow model, converted by tf2jax or wrapped by call_tf.

    Args:
      model: a tf_keras (Keras 2) model, a Keras 3 model under the TensorFlow backend, a legacy
        ``.h5`` path (read with tf_keras), a SavedModel directory (see `from_savedmodel`), or a
        ``tf.function`` / ``ConcreteFunction`` of one image batch.
      layers: Keras models: one layer spec (None / name / index, as Xplique) or several. TF
        graphs: tensor names, short names (without the ``StatefulPartitionedCall/`` scopes) or
        layer scopes (``conv_b`` -> the last 4-D tensor of that scope); None -> the layer of the
        last convolution.
      include_output: also return the model's (first) output.
      method: ``"auto"`` (tf2jax, else call_tf), ``"tf2jax"`` or ``"call_tf"``.
      input_shape: (H, W, C) for a ``tf.function`` without an input signature.
      safe_mode: refuse files that would execute stored code (Lambda layers).
    """
    check_method(method)
    if isinstance(model, (str, os.PathLike)):
        p = Path(model)
        if p.is_dir():
            from .savedmodel import from_savedmodel

            return from_savedmodel(
                p, layers, include_output=include_output, method=method, safe_mode=safe_mode
            )
        model = load_tf_keras_file(p, safe_mode=safe_mode)
    if is_keras3_model(model):
        return _from_keras_model(model, layers, include_output, method, keras3=True)
    if is_tf_keras_model(model):
        return _from_keras_model(model, layers, include_output, method, keras3=False)
    if is_tf_function(model):
        graph = GraphFunction(_concrete_of(model, input_shape))
        return graph_extractor(graph, layers, include_output, method, what="tf.function")
    raise TypeError(
        f"from_tf cannot use {type(model).__module__}.{type(model).__name__}: pass a tf_keras "
        "model, a Keras 3 model on the TensorFlow backend, a .h5 file, a SavedModel directory "
        "or a tf.function"
    )
