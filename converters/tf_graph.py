"""TF graphs cut at tensors picked by name: ``tf.function`` s and SavedModel signatures.

`GraphFunction` takes a ConcreteFunction of one image input, freezes and inlines it so that any
intermediate tensor can be fetched, and feeds the frozen variables back in as arguments (they
stay the extractor's ``params``, not constants). `graph_extractor` cuts it at the chosen tensors
and runs the cut through `fastfem.converters.tf_bridge.tf2jax_or_call_tf`.

Tensors are named as in the graph without the ``StatefulPartitionedCall/`` scopes that inlining
adds: ``model/conv_b/BiasAdd``; a layer scope (``conv_b`` or ``model/conv_b``) stands for its
last 4-D tensor (the layer's output). ``None`` is Xplique's default: the output of the layer of
the last (non-depthwise) convolution. A wrong name gets an error listing the candidates.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from .feature_extractor import FeatureExtractor
from .keras import as_layer_list
from .tf_bridge import import_tf, tf2jax_convert, tf2jax_or_call_tf

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
    resolved = [graph.resolve(s) for s in as_layer_list(layers)]
    fetch = [node for _, node in resolved]
    if include_output:
        fetch.append(output_node or graph.output_tensors[0])
    return tf2jax_or_call_tf(
        method,
        lambda: graph.tf2jax(fetch),
        lambda: graph.call_tf(fetch),
        input_shape=graph.input_shape,
        layer_names=[display for display, _ in resolved],
        include_output=include_output,
        what=what,
    )


def concrete_function(fn: Any, input_shape: Sequence[int | None] | None) -> Any:
    """The ConcreteFunction of a ``tf.function`` (traced for ``(None, *input_shape)`` float32
    when it has no input signature) or of a ConcreteFunction (itself)."""
    tf = import_tf()
    if hasattr(fn, "get_concrete_function"):
        if getattr(fn, "input_signature", None):
            return fn.get_concrete_function()
        if input_shape is None:
            raise ValueError("a tf.function without an input_signature needs input_shape=(H, W, C)")
        return fn.get_concrete_function(tf.TensorSpec((None, *input_shape), tf.float32))
    return fn  # already a ConcreteFunction
