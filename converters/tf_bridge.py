"""A TensorFlow computation as a JAX function: converted by tf2jax, or wrapped by call_tf.

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

`tf2jax_or_call_tf` is that choice, once, for every TF front-end (Keras on TensorFlow, tf_keras,
``tf.function``, SavedModels): each front-end gives it two builders of ``(call(params, x) ->
[arrays], params)``, one per method.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from .feature_extractor import FeatureExtractor, features_apply

METHODS = ("auto", "tf2jax", "call_tf")

SOURCES = {
    "tf2jax": "tf2jax (TF graph converted to JAX ops)",
    "call_tf": "jax2tf.call_tf (TF graph compiled by XLA, embedded in the JAX step; CPU/GPU only)",
}

#: ``call(params, x) -> [arrays]``: the chosen layers' activations, then the output if asked.
Call = Callable[[Any, jax.Array], list]
#: Builds one method's ``(call, params)``.
Build = Callable[[], tuple[Call, Any]]


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


def check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}")


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


def _check_traces(apply: Any, params: Any, input_shape: tuple) -> None:
    """Trace once (no compilation) so that conversion gaps show up now, not in the first step."""
    if any(d is None for d in input_shape):
        return
    jax.eval_shape(apply, params, jax.ShapeDtypeStruct((1, *input_shape), np.float32))


def _fallback_reason(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text[:300]


def tf2jax_or_call_tf(
    method: str,
    tf2jax: Build,
    call_tf: Build,
    *,
    input_shape: tuple[int | None, ...],
    layer_names: Sequence[str],
    include_output: bool,
    what: str | None = None,
) -> FeatureExtractor:
    """The `FeatureExtractor` of a TF computation by ``method`` (see the module docs).

    Args:
      method: ``"auto"`` (tf2jax if installed and it converts and traces, else call_tf),
        ``"tf2jax"`` (its errors raised) or ``"call_tf"``.
      tf2jax: builds ``(call, params)`` with tf2jax (called only if tf2jax is tried).
      call_tf: builds ``(call, params)`` with ``jax2tf.call_tf`` (called only if used).
      input_shape: per-sample (H, W, C) of the image input.
      layer_names: the chosen layers' names, in the order ``call`` returns them.
      include_output: whether ``call`` returns the model output after the activations.
      what: what the model is (e.g. ``"SavedModel m[serving_default]"``), put before the
        method in the extractor's ``source``.
    """
    check_method(method)
    names = tuple(layer_names)
    prefix = "" if what is None else f"{what} -> "
    notes = ""
    if method != "call_tf":
        if not tf2jax_available():
            if method == "tf2jax":
                raise ImportError("method='tf2jax' needs `pip install tf2jax` (fastfem[tf])")
            notes = " [tf2jax not installed]"
        else:
            try:
                call, params = tf2jax()
                apply = features_apply(call, len(names), include_output)
                _check_traces(apply, params, input_shape)
                return FeatureExtractor(
                    apply, params, input_shape, names, include_output, prefix + SOURCES["tf2jax"]
                )
            except Exception as err:  # noqa: BLE001 - any conversion gap falls back to call_tf
                if method == "tf2jax":
                    raise
                notes = f" [tf2jax could not convert it: {_fallback_reason(err)}]"
    quiet_call_tf_notes()
    call, params = call_tf()
    apply = features_apply(call, len(names), include_output)
    source = prefix + SOURCES["call_tf"] + notes
    return FeatureExtractor(apply, params, input_shape, names, include_output, source)
