"""FAM's jitted step functions, one per task (pairs, embeddings, retrieval, episodes, reference
maps). Every FAM step takes params ``(model params, head params, extra)``; ``extra`` is what a
task adds per call (the gallery's embeddings, the prototypes), () otherwise."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from fastfem.converters import FeatureExtractor
from fastfem.converters.head import PureHead, bind_head
from fastfem.engine.step import StepFn
from fastfem.kernels.fam import (
    RESIZE_METHOD,
    FamOptions,
    Pooling,
    embed,
    fam_pairs,
    pair_maps,
    prototype_fam,
    retrieval_fam,
)
from fastfem.kernels.finite import input_and_activation_finite
from fastfem.kernels.resize import resize_batch


def fam_resize(maps: jax.Array, out_hw: tuple[int, int] | None) -> jax.Array:
    """FAM maps (..., h, w) -> (..., H, W), bilinear (None: unchanged)."""
    return maps if out_hw is None else resize_batch(maps, out_hw, RESIZE_METHOD)


def make_pair_step(
    extractor: FeatureExtractor,
    opts: FamOptions,
    head: PureHead | None,
    out_hw: tuple[int, int] | None,
    reference_maps: bool,
) -> StepFn:
    """``(params, {"x": queries, "reference": references}) -> {similarity, maps, finite,
    reference_finite[, reference_maps]}`` for a batch of pairs; both go through the backbone as
    one stacked batch (interleaved, so a sharded batch stays local to its device)."""

    def step(params: Any, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        model_params, head_params, _ = params
        q, r = batch["x"], batch["reference"]
        n = q.shape[0]
        both = jnp.stack([q, r], axis=1).reshape((2 * n, *q.shape[1:]))
        acts = extractor.apply(model_params, both).activations[0]
        acts = acts.reshape((n, 2, *acts.shape[1:]))
        aq, ar = acts[:, 0], acts[:, 1]
        head_fn = bind_head(head, head_params)
        out = fam_pairs(
            aq,
            ar,
            opts.pooling,
            opts.similarity,
            opts.normalize,
            head_fn,
            opts.eps,
            reference_maps,
        )
        result = {
            "similarity": out.similarity,
            "maps": fam_resize(out.query_map, out_hw),
            "finite": input_and_activation_finite(q, aq),
            "reference_finite": input_and_activation_finite(r, ar),
        }
        if reference_maps:
            result["reference_maps"] = fam_resize(out.reference_map, out_hw)
        return result

    return step


def make_embed_step(extractor: FeatureExtractor, pooling: Pooling, head: PureHead | None) -> StepFn:
    """``(params, {"x"}) -> {embedding (N, C), projection (N, D), finite}``; activations stay
    on the devices."""

    def step(params: Any, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        model_params, head_params, _ = params
        x = batch["x"]
        acts = extractor.apply(model_params, x).activations[0]
        e, z = embed(acts, pooling, bind_head(head, head_params))
        return {"embedding": e, "projection": z, "finite": input_and_activation_finite(x, acts)}

    return step


def make_retrieval_step(
    extractor: FeatureExtractor,
    opts: FamOptions,
    head: PureHead | None,
    top_k: int,
    exclude_self: bool,
    out_hw: tuple[int, int] | None,
) -> StepFn:
    """``(params, {"x": queries, "index": their gallery index}) -> {similarity, indices, maps,
    embedding, finite}``: top-k over the gallery (``extra = (embeddings, projections or
    None)``) and the query's map for every neighbour."""

    def step(params: Any, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        model_params, head_params, (gallery_e, gallery_z) = params
        q = batch["x"]
        aq = extractor.apply(model_params, q).activations[0]
        index = batch["index"] if exclude_self else None
        out = retrieval_fam(
            aq, index, gallery_e, gallery_z, top_k, opts, bind_head(head, head_params)
        )
        out["maps"] = fam_resize(out["maps"], out_hw)
        out["finite"] = input_and_activation_finite(q, aq)
        return out

    return step


def make_episode_step(
    extractor: FeatureExtractor,
    opts: FamOptions,
    head: PureHead | None,
    out_hw: tuple[int, int] | None,
) -> StepFn:
    """``(params, {"x": queries, "target": class index or -1}) -> {similarities, predictions,
    targets, maps, embedding, finite[, output]}`` against the prototypes ``extra = (prototypes,
    projections or None)`` (`fastfem.kernels.fam.prototype_fam`)."""

    def step(params: Any, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        model_params, head_params, (protos, protos_z) = params
        q = batch["x"]
        feats = extractor.apply(model_params, q)
        aq = feats.activations[0]
        out = prototype_fam(
            aq, batch["target"], protos, protos_z, opts, bind_head(head, head_params)
        )
        out["maps"] = fam_resize(out["maps"], out_hw)
        out["finite"] = input_and_activation_finite(q, aq)
        if feats.output is not None:
            out["output"] = feats.output
        return out

    return step


def make_reference_map_step(
    extractor: FeatureExtractor,
    opts: FamOptions,
    head: PureHead | None,
    out_hw: tuple[int, int] | None,
) -> StepFn:
    """``(params, {"x": images (R, ...), "eq": (R, m, C)}) -> {maps (R, m, ...)}``: each
    reference image's FAM for up to ``m`` queries (pair weights from (eq_j, pool(A_r))), one
    backbone pass per row."""

    def step(params: Any, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        model_params, head_params, _ = params
        ar = extractor.apply(model_params, batch["x"]).activations[0]
        er, _ = embed(ar, opts.pooling, None)
        eq = batch["eq"]
        er = jnp.broadcast_to(er[:, None, :], eq.shape)
        _, maps = pair_maps(ar, eq, er, opts, bind_head(head, head_params))
        return {"maps": fam_resize(maps, out_hw)}

    return step
