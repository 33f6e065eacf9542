"""A projection head (after pooling) as a pure JAX function of one embedding, for FAM.

`build_head` accepts a Keras 3 layer or model (the JAX backend: ``stateless_call``; the
TensorFlow backend: converted to JAX ops by tf2jax) or a JAX-traceable callable; either way its
weights become arguments of the jitted step (`PureHead`), bound by `bind_head`.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from .keras import import_keras

#: A head as a function of one pooled embedding (C,) -> (D,).
Head = Callable[[jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class PureHead:
    """A head as a pure ``apply(params, e) -> z`` of ONE embedding (C,) -> (D,)."""

    apply: Callable[[Any, jax.Array], jax.Array]
    params: Any


def is_keras_layer(obj: Any) -> bool:
    return any(
        c.__module__.startswith("keras") and c.__name__ == "Layer" for c in type(obj).__mro__
    )


def build_head(head: Any, channels: int) -> PureHead | None:
    """Turn ``head`` into a pure function of one pooled embedding (C,) -> (D,).

    Accepted: None; a Keras 3 layer or model (built for ``(None, C)`` if not yet built): on the
    JAX backend run by ``stateless_call``, on the TensorFlow backend converted to JAX ops by
    tf2jax — either way its weights are arguments of the jitted step; or a JAX-traceable
    callable of one embedding (C,) -> (D,).
    """
    if head is None:
        return None
    if is_keras_layer(head):
        if not head.built:
            head.build((None, channels))
        backend = import_keras().backend.backend()
        if backend == "tensorflow":
            return _tf_keras_head(head, channels)
        if backend != "jax":
            raise ValueError(
                f"a Keras head needs Keras's JAX or TensorFlow backend; this process runs "
                f"{backend!r}. Pass the head as a JAX function of one embedding (C,) -> (D,)"
            )
        params = (
            [jnp.asarray(v.value) for v in head.trainable_variables],
            [jnp.asarray(v.value) for v in head.non_trainable_variables],
        )
        kwargs = {"training": False} if _accepts_training(head) else {}

        def keras_apply(p: Any, e: jax.Array) -> jax.Array:
            out, _ = head.stateless_call(p[0], p[1], e[None], **kwargs)
            if isinstance(out, (list, tuple)):
                raise ValueError("the head must have a single output")
            return out[0]

        return PureHead(keras_apply, params)
    if callable(head):
        return PureHead(lambda p, e: head(e), ())
    raise TypeError(
        f"head must be None, a Keras layer/model, or a JAX function of one embedding (C,) -> "
        f"(D,); got {type(head).__name__}"
    )


def _tf_keras_head(head: Any, channels: int) -> PureHead:
    """A Keras head on the TensorFlow backend as JAX ops (tf2jax), weights as params."""
    import tensorflow as tf

    from .tf_bridge import tf2jax_convert

    kwargs = {"training": False} if _accepts_training(head) else {}
    fn = tf.function(lambda e: head(e, **kwargs), autograph=False)
    jax_fn, params = tf2jax_convert(fn, tf.TensorSpec((None, channels), tf.float32))

    def apply(p: Any, e: jax.Array) -> jax.Array:
        out, _ = jax_fn(p, e[None])  # tf2jax returns (outputs, updated state)
        if isinstance(out, (list, tuple)):
            raise ValueError("the head must have a single output")
        return out[0]

    return PureHead(apply, params)


def _accepts_training(layer: Any) -> bool:
    flag = getattr(layer, "_call_has_training_arg", None)
    if flag is not None:
        return bool(flag)
    return "training" in inspect.signature(layer.call).parameters


def bind_head(head: PureHead | None, params: Any) -> Head | None:
    """The head as a function of one embedding, its weights ``params`` bound (None: no head)."""
    if head is None:
        return None
    return lambda e: head.apply(params, e)
