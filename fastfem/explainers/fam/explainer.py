"""`FAM`: Feature Activation Maps for similarity models — pairs, retrieval, few-shot episodes.

``FAM(model, conv_layer=None, pooling="gap", similarity="cosine", head=None)`` explains why two
images are similar for a model with no classifier (Liao, Gao, Zhang 2023; the formula lives in
`fastfem.kernels.fam`). Every task is one or two fused ``jax.jit`` steps, batch sharded over
every local device like `fastfem.FEM`:

* `FAM.explain` — pairs ``(q_i, r_i)``: query and reference go through the backbone in the same
  step (one stacked batch), then pooling, similarity, contributions, weights, maps, resize.
* `FAM.explain_retrieval` — queries against a gallery: the gallery is streamed once to
  embeddings ``(Ng, C)`` (activations never leave the step, so only one batch of activations
  exists at a time), then one step per query batch does similarities to the whole gallery,
  ``lax.top_k``, and the query's map for every neighbour (weights need only the neighbour's
  *embedding*). Neighbour maps, on request, are computed from a second pass that runs the
  backbone once per *distinct* neighbour, not once per pair.
* `FAM.explain_episode` — N-way K-shot: prototypes are the mean support embeddings per class;
  each query is classified by its most similar prototype and explained against its predicted
  (or given) class prototype; each support image of that class gets its map for the pair
  (query, support image).

Maps are min-max normalised to [0, 1] per sample at feature resolution, then resized
bilinearly to the input size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import numpy as np

from fastfem.converters import FeatureExtractor, load
from fastfem.converters.head import PureHead, bind_head, build_head, is_keras_layer
from fastfem.engine.cache import cached_step
from fastfem.engine.nonfinite import NonFiniteCheck
from fastfem.engine.runner import HostBatch, collect
from fastfem.engine.step import Step, StepFn
from fastfem.explainers.base import ExplainerBase, check_positive_int
from fastfem.explainers.fam.planning import (
    as_maps,
    check_same_shape,
    check_self_count,
    class_members,
    class_prototypes,
    given_classes,
    plan_reference_rows,
    rebatch,
    with_given,
    with_index,
    zip_pairs,
)
from fastfem.explainers.fam.results import EpisodeResult, RetrievalResult
from fastfem.explainers.fam.steps import (
    fam_resize,
    make_embed_step,
    make_episode_step,
    make_pair_step,
    make_reference_map_step,
    make_retrieval_step,
)
from fastfem.kernels.fam import EPS, FamOptions, Head, Normalize, Pooling, Similarity


class FAM(ExplainerBase):
    """Feature Activation Map (Liao, Gao, Zhang 2023) for similarity models, under ``jax.jit``.

    Args:
      model: a Keras 3 model, a path to a ``.keras``/``.h5`` file, or a
        `fastfem.converters.FeatureExtractor`. Its activations at ``conv_layer`` are the
        feature maps; pooled, they are the embedding the similarity is computed on.
      conv_layer: as Xplique: None -> last layer with ``filters``, int -> ``model.layers[i]``,
        str -> by name. For the bundled sample CNN the default is ``last_conv``, whose GAP is
        the model's ``embedding`` layer.
      pooling: ``"gap"`` (mean) or ``"gmp"`` (max) over the spatial axes.
      similarity: ``"cosine"``, ``"dot"`` or ``"euclidean"`` (``S = -|zq - zr|^2``).
      head: transformation after pooling (projection head): None, a Keras layer/model (either
        backend) or a JAX function of one embedding (C,) -> (D,). Contributions go through it
        by one ``jax.vjp``: exact for a linear bias-free head or a bias-free ReLU MLP
        (cosine/dot) and for any affine head (euclidean), first-order otherwise.
      normalize: channel weight normalisation ``"none"``, ``"max"``, ``"sum"``, ``"minmax"``,
        ``"softmax"``; None (default) -> ``"max"`` for cosine/dot, ``"minmax"`` for euclidean
        (whose contributions are all <= 0).
      batch_size: the most images (pairs for `explain`) per device step, a positive integer;
        rounded up to a multiple of the number of devices.
      eps: epsilon of the cosine denominator.
      devices: devices to shard the batch over; default all local devices.
    """

    explains_pairs = True

    def __init__(
        self,
        model: Any,
        conv_layer: str | int | None = None,
        pooling: Pooling = "gap",
        similarity: Similarity = "cosine",
        head: Any = None,
        normalize: Normalize | None = None,
        batch_size: int = 32,
        eps: float = EPS,
        devices: Sequence[jax.Device] | None = None,
    ):
        self.options = FamOptions.resolve(pooling, similarity, normalize, eps)
        if head is not None and not (callable(head) or is_keras_layer(head)):
            raise TypeError(
                "head must be None, a Keras layer/model, or a JAX function of one embedding "
                f"(C,) -> (D,); got {type(head).__name__}"
            )
        super().__init__(load(model, layers=conv_layer), batch_size, devices)
        _ = self.layer_name  # a single-layer method: a ValueError for several layers
        self.pooling = pooling
        self.similarity = similarity
        self.normalize = self.options.normalize
        self.head = head
        self.eps = self.options.eps
        self.last_similarities: np.ndarray = np.zeros(0, np.float32)
        self._heads: dict[int, PureHead | None] = {}

    # -- steps ------------------------------------------------------------------------------

    def pure_head(self, sample_shape: Sequence[int] | None = None) -> PureHead | None:
        """The head as a pure function and its weights (built once per channel count);
        ``sample_shape`` defaults to the model's input shape (free dimensions taken as 64)."""
        if self.head is None:  # nothing to build: no trace of the model for its channels
            return None
        if sample_shape is None:
            sample_shape = [d or 64 for d in self.extractor.input_shape]
        channels = self.feature_shape(sample_shape)[2]
        if channels not in self._heads:
            self._heads[channels] = build_head(self.head, channels)
        return self._heads[channels]

    def head_function(self, sample_shape: Sequence[int] | None = None) -> Head | None:
        """The head as a JAX function of one embedding, weights bound (None without a head)."""
        head = self.pure_head(sample_shape)
        return None if head is None else bind_head(head, head.params)

    def resize_maps(self, maps: jax.Array, out_hw: tuple[int, int]) -> jax.Array:
        """Feature-resolution FAM maps -> ``out_hw``, bilinear."""
        return fam_resize(maps, out_hw)

    def _step(
        self,
        kind: str,
        sample_shape: Sequence[int],
        key: tuple,
        build: Callable[[PureHead | None], StepFn],
        extra: Any = (),
        extractor: FeatureExtractor | None = None,
        inputs: tuple[str, ...] = ("x",),
    ) -> Step:
        """A task's `Step`: its function built once from ``build(head)`` per extractor, FAM
        options, head, ``kind``, shape and ``key`` (`fastfem.engine.cache.cached_step`);
        params ``(model, head, extra)``."""
        ex = self.extractor if extractor is None else extractor
        head = self.pure_head(sample_shape)
        settings = (self.options, None if head is None else head.apply, kind, tuple(sample_shape))
        fn = cached_step(ex.apply, (*settings, *key), lambda: build(head))
        head_params = () if head is None else head.params
        return Step(fn, (ex.params, head_params, extra), inputs)

    def _out_hw(self, sample_shape: Sequence[int], resize: bool) -> tuple[int, int] | None:
        return (int(sample_shape[0]), int(sample_shape[1])) if resize else None

    def step(
        self,
        sample_shape: Sequence[int],
        *,
        resize: bool = True,
        extractor: FeatureExtractor | None = None,
        reference_maps: bool = False,
    ) -> Step:
        """The pairs step: ``(params, {"x": queries, "reference": references}) ->
        {"maps", "similarity", "finite", "reference_finite"[, "reference_maps"]}``."""
        ex = self.extractor if extractor is None else extractor
        out_hw = self._out_hw(sample_shape, resize)
        return self._step(
            "pairs",
            sample_shape,
            (resize, reference_maps),
            lambda head: make_pair_step(ex, self.options, head, out_hw, reference_maps),
            extractor=ex,
            inputs=("x", "reference"),
        )

    def embed_step(self, sample_shape: Sequence[int]) -> Step:
        """``(params, {"x"}) -> {"embedding" (B, C), "projection" (B, D), "finite"}``."""
        return self._step(
            "embed",
            sample_shape,
            (),
            lambda head: make_embed_step(self.extractor, self.pooling, head),
        )

    def episode_step(
        self,
        sample_shape: Sequence[int],
        prototypes: np.ndarray,
        *,
        resize: bool = True,
        extractor: FeatureExtractor | None = None,
    ) -> Step:
        """Each query against class ``prototypes`` (P, C) (mean embeddings): ``(params,
        {"x", "target": class index or -1 = the most similar}) -> {"similarities" (B, P),
        "predictions", "targets", "maps", "embedding", "finite"[, "output"]}``."""
        ex = self.extractor if extractor is None else extractor
        protos = np.asarray(prototypes, np.float32)
        head_fn = self.head_function(sample_shape)
        protos_z = None if head_fn is None else np.asarray(jax.vmap(head_fn)(protos))
        out_hw = self._out_hw(sample_shape, resize)
        return self._step(
            "episode",
            sample_shape,
            (resize, protos.shape[0]),
            lambda head: make_episode_step(ex, self.options, head, out_hw),
            (protos, protos_z),
            extractor=ex,
            inputs=("x", "target"),
        )

    # -- plumbing ---------------------------------------------------------------------------

    def _checked(self, what: str, flags: Sequence[tuple[str, str]] | None = None):
        return NonFiniteCheck(self.layer_name, flags=flags or (("finite", what),), maps=())

    def _embeddings(
        self, inputs: Any, what: str, progress: bool = False
    ) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int]]:
        """Stream ``inputs`` once: pooled embeddings (N, C) and projections (N, D)."""
        check = self._checked(what)
        out, shape = self.collect_stream(
            inputs, self.embed_step, check, progress, f"embed {what}", what
        )
        return out["embedding"], out["projection"], shape

    # -- public API -------------------------------------------------------------------------

    def embed(self, images: Any, project: bool = False) -> np.ndarray:
        """Pooled embeddings (N, C) float32 of ``images`` (the head's outputs (N, D) with
        ``project=True``), computed batch by batch; activations never leave the device."""
        e, z, _ = self._embeddings(images, "images")
        return (z if project else e).astype(np.float32, copy=False)

    def explain(
        self,
        queries: Any,
        references: Any,
        reference_maps: bool = False,
        resize: bool = True,
        progress: bool = False,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """FAM of the pairs ``(queries[i], references[i])``.

        Args:
          queries, references: the same number of images each: (N, H, W, C) arrays
            (NumPy, ``tf.Tensor``, ``jax.Array``) or ``tf.data.Dataset`` s, as `fastfem.FEM`.
          reference_maps: also return the references' maps (same weights as the pair's).
          resize: True -> (N, H, W, 1) at the input size; False -> (N, h, w) at the layer's.
          progress: show a progress bar on stderr.

        Returns:
          the query maps, or ``(query_maps, reference_maps)``; float32 in [0, 1]. The pairs'
          similarities are left in `last_similarities` (N,).
        """
        qs = self.stream(queries, "queries")
        rs = self.stream(references, "references")
        if qs.count is not None and rs.count is not None and qs.count != rs.count:
            raise ValueError(
                f"queries and references pair up one to one: got {qs.count} queries and "
                f"{rs.count} references (repeat a single reference with np.repeat, or use "
                "explain_retrieval to compare every query with a gallery)"
            )
        check_same_shape(qs.sample_shape, rs.sample_shape, "references")
        step = self.step(qs.sample_shape, resize=resize, reference_maps=reference_maps)
        check = self._checked(
            "queries", (("finite", "queries"), ("reference_finite", "references"))
        )
        out = collect(
            self.run(step, zip_pairs(qs.batches, rs.batches), qs.count),
            qs.count,
            check,
            progress,
            desc="explain pairs",
        )
        self.last_similarities = out["similarity"].astype(np.float32)
        q = as_maps(out["maps"], resize)
        return (q, as_maps(out["reference_maps"], resize)) if reference_maps else q

    __call__ = explain

    def explain_retrieval(
        self,
        queries: Any,
        gallery: Any,
        top_k: int = 5,
        neighbour_maps: bool = False,
        exclude_self: bool = False,
        resize: bool = True,
        progress: bool = False,
    ) -> RetrievalResult:
        """Retrieve the ``top_k`` most similar gallery images of each query, and explain them.

        The gallery is streamed once to embeddings (one batch of activations at a time; a
        ``tf.data.Dataset`` is never materialised); similarities and top-k run on device.

        Args:
          queries: (Nq, H, W, C) images or a dataset.
          gallery: (Ng, H, W, C) images or a dataset, Ng >= top_k.
          top_k: neighbours per query.
          neighbour_maps: also compute each neighbour's map (one backbone pass per distinct
            neighbour; the gallery is streamed a second time to fetch those images).
          exclude_self: the queries ARE the gallery (query i is gallery image i): never
            return an image as its own neighbour.
          resize: maps at the input size (True) or at the layer's resolution.
          progress: progress bars on stderr.
        """
        top_k = check_positive_int(top_k, "top_k")
        gallery_e, gallery_z, g_shape = self._embeddings(gallery, "gallery", progress)
        n_gallery = gallery_e.shape[0]
        if top_k > (n_gallery - 1 if exclude_self else n_gallery):
            raise ValueError(
                f"top_k={top_k} but the gallery has only {n_gallery} images"
                + (" (one of them the query itself, exclude_self=True)" if exclude_self else "")
                + "; lower top_k or add gallery images"
            )
        qs = self.stream(queries, "queries")
        check_same_shape(qs.sample_shape, g_shape, "the gallery")
        check_self_count(exclude_self, qs.count, n_gallery)
        shape = qs.sample_shape
        out_hw = self._out_hw(shape, resize)
        # projections only with a head (else they are the embeddings: not sent twice)
        extra = (gallery_e, None if self.head is None else gallery_z)
        step = self._step(
            "retrieval",
            shape,
            (resize, top_k, exclude_self, n_gallery),
            lambda head: make_retrieval_step(
                self.extractor, self.options, head, top_k, exclude_self, out_hw
            ),
            extra,
            inputs=("x", "index"),
        )
        out = collect(
            self.run(step, with_index(qs.batches), qs.count),
            qs.count,
            self._checked("queries"),
            progress,
            desc="explain queries",
        )
        check_self_count(exclude_self, out["indices"].shape[0], n_gallery)
        indices = out["indices"].astype(np.int64)
        query_maps = as_maps(out["maps"], resize)
        ref_maps = None
        if neighbour_maps:
            pair_eq = np.repeat(out["embedding"], top_k, axis=0)
            ref = self._reference_maps(gallery, "gallery", indices.ravel(), pair_eq, resize)
            ref_maps = ref.reshape(query_maps.shape)
        return RetrievalResult(
            similarities=out["similarity"].astype(np.float32),
            indices=indices,
            maps=query_maps,
            neighbour_maps=ref_maps,
        )

    def explain_episode(
        self,
        support: Any,
        support_labels: Any,
        queries: Any,
        query_labels: Any = None,
        support_maps: bool = True,
        resize: bool = True,
    ) -> EpisodeResult:
        """Explain an N-way K-shot episode with a prototype classifier.

        Prototypes are the mean pooled support embeddings per class (the head, if any, is
        applied to the prototype). A query's prediction is its most similar prototype; its map
        explains it against the prototype of ``query_labels[i]`` when given, else of its
        prediction. With ``support_maps``, every support image of that class gets its map for
        the pair (query, support image) (weights of that pair, on the support activations).

        Args:
          support: (Ns, H, W, C) images or a dataset.
          support_labels: (Ns,) labels (ints or strings), every class at least once.
          queries: (Nq, H, W, C) images or a dataset.
          query_labels: optional (Nq,) labels from the support labels: explain against these.
          support_maps: compute the support images' maps (a second pass over the support set).
          resize: maps at the input size (True) or at the layer's resolution.
        """
        support_e, _, s_shape = self._embeddings(support, "support")
        classes, protos = class_prototypes(support_e, support_labels)
        _, label_idx = np.unique(np.asarray(support_labels), return_inverse=True)
        qs = self.stream(queries, "queries")
        check_same_shape(qs.sample_shape, s_shape, "the support set")
        given = given_classes(query_labels, classes, qs.count)
        step = self.episode_step(qs.sample_shape, protos, resize=resize)
        cat = collect(
            self.run(step, with_given(qs.batches, given), qs.count),
            qs.count,
            self._checked("queries"),
        )
        seen = cat["targets"].shape[0]
        if given is not None and seen != given.shape[0]:
            raise ValueError(
                f"query_labels must be one label per query: {seen} queries, {given.shape[0]} labels"
            )
        targets = cat["targets"].astype(np.int64)
        support_idx = class_members(label_idx, classes.size)[targets]  # (Nq, K)
        s_maps = None
        if support_maps:
            valid = support_idx >= 0
            q_of_pair = np.broadcast_to(np.arange(seen)[:, None], support_idx.shape)[valid]
            ref = self._reference_maps(
                support, "support", support_idx[valid], cat["embedding"][q_of_pair], resize
            )
            s_maps = np.full((*support_idx.shape, *ref.shape[1:]), np.nan, np.float32)
            s_maps[valid] = ref
        return EpisodeResult(
            classes=classes,
            prototypes=protos,
            similarities=cat["similarities"].astype(np.float32),
            predictions=classes[cat["predictions"]],
            targets=classes[targets],
            query_maps=as_maps(cat["maps"], resize),
            support_indices=support_idx,
            support_maps=s_maps,
        )

    # -- reference maps ---------------------------------------------------------------------

    def _reference_maps(
        self, source: Any, what: str, pair_ref: np.ndarray, pair_eq: np.ndarray, resize: bool
    ) -> np.ndarray:
        """Maps of the reference images ``source[pair_ref[p]]`` for the pairs ``p`` with query
        embeddings ``pair_eq[p]``: (P, H, W, 1) or (P, h, w). The backbone runs once per row of
        `plan_reference_rows` (once per distinct reference unless it is a hub)."""
        plan = plan_reference_rows(pair_ref)
        stream = self.stream(source, what)
        shape = stream.sample_shape
        out_hw = self._out_hw(shape, resize)
        step = self._step(
            "reference",
            shape,
            (resize, plan.pairs.shape[1]),
            lambda head: make_reference_map_step(self.extractor, self.options, head, out_hw),
            inputs=("x", "eq"),
        )
        eq_padded = np.concatenate([pair_eq.astype(np.float32), np.zeros_like(pair_eq[:1])])

        def rows() -> Iterator[HostBatch]:
            offset, r0 = 0, 0
            for batch in stream.batches:
                end = offset + batch.shape[0]
                r1 = int(np.searchsorted(plan.ref, end))
                if r1 > r0:  # -1 slots read the zero row
                    yield {"x": batch[plan.ref[r0:r1] - offset], "eq": eq_padded[plan.pairs[r0:r1]]}
                r0, offset = r1, end
                if r0 == plan.ref.size:
                    return

        out = None
        row = 0
        batches = rebatch(rows(), self.device_batch())
        for res in self.run(step, batches, plan.ref.size):
            maps = res["maps"]  # (R, m, ...)
            if out is None:
                out = np.empty((pair_ref.size, *maps.shape[2:]), np.float32)
            slots = plan.pairs[row : row + maps.shape[0]]
            valid = slots >= 0
            out[slots[valid]] = maps[valid]
            row += maps.shape[0]
        if row != plan.ref.size:  # pragma: no cover - the gallery changed between passes
            raise ValueError(f"{what}: fewer images on the second pass than on the first")
        return as_maps(out, resize)
