"""TF SavedModel front-end: a signature, cut at an intermediate tensor picked by name.

``from_savedmodel(path, layers="conv5_block3_3_conv")`` loads the SavedModel with
``tf.saved_model.load`` (graphs and variables only: no Keras, no Python code), takes one
signature (``serving_default`` unless told), freezes and inlines its graph so that intermediate
tensors become reachable, and cuts it at the chosen tensor(s). The frozen variables are fed back
as arguments, so they stay the extractor's ``params`` (not constants baked into the program).
Then tf2jax converts the cut graph, or ``jax2tf.call_tf`` wraps it (see
`fastfem.converters.tf_bridge`; the graph cut is `fastfem.converters.tf_graph`).

Tensors are named as in the graph without the ``StatefulPartitionedCall/`` scopes that inlining
adds: ``model/conv_b/BiasAdd``; a layer scope (``conv_b`` or ``model/conv_b``) stands for its
last 4-D tensor (the layer's output). A wrong name gets an error listing the candidates.

Safety: before TensorFlow reads the SavedModel, its ``saved_model.pb`` is parsed as a protobuf
and refused (unless ``safe_mode=False``) when any graph or function uses an op that runs Python
or touches files (`UNSAFE_OPS`). Loading restores variables; nothing of the graph runs in
TensorFlow under tf2jax, and under call_tf only what XLA can compile.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .feature_extractor import FeatureExtractor
from .keras import UNSAFE_HINT
from .tf_bridge import check_method, import_tf
from .tf_graph import GraphFunction, graph_extractor

#: Ops refused in a SavedModel with ``safe_mode=True``: Python callbacks and file access.
UNSAFE_OPS = re.compile(
    r"^(PyFunc|PyFuncStateless|EagerPyFunc|ReadFile|WriteFile|MatchingFiles|ImmutableConst|"
    r"CreateSummaryFileWriter|Write\w*Summary|WriteRawProtoSummary|DebugIdentity\w*|"
    r"DebugNumericSummary\w*|FileSystemSetConfiguration)$"
)


def is_savedmodel_dir(path: str | os.PathLike) -> bool:
    p = Path(path)
    return p.is_dir() and (p / "saved_model.pb").is_file()


def savedmodel_ops(path: str | os.PathLike) -> set[str]:
    """Every op type used in a SavedModel's graphs and function libraries (protobuf only)."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((Path(path) / "saved_model.pb").read_bytes())
    ops: set[str] = set()
    for meta in proto.meta_graphs:
        ops.update(node.op for node in meta.graph_def.node)
        for fn in meta.graph_def.library.function:
            ops.update(node.op for node in fn.node_def)
    return ops


def check_savedmodel_safe(path: str | os.PathLike) -> None:
    bad = sorted(op for op in savedmodel_ops(path) if UNSAFE_OPS.match(op))
    if bad:
        raise ValueError(
            f"the SavedModel {Path(path).name!r} uses ops that run Python code or access files "
            f"({', '.join(bad)}); if you trust it, pass safe_mode=False {UNSAFE_HINT}"
        )


def from_savedmodel(
    path: str | os.PathLike,
    layers: str | Sequence[str] | None = None,
    include_output: bool = False,
    signature: str = "serving_default",
    input_name: str | None = None,
    output_name: str | None = None,
    method: str = "auto",
    safe_mode: bool = True,
    tags: Sequence[str] | None = None,
) -> FeatureExtractor:
    """A `FeatureExtractor` for a TF SavedModel directory.

    Args:
      path: the SavedModel directory (holding ``saved_model.pb``).
      layers: tensor name(s) or layer scope(s) in the signature's graph (see module docs); None
        -> the output of the layer of the last convolution (as Xplique's default).
      include_output: also return the signature's output (``output_name``, else the first one).
      signature: the signature key.
      input_name: the image input's name when the signature has several inputs.
      method: ``"auto"``, ``"tf2jax"`` or ``"call_tf"`` (see `fastfem.converters.tf_bridge`).
      safe_mode: refuse SavedModels with Python or file-access ops (`UNSAFE_OPS`).
      tags: MetaGraph tags for ``tf.saved_model.load`` (default: its own).
    """
    check_method(method)
    p = Path(path)
    if not is_savedmodel_dir(p):
        raise FileNotFoundError(f"not a SavedModel directory (no saved_model.pb): {p}")
    tf = import_tf()
    if safe_mode:
        check_savedmodel_safe(p)
    loaded = tf.saved_model.load(str(p), tags=list(tags) if tags else None)
    signatures = dict(getattr(loaded, "signatures", {}) or {})
    if signature not in signatures:
        raise ValueError(
            f"no signature {signature!r} in {p.name}; signatures: {sorted(signatures) or 'none'}"
        )
    concrete = signatures[signature]
    output_node = None
    outputs = concrete.structured_outputs
    if isinstance(outputs, dict):
        keys = list(outputs)
        if output_name is not None and output_name not in outputs:
            raise ValueError(f"no output {output_name!r} in signature {signature!r}: {keys}")
        key = output_name if output_name is not None else keys[0]
        output_node = outputs[key].name if hasattr(outputs[key], "name") else None
    graph = GraphFunction(concrete, input_name=_input_op_name(concrete, input_name))
    if output_node is not None:
        # structured outputs name tensors of the signature graph; map to the flat output list
        flat = [t.name for t in concrete.outputs]
        output_node = output_node if output_node in flat else None
    return graph_extractor(
        graph,
        layers,
        include_output,
        method,
        output_node=output_node,
        what=f"SavedModel {p.name}[{signature}]",
    )


def _input_op_name(concrete: Any, input_name: str | None) -> str | None:
    """The placeholder op of the signature input called ``input_name`` (a structured key)."""
    if input_name is None:
        return None
    _, kwargs = concrete.structured_input_signature
    spec = kwargs.get(input_name)
    if spec is None:
        raise ValueError(f"no input {input_name!r} in the signature; inputs: {sorted(kwargs)}")
    return spec.name or input_name
