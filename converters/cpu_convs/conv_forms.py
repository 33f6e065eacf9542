"""Convolutions rewritten to their fast XLA:CPU forms, in any traced JAX function.

XLA:CPU is slow on two kinds of convolution that mobile and residual CNNs are made of:

* depthwise (``feature_group_count = C``): 6-40x slower than a sum of strided slices
  (`fastfem.converters.cpu_convs.depthwise.depthwise_conv_taps`);
* 1x1 (pointwise): 1-11x slower than a matrix product
  (`fastfem.converters.cpu_convs.pointwise.pointwise_conv_dot`).

`cpu_conv_forms(fn)` returns a function with the same signature and results as ``fn`` that
traces ``fn`` to a jaxpr and evaluates it with every such ``conv_general_dilated`` replaced by
its fast form; every other operation is bound unchanged. Because it works on the jaxpr, it
reaches every front-end the same way: Keras 3 on JAX, graphs converted by tf2jax, Flax modules
and plain JAX functions. Nested ``jit`` calls and ``custom_jvp``/``custom_vjp`` functions (e.g.
``jax.nn.relu``) are inlined so that convolutions inside them are reached too; control flow
(``cond``, ``scan``, ``while``) is kept as it is, convolutions inside it untouched.

The rewritten function is meant for forward evaluation (activations). Its derivatives are
those of the rewritten operations (equal in value where the custom rule agreed with them).

`cpu_forms_wanted` decides whether to use it: environment variable ``FASTFEM_CPU_CONVS`` =
``auto`` (default: on when JAX's default backend is CPU), ``on`` or ``off``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
from jax import lax
from jax.extend import core as jex_core

from .depthwise import depthwise_conv_taps
from .pointwise import pointwise_conv_dot

ENV_VAR = "FASTFEM_CPU_CONVS"
MODES = ("auto", "on", "off")

#: Higher-order primitives whose body is inlined (param holding the ClosedJaxpr).
_INLINED = {
    "pjit": "jaxpr",
    "jit": "jaxpr",
    "closed_call": "call_jaxpr",
    "custom_jvp_call": "call_jaxpr",
    "custom_vjp_call": "call_jaxpr",
    "custom_vjp_call_jaxpr": "fun_jaxpr",
}


def cpu_forms_wanted(platform: str | None = None) -> bool:
    """Whether to use the CPU forms: ``FASTFEM_CPU_CONVS`` on / off, or auto = on CPU.

    ``platform`` defaults to ``jax.default_backend()`` (what jit compiles for unless told
    otherwise).
    """
    mode = os.environ.get(ENV_VAR, "auto").strip().lower()
    if mode not in MODES:
        raise ValueError(f"{ENV_VAR} must be one of {MODES}; got {mode!r}")
    if mode != "auto":
        return mode == "on"
    return (platform or jax.default_backend()) == "cpu"


def _channels_last(x: jax.Array, spec: Sequence[int]) -> jax.Array:
    """``x`` laid out by a conv spec (batch/feature dim, feature dim, spatial dims...) moved to
    (spec[0], spatial..., spec[1])."""
    return jax.numpy.transpose(x, (spec[0], *spec[2:], spec[1]))


def _from_channels_last(y: jax.Array, out_spec: Sequence[int]) -> jax.Array:
    """Inverse of `_channels_last` for the output spec (batch, feature, spatial...)."""
    order = (out_spec[0], *out_spec[2:], out_spec[1])  # axis of y -> axis of the result
    perm = [0] * y.ndim
    for src, dst in enumerate(order):
        perm[dst] = src
    return jax.numpy.transpose(y, perm)


def conv_in_cpu_form(
    lhs: jax.Array,
    rhs: jax.Array,
    *,
    window_strides: Sequence[int],
    padding: Sequence[tuple[int, int]],
    lhs_dilation: Sequence[int],
    rhs_dilation: Sequence[int],
    dimension_numbers: Any,
    feature_group_count: int,
    batch_group_count: int,
    precision: Any = None,
    preferred_element_type: Any = None,
    **_: Any,
) -> jax.Array | None:
    """``conv_general_dilated(lhs, rhs, ...)`` in its fast CPU form, or None to keep it.

    Rewritten: 1x1 kernels without groups (a matrix product over channels of the padded,
    strided input) and depthwise convolutions (``feature_group_count`` = input channels, one
    input channel per group). Kept: input (transposed-conv) dilation, batch groups, other
    grouped convolutions, and any kernel larger than 1x1 with groups of several channels.
    """
    form = _rewritable(
        lhs.shape,
        rhs.shape,
        lhs_dilation=lhs_dilation,
        dimension_numbers=dimension_numbers,
        feature_group_count=feature_group_count,
        batch_group_count=batch_group_count,
    )
    if form is None:
        return None
    del precision  # the products run at the default precision, as the convolution did on CPU
    lhs_spec, rhs_spec, out_spec = dimension_numbers
    x = _channels_last(lhs, lhs_spec)  # (N, *S, Cin)
    w = jax.numpy.transpose(rhs, (*rhs_spec[2:], rhs_spec[1], rhs_spec[0]))  # (*K, Cin/g, Cout)
    rank = x.ndim - 2
    k_shape, c_in = w.shape[:rank], x.shape[-1]
    pads = [tuple(int(v) for v in p) for p in padding]
    if form == "pointwise":
        if any(p != (0, 0) for p in pads):
            x = jax.numpy.pad(x, [(0, 0), *pads, (0, 0)])
        y = pointwise_conv_dot(x, w, tuple(window_strides))
    else:
        kernel = w.reshape(*k_shape, c_in, w.shape[-1] // c_in)  # out channel c*M+m <- in c
        y = depthwise_conv_taps(x, kernel, tuple(window_strides), pads, tuple(rhs_dilation))
    if preferred_element_type is not None:
        y = y.astype(preferred_element_type)
    return _from_channels_last(y, out_spec)


def _rewritable(
    lhs_shape: Sequence[int],
    rhs_shape: Sequence[int],
    *,
    lhs_dilation: Sequence[int],
    dimension_numbers: Any,
    feature_group_count: int,
    batch_group_count: int,
    **_: Any,
) -> str | None:
    """ "pointwise", "depthwise" or None: which CPU form a convolution of these shapes takes."""
    if any(d != 1 for d in lhs_dilation) or batch_group_count != 1:
        return None
    lhs_spec, rhs_spec, _ = dimension_numbers
    c_in = lhs_shape[lhs_spec[1]]
    k_shape = [rhs_shape[d] for d in rhs_spec[2:]]
    if feature_group_count == 1 and all(k == 1 for k in k_shape):
        return "pointwise"
    if feature_group_count == c_in > 1 and rhs_shape[rhs_spec[1]] == 1:
        return "depthwise"
    return None


def _eval_jaxpr(jaxpr: Any, consts: Sequence[Any], args: Sequence[Any]) -> list[Any]:
    env: dict[Any, Any] = {}

    def read(v: Any) -> Any:
        return v.val if isinstance(v, jex_core.Literal) else env[v]

    for var, val in zip(jaxpr.constvars, consts, strict=True):
        env[var] = val
    for var, val in zip(jaxpr.invars, args, strict=True):
        env[var] = val
    for eqn in jaxpr.eqns:
        outs = _eval_eqn(eqn, [read(v) for v in eqn.invars])
        for var, val in zip(eqn.outvars, outs, strict=True):
            env[var] = val
    return [read(v) for v in jaxpr.outvars]


def _eval_eqn(eqn: Any, invals: list[Any]) -> list[Any]:
    prim = eqn.primitive
    if prim is lax.conv_general_dilated_p:
        y = conv_in_cpu_form(*invals, **eqn.params)
        if y is not None:
            return [y]
    key = _INLINED.get(prim.name)
    if key is not None and key in eqn.params:
        closed = eqn.params[key]
        n_args = len(closed.jaxpr.invars)
        return _eval_jaxpr(closed.jaxpr, closed.consts, invals[:n_args])
    params = prim.get_bind_params(eqn.params)  # as jax.core.eval_jaxpr binds an equation
    with eqn.ctx.manager:
        out = prim.bind(*invals, **params)
    return list(out) if prim.multiple_results else [out]


def cpu_conv_forms(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with its 1x1 and depthwise convolutions in their fast CPU forms (module doc).

    Same signature (positional arguments, any pytrees) and output pytree. ``fn`` is traced to a
    jaxpr once per call (under an outer ``jax.jit``: once per compilation), and that jaxpr is
    evaluated; operations other than the rewritten convolutions (opaque ``call_tf`` or
    ``jax.export`` calls included) are bound as they were traced.
    """

    @functools.wraps(fn)
    def rewritten(*args: Any) -> Any:
        flat, in_tree = jax.tree.flatten(args)
        closed, out_shape = jax.make_jaxpr(
            lambda *a: fn(*jax.tree.unflatten(in_tree, a)), return_shape=True
        )(*flat)
        out = _eval_jaxpr(closed.jaxpr, closed.consts, flat)
        return jax.tree.unflatten(jax.tree.structure(out_shape), out)

    return rewritten


def cpu_conv_forms_when_wanted(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`cpu_conv_forms` (fn) when `cpu_forms_wanted` says so at trace time, else ``fn``."""
    if getattr(fn, "_fastfem_cpu_conv_forms", False):
        return fn
    fast = cpu_conv_forms(fn)

    @functools.wraps(fn)
    def chosen(*args: Any) -> Any:
        return fast(*args) if cpu_forms_wanted() else fn(*args)

    chosen._fastfem_cpu_conv_forms = True  # type: ignore[attr-defined]
    return chosen
