"""FAM — Feature Activation Map: the formula, for one (query, reference) pair.

This module is the one place the FAM formula (Liao, Gao, Zhang 2023) lives. Everything here is
a pure function of ONE pair: the query's activations ``Aq`` and the reference's ``Ar``, each
``(h, w, C)`` channels last, or their pooled embeddings ``eq``, ``er`` of shape ``(C,)``.
Batching (`vmap`), compilation (`jit`) and sharding are applied once, outside (see
`fastfem.explainers.fam`); `fam_pairs` / `fam_map` are the vmapped conveniences for JAX users.

1. Embeddings (``pooling=``)::

       gap:  e_k = mean_{i,j} A_ijk          gmp:  e_k = max_{i,j} A_ijk

2. Optional transformation head ``g`` (a projection after pooling): ``zq = g(eq)``,
   ``zr = g(er)``; without a head ``z = e``.

3. Similarity ``S`` and channel contributions ``c`` (length C) that add up to ``S``
   (``similarity=``; ``eps`` = `EPS`)::

       dot        S = zq . zr                     c = eq * J_g(eq)^T zr
       cosine     S = zq . zr / (|zq||zr| + eps)  c = eq * J_g(eq)^T zr / (|zq||zr| + eps)
       euclidean  S = -|zq - zr|^2                c = (eq - er) * J_g(eq)^T (-(zq - zr))

   ``J_g(eq)^T v`` is one `jax.vjp` of the head at the query embedding. Without a head
   (``J = I``) these are the exact per-channel terms ``eq_k er_k``, ``eq_k er_k / (...)`` and
   ``-(eq_k - er_k)^2``. With a head:

   * dot / cosine: ``sum_k c_k = (J eq) . zr / (...)``, which equals ``S`` exactly when
     ``J_g(e) e = g(e)`` (Euler's identity), i.e. when ``g`` is positively 1-homogeneous: a
     linear map without bias, or a bias-free MLP with ReLU (or leaky ReLU) activations. For
     any other head (biases, tanh, normalisation layers) it is a first-order decomposition.
   * euclidean: ``sum_k c_k = -(J (eq - er)) . (zq - zr)``, which equals ``S`` exactly when
     ``g`` is affine (a linear layer, bias allowed, since ``zq - zr = J (eq - er)``); it is the
     first-order Taylor decomposition otherwise (the Jacobian taken at the query).

4. Weights ``w = normalize(c)`` (``normalize=``)::

       none     w = c
       max      w = c / max_k |c_k|                       (0 where c == 0)
       sum      w = c / sum_k |c_k|                       (0 where c == 0)
       minmax   w = (c - min c) / (max c - min c)         (all 1 where c is constant)
       softmax  w = exp(c - max c) / sum exp(c - max c)

   Euclidean contributions are all <= 0: with ``none``/``max``/``sum`` the weights are <= 0 and
   the ReLU map of non-negative (post-ReLU) activations is all zero. Use ``minmax`` (the
   channels the two images agree on most get weight 1) or ``softmax`` with ``euclidean``.
   ``normalize=None`` (the default everywhere but `normalize_weights`) means
   `default_normalize`: ``minmax`` for ``euclidean``, ``max`` (the method's default) otherwise.

5. Map: ``L = minmax(ReLU(sum_k w_k Aq_k))`` per sample at feature resolution, with
   ``minmax(m) = (m - min m) / (max m - min m)`` and 0 for a constant map, "constant" meaning
   ``max m - min m <= 1e-6 max|m|`` (`fastfem.kernels.fusion.unit_normalize`). The guard is
   relative, not the usual absolute ``+ eps`` in the denominator, because the latter breaks
   cosine FAM's invariance to the activations' scale when a map's range is small. The
   reference's map uses the same weights on ``Ar``. The resize to the input size (bilinear,
   `fastfem.kernels.resize`) is left to the caller: it is linear, done once per map.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp

from fastfem.kernels.fusion import unit_normalize

Pooling = Literal["gap", "gmp"]
Similarity = Literal["cosine", "dot", "euclidean"]
Normalize = Literal["none", "max", "sum", "minmax", "softmax"]
#: A transformation head: ONE pooled embedding (C,) -> a vector (D,), a pure JAX function.
Head = Callable[[jax.Array], jax.Array]

POOLINGS: tuple[str, ...] = ("gap", "gmp")
SIMILARITIES: tuple[str, ...] = ("cosine", "dot", "euclidean")
NORMALIZATIONS: tuple[str, ...] = ("none", "max", "sum", "minmax", "softmax")
#: How FAM maps are resized to the input size (step 5 of the module docstring).
RESIZE_METHOD = "bilinear"

#: Epsilon of the cosine denominator ``|zq||zr| + eps``.
EPS = 1e-8

_HI = jax.lax.Precision.HIGHEST


class FamPair(NamedTuple):
    """FAM of one (query, reference) pair, or a batch of them (leading axes).

    similarity: S, shape ().  contributions: c, (C,).  weights: w = normalize(c), (C,).
    query_map: minmax(ReLU(sum_k w_k Aq_k)), (h, w).  reference_map: the same weights on Ar,
    (h, w), or None when not requested.
    """

    similarity: jax.Array
    contributions: jax.Array
    weights: jax.Array
    query_map: jax.Array
    reference_map: jax.Array | None = None


def _check(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; expected one of {allowed}")


def check_options(
    pooling: str | None = None, similarity: str | None = None, normalize: str | None = None
) -> None:
    """Raise a ValueError naming the allowed values for any unknown option given."""
    if pooling is not None:
        _check("pooling", pooling, POOLINGS)
    if similarity is not None:
        _check("similarity", similarity, SIMILARITIES)
    if normalize is not None:
        _check("normalize", normalize, NORMALIZATIONS)


def default_normalize(similarity: Similarity) -> Normalize:
    """``minmax`` for ``euclidean`` (its contributions are <= 0), ``max`` otherwise."""
    check_options(similarity=similarity)
    return "minmax" if similarity == "euclidean" else "max"


def resolve_normalize(normalize: str | None, similarity: str) -> Normalize:
    """``normalize``, or `default_normalize` of ``similarity`` when it is None (validated)."""
    if normalize is None:
        return default_normalize(similarity)  # type: ignore[arg-type]
    check_options(normalize=normalize)
    return normalize  # type: ignore[return-value]


def pool(activations: jax.Array, pooling: Pooling = "gap") -> jax.Array:
    """Embedding of ONE sample: (h, w, C) -> (C,) float32; ``gap`` mean or ``gmp`` max."""
    check_options(pooling=pooling)
    if activations.ndim != 3:
        raise ValueError(
            f"pool expects one sample's activations (h, w, C); got shape {activations.shape}"
        )
    a = activations.astype(jnp.float32)
    return jnp.mean(a, axis=(0, 1)) if pooling == "gap" else jnp.max(a, axis=(0, 1))


def similarity_score(
    zq: jax.Array, zr: jax.Array, similarity: Similarity = "cosine", eps: float = EPS
) -> jax.Array:
    """``S(zq, zr)`` of two vectors (D,): dot, cosine (``+ eps`` in the denominator) or
    ``-|zq - zr|^2``."""
    check_options(similarity=similarity)
    zq, zr = zq.astype(jnp.float32), zr.astype(jnp.float32)
    if similarity == "euclidean":
        return -jnp.sum(jnp.square(zq - zr))
    dot = jnp.dot(zq, zr, precision=_HI)
    if similarity == "dot":
        return dot
    return dot / (jnp.linalg.norm(zq) * jnp.linalg.norm(zr) + eps)


def similarity_matrix(
    zq: jax.Array, zg: jax.Array, similarity: Similarity = "cosine", eps: float = EPS
) -> jax.Array:
    """All similarities of queries (B, D) to a gallery (N, D): (B, N) float32, one matmul.

    Euclidean uses ``-(|zq|^2 - 2 zq.zg + |zg|^2)`` (clamped to <= 0), which is what makes a
    large gallery cheap; it can differ from `similarity_score` by float32 rounding.
    """
    check_options(similarity=similarity)
    zq, zg = zq.astype(jnp.float32), zg.astype(jnp.float32)
    dots = jnp.matmul(zq, zg.T, precision=_HI)
    if similarity == "dot":
        return dots
    if similarity == "cosine":
        nq, ng = jnp.linalg.norm(zq, axis=-1), jnp.linalg.norm(zg, axis=-1)
        return dots / (nq[:, None] * ng[None, :] + eps)
    sq = jnp.sum(jnp.square(zq), axis=-1)[:, None] + jnp.sum(jnp.square(zg), axis=-1)[None, :]
    return -jnp.maximum(sq - 2.0 * dots, 0.0)


def _check_head_output(z: jax.Array) -> None:
    if z.ndim != 1:
        raise ValueError(
            "the head must map ONE pooled embedding of shape (C,) to a vector of shape (D,); "
            f"it returned shape {z.shape}"
        )


def _contributions_one(
    eq: jax.Array, er: jax.Array, similarity: str, head: Head | None, eps: float
) -> tuple[jax.Array, jax.Array]:
    if head is None:
        s = similarity_score(eq, er, similarity, eps)
        if similarity == "euclidean":
            return s, -jnp.square(eq - er)
        c = eq * er
        if similarity == "cosine":
            c = c / (jnp.linalg.norm(eq) * jnp.linalg.norm(er) + eps)
        return s, c

    zq, vjp = jax.vjp(lambda e: jnp.asarray(head(e), jnp.float32), eq)
    zr = jnp.asarray(head(er), jnp.float32)
    _check_head_output(zq)
    s = similarity_score(zq, zr, similarity, eps)
    if similarity == "euclidean":
        (grad,) = vjp(zr - zq)  # J^T (-(zq - zr))
        return s, (eq - er) * grad
    (grad,) = vjp(zr)  # J^T zr
    c = eq * grad
    if similarity == "cosine":
        c = c / (jnp.linalg.norm(zq) * jnp.linalg.norm(zr) + eps)
    return s, c


def fam_contributions(
    eq: jax.Array,
    er: jax.Array,
    similarity: Similarity = "cosine",
    head: Head | None = None,
    eps: float = EPS,
) -> tuple[jax.Array, jax.Array]:
    """Similarity ``S`` and channel contributions ``c`` of embedding pairs: (..., C) x2 ->
    ``S`` (...) and ``c`` (..., C).

    See the module docstring (step 3) for the formulas and when ``sum(c) == S`` is exact.
    ``S`` is computed from its own formula, not as ``sum(c)``. ``head`` is a JAX function of
    ONE embedding (C,) -> (D,), differentiated by one `jax.vjp` at ``eq``; leading (pair) axes
    are vmapped.
    """
    check_options(similarity=similarity)
    eq, er = jnp.asarray(eq, jnp.float32), jnp.asarray(er, jnp.float32)
    if eq.ndim < 1 or eq.shape != er.shape:
        raise ValueError(
            "fam_contributions expects query and reference embeddings of the same shape "
            f"(..., C); got {eq.shape} and {er.shape}"
        )
    fn = functools.partial(_contributions_one, similarity=similarity, head=head, eps=eps)
    for _ in range(eq.ndim - 1):
        fn = jax.vmap(fn)
    return fn(eq, er)


def normalize_weights(c: jax.Array, mode: Normalize = "max") -> jax.Array:
    """Channel weights ``w = normalize(c)`` over the last axis: (..., C) float32.

    Formulas in the module docstring. Guarded, never NaN: ``max``/``sum`` of an all-zero c
    give 0, ``minmax`` of a constant c gives 1 everywhere.
    """
    check_options(normalize=mode)
    c = jnp.asarray(c, jnp.float32)
    if mode == "none":
        return c
    if mode in ("max", "sum"):
        a = jnp.abs(c)
        d = jnp.max(a, -1, keepdims=True) if mode == "max" else jnp.sum(a, -1, keepdims=True)
        return c / jnp.where(d > 0, d, 1.0)
    if mode == "minmax":
        lo, hi = jnp.min(c, -1, keepdims=True), jnp.max(c, -1, keepdims=True)
        span = hi - lo
        return jnp.where(span > 0, (c - lo) / jnp.where(span > 0, span, 1.0), 1.0)
    return jax.nn.softmax(c, axis=-1)


def fam_sample_map(activations: jax.Array, weights: jax.Array) -> jax.Array:
    """``minmax(ReLU(sum_k w_k A_k))`` for ONE sample: (h, w, C), (C,) -> (h, w) in [0, 1]
    (a constant map -> 0; see `fastfem.kernels.fusion.unit_normalize`)."""
    if activations.ndim != 3 or weights.shape != activations.shape[-1:]:
        raise ValueError(
            "fam_sample_map expects activations (h, w, C) and weights (C,); got "
            f"{activations.shape} and {weights.shape}"
        )
    a = activations.astype(jnp.float32)
    cam = jnp.einsum("hwc,c->hw", a, weights.astype(jnp.float32), precision=_HI)
    return unit_normalize(jax.nn.relu(cam))


def fam_weights(
    eq: jax.Array,
    er: jax.Array,
    similarity: Similarity = "cosine",
    normalize: Normalize | None = None,
    head: Head | None = None,
    eps: float = EPS,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``(S, c, w)`` of embedding pairs (..., C): `fam_contributions`, then `normalize_weights`
    (``normalize=None``: `default_normalize` of the similarity)."""
    s, c = fam_contributions(eq, er, similarity, head, eps)
    return s, c, normalize_weights(c, resolve_normalize(normalize, similarity))


def fam_pair(
    aq: jax.Array,
    ar: jax.Array,
    pooling: Pooling = "gap",
    similarity: Similarity = "cosine",
    normalize: Normalize | None = None,
    head: Head | None = None,
    eps: float = EPS,
    reference_map: bool = False,
) -> FamPair:
    """FAM of ONE pair of activations (h, w, C) (the two may differ in h, w, not in C)."""
    check_options(pooling, similarity, normalize)
    normalize = resolve_normalize(normalize, similarity)
    eq, er = pool(aq, pooling), pool(ar, pooling)
    s, c, w = fam_weights(eq, er, similarity, normalize, head, eps)
    return FamPair(
        similarity=s,
        contributions=c,
        weights=w,
        query_map=fam_sample_map(aq, w),
        reference_map=fam_sample_map(ar, w) if reference_map else None,
    )


def fam_pairs(
    q_acts: jax.Array,
    r_acts: jax.Array,
    pooling: Pooling = "gap",
    similarity: Similarity = "cosine",
    normalize: Normalize | None = None,
    head: Head | None = None,
    eps: float = EPS,
    reference_map: bool = False,
) -> FamPair:
    """`fam_pair` vmapped over every leading axis: (..., h, w, C) x2 -> `FamPair` of (...)."""
    check_options(pooling, similarity, normalize)
    if q_acts.ndim < 3 or q_acts.shape[:-3] != r_acts.shape[:-3]:
        raise ValueError(
            "fam_pairs expects query and reference activations (..., h, w, C) with the same "
            f"leading (pair) axes; got {q_acts.shape} and {r_acts.shape}"
        )
    fn = functools.partial(
        fam_pair,
        pooling=pooling,
        similarity=similarity,
        normalize=normalize,
        head=head,
        eps=eps,
        reference_map=reference_map,
    )
    for _ in range(q_acts.ndim - 3):
        fn = jax.vmap(fn)
    return fn(q_acts, r_acts)


def fam_map(
    q_acts: jax.Array,
    r_acts: jax.Array,
    pooling: Pooling = "gap",
    similarity: Similarity = "cosine",
    normalize: Normalize | None = None,
    head: Head | None = None,
    eps: float = EPS,
    reference_map: bool = False,
) -> jax.Array | tuple[jax.Array, jax.Array]:
    """FAM maps at feature resolution for a batch of pairs: (..., h, w, C) x2 -> (..., h, w).

    Returns the query maps, or ``(query_maps, reference_maps)`` with ``reference_map=True``.
    Jittable (options static) and vmappable; see `fam_pairs` for similarities and weights.
    """
    out = fam_pairs(q_acts, r_acts, pooling, similarity, normalize, head, eps, reference_map)
    return (out.query_map, out.reference_map) if reference_map else out.query_map


# ----------------------------------------------------------------------------- batched tasks


@dataclasses.dataclass(frozen=True)
class FamOptions:
    """FAM's static options (hashable): ``pooling``, ``similarity``, ``normalize`` (resolved,
    never None) and the cosine ``eps``."""

    pooling: Pooling = "gap"
    similarity: Similarity = "cosine"
    normalize: Normalize = "max"
    eps: float = EPS

    @classmethod
    def resolve(
        cls,
        pooling: str = "gap",
        similarity: str = "cosine",
        normalize: str | None = None,
        eps: float = EPS,
    ) -> FamOptions:
        """Validated options; ``normalize=None`` -> `default_normalize` of the similarity."""
        check_options(pooling, similarity, normalize)
        return cls(pooling, similarity, resolve_normalize(normalize, similarity), float(eps))  # type: ignore[arg-type]


def embed(
    acts: jax.Array, pooling: Pooling = "gap", head: Head | None = None
) -> tuple[jax.Array, jax.Array]:
    """Pooled embeddings (N, C) of activations (N, h, w, C) and their head projections (N, D)
    (the embeddings themselves without a head)."""
    e = jax.vmap(lambda a: pool(a, pooling))(acts)
    return e, (e if head is None else jax.vmap(head)(e))


def maps_per_pair(acts: jax.Array, weights: jax.Array) -> jax.Array:
    """`fam_sample_map` of each sample's activations (N, h, w, C) with each of its k weight
    vectors (N, k, C) -> (N, k, h, w)."""
    return jax.vmap(jax.vmap(fam_sample_map, in_axes=(None, 0)))(acts, weights)


def prototype_fam(
    aq: jax.Array,
    given: jax.Array,
    protos: jax.Array,
    protos_z: jax.Array | None,
    opts: FamOptions,
    head: Head | None = None,
) -> dict[str, jax.Array]:
    """FAM of each query against a class prototype, at feature resolution.

    ``aq`` (B, h, w, C) query activations; ``protos`` (P, C) prototype embeddings (``protos_z``
    their head projections, None without a head); ``given`` (B,) the prototype to explain
    against, or -1 for the most similar one. With ``S_bp = S(z_b, protos_z[p])``::

        predictions = argmax_p S_bp
        targets     = given if given >= 0 else predictions
        maps        = fam_sample_map(aq, normalize(c(eq, protos[targets])))

    Returns ``{similarities (B, P), predictions, targets, maps (B, h, w), embedding (B, C)}``.
    """
    protos_z = protos if protos_z is None else protos_z
    eq, zq = embed(aq, opts.pooling, head)
    sims = similarity_matrix(zq, protos_z, opts.similarity, opts.eps)  # (B, P)
    pred = jnp.argmax(sims, axis=1).astype(jnp.int32)
    target = jnp.where(given >= 0, given, pred)
    _, c = fam_contributions(eq, protos[target], opts.similarity, head, opts.eps)
    w = normalize_weights(c, opts.normalize)
    return {
        "similarities": sims,
        "predictions": pred,
        "targets": target,
        "maps": jax.vmap(fam_sample_map)(aq, w),
        "embedding": eq,
    }


def pair_maps(
    acts: jax.Array, eq: jax.Array, er: jax.Array, opts: FamOptions, head: Head | None = None
) -> tuple[jax.Array, jax.Array]:
    """FAM of pairs on one side's activations: ``acts`` (B, h, w, C) and k pairs per sample,
    query embeddings ``eq`` and reference embeddings ``er`` (B, k, C) ->
    ``(S(eq, er) (B, k), maps (B, k, h, w))`` with weights ``normalize(c(eq, er))``."""
    s, c = fam_contributions(eq, er, opts.similarity, head, opts.eps)
    return s, maps_per_pair(acts, normalize_weights(c, opts.normalize))


def retrieval_fam(
    aq: jax.Array,
    index: jax.Array | None,
    gallery_e: jax.Array,
    gallery_z: jax.Array | None,
    top_k: int,
    opts: FamOptions,
    head: Head | None = None,
) -> dict[str, jax.Array]:
    """Top-k retrieval of each query in a gallery, and the query's FAM for each neighbour.

    ``aq`` (B, h, w, C) query activations; ``gallery_e`` (Ng, C) gallery embeddings
    (``gallery_z`` their head projections, None without a head); ``index`` (B,) each query's
    own gallery index, never returned as its neighbour (None: the queries are not the
    gallery). With ``S_bg = S(z_b, gallery_z[g])``: ``indices = top_k_g S_bg`` and each map is
    ``fam_sample_map(aq, normalize(c(eq, gallery_e[indices])))``.

    Returns ``{similarity (B, k), indices (B, k), maps (B, k, h, w), embedding (B, C)}``.
    """
    gallery_z = gallery_e if gallery_z is None else gallery_z
    eq, zq = embed(aq, opts.pooling, head)
    sims = similarity_matrix(zq, gallery_z, opts.similarity, opts.eps)  # (B, Ng)
    if index is not None:
        same = jnp.arange(sims.shape[1])[None, :] == index[:, None]
        sims = jnp.where(same, -jnp.inf, sims)
    _, idx = jax.lax.top_k(sims, top_k)  # (B, k)
    er = gallery_e[idx]  # (B, k, C)
    s, maps = pair_maps(aq, jnp.broadcast_to(eq[:, None, :], er.shape), er, opts, head)
    return {"similarity": s, "indices": idx, "maps": maps, "embedding": eq}
