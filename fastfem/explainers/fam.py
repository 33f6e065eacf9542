"""`FAM`: Feature Activation Maps for similarity models — pairs, retrieval, few-shot episodes.

``FAM(model, conv_layer=None, pooling="gap", similarity="cosine", head=None)`` explains why two
images are similar for a model with no classifier (DESIGN.md §4; the formula lives in
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
bilinearly to the input size (DESIGN.md §4.5).
"""

from __future__ import annotations

import dataclasses
import inspect
import itertools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..batch_runner import BatchRunner
from ..converters import FeatureExtractor, load
from ..converters.keras import import_keras
from ..inputs import image_stream
from ..kernels.fam import (
    EPS,
    RESIZE_METHOD,
    Head,
    Normalize,
    Pooling,
    Similarity,
    check_options,
    fam_contributions,
    fam_pairs,
    fam_sample_map,
    normalize_weights,
    pool,
    resolve_normalize,
    similarity_matrix,
)
from ..kernels.finite import input_and_activation_finite, raise_on_nonfinite
from ..kernels.resize import resize_maps
from ..parallel import data_mesh, replicated
from ..progress import progress_bar

#: Most (query, reference) pairs explained per reference image in one row of the reference-map
#: step; a reference shared by more pairs (a "hub") gets several rows.
MAX_PAIRS_PER_ROW = 8


# ----------------------------------------------------------------------------------- results


@dataclasses.dataclass(frozen=True)
class RetrievalResult:
    """What `FAM.explain_retrieval` returns (NumPy arrays; ``k`` = top_k, best first).

    Attributes:
      similarities: (Nq, k) float32, ``S(query, neighbour)`` from the pair formula.
      indices: (Nq, k) int64, the neighbours' indices in the gallery.
      maps: the query's FAM for each neighbour, (Nq, k, H, W, 1) float32 ((Nq, k, h, w) with
        ``resize=False``).
      neighbour_maps: the neighbours' FAMs (same weights as the query's map of that pair),
        shaped like ``maps``; None unless requested.
    """

    similarities: np.ndarray
    indices: np.ndarray
    maps: np.ndarray
    neighbour_maps: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class EpisodeResult:
    """What `FAM.explain_episode` returns (NumPy arrays).

    Attributes:
      classes: (n_way,) the distinct support labels, sorted; class ``j`` below is ``classes[j]``.
      prototypes: (n_way, C) float32, the mean pooled support embedding of each class.
      similarities: (Nq, n_way) float32, ``S(query, prototype)`` (the head applied to both when
        there is one).
      predictions: (Nq,) the predicted labels (values from ``classes``): the most similar
        prototype.
      targets: (Nq,) the labels the maps explain: ``query_labels`` when given, else
        ``predictions``.
      query_maps: (Nq, H, W, 1) float32, FAM of each query against its target prototype.
      support_indices: (Nq, K) int64, indices into the support set of the members of each
        query's target class, -1 where that class has fewer than K members.
      support_maps: (Nq, K, H, W, 1) float32, FAM of each such support image for the pair
        (query, support image), NaN where ``support_indices`` is -1; None unless requested.
    """

    classes: np.ndarray
    prototypes: np.ndarray
    similarities: np.ndarray
    predictions: np.ndarray
    targets: np.ndarray
    query_maps: np.ndarray
    support_indices: np.ndarray
    support_maps: np.ndarray | None = None


# -------------------------------------------------------------------------------------- head


@dataclasses.dataclass(frozen=True)
class _Head:
    """A head as a pure ``apply(params, e) -> z`` of ONE embedding (C,) -> (D,)."""

    apply: Callable[[Any, jax.Array], jax.Array]
    params: Any


def _is_keras_layer(obj: Any) -> bool:
    return any(
        c.__module__.startswith("keras") and c.__name__ == "Layer" for c in type(obj).__mro__
    )


def build_head(head: Any, channels: int) -> _Head | None:
    """Turn ``head`` into a pure function of one pooled embedding (C,) -> (D,).

    Accepted: None; a Keras 3 layer or model on the JAX backend (built for ``(None, C)`` if not
    yet built; run by ``stateless_call``, its weights passed as arguments of the jitted step);
    or a JAX-traceable callable of one embedding (C,) -> (D,).
    """
    if head is None:
        return None
    if _is_keras_layer(head):
        keras = import_keras()
        if keras.backend.backend() != "jax":
            raise ValueError(
                "a Keras head runs under jax.jit only with Keras's JAX backend; this process "
                f"runs {keras.backend.backend()!r}. Pass the head as a JAX function of one "
                "embedding (C,) -> (D,) instead (e.g. lambda e: e @ W)"
            )
        if not head.built:
            head.build((None, channels))
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

        return _Head(keras_apply, params)
    if callable(head):
        return _Head(lambda p, e: head(e), ())
    raise TypeError(
        f"head must be None, a Keras layer/model, or a JAX function of one embedding (C,) -> "
        f"(D,); got {type(head).__name__}"
    )


def _accepts_training(layer: Any) -> bool:
    flag = getattr(layer, "_call_has_training_arg", None)
    if flag is not None:
        return bool(flag)
    return "training" in inspect.signature(layer.call).parameters


def _bind(head: _Head | None, params: Any) -> Head | None:
    if head is None:
        return None
    return lambda e: head.apply(params, e)


# ------------------------------------------------------------------------------------- steps


@dataclasses.dataclass(frozen=True)
class _Options:
    pooling: Pooling
    similarity: Similarity
    normalize: Normalize
    eps: float


def _resized(maps: jax.Array, out_hw: tuple[int, int] | None) -> jax.Array:
    return maps if out_hw is None else resize_maps(maps, out_hw, RESIZE_METHOD)


def _embed(acts: jax.Array, pooling: Pooling, head: Head | None) -> tuple[jax.Array, jax.Array]:
    """Pooled embeddings (N, C) and their head projections (N, D) (= embeddings without head)."""
    e = jax.vmap(lambda a: pool(a, pooling))(acts)
    return e, (e if head is None else jax.vmap(head)(e))


def _maps_per_pair(acts: jax.Array, weights: jax.Array) -> jax.Array:
    """(N, h, w, C) activations, (N, k, C) weights -> (N, k, h, w) maps."""
    return jax.vmap(jax.vmap(fam_sample_map, in_axes=(None, 0)))(acts, weights)


def make_pair_step(
    extractor: FeatureExtractor,
    opts: _Options,
    head: _Head | None,
    out_hw: tuple[int, int] | None,
    reference_maps: bool,
):
    """``(params, (q, r)) -> dict`` for a batch of pairs; both go through the backbone as one
    stacked batch (interleaved, so a sharded batch stays local to its device)."""

    def step(params: Any, x: tuple[jax.Array, jax.Array]) -> dict[str, jax.Array]:
        ext_params, head_params = params
        q, r = x
        n = q.shape[0]
        both = jnp.stack([q, r], axis=1).reshape((2 * n, *q.shape[1:]))
        acts = extractor.apply(ext_params, both).activations[0]
        acts = acts.reshape((n, 2, *acts.shape[1:]))
        aq, ar = acts[:, 0], acts[:, 1]
        out = fam_pairs(
            aq,
            ar,
            opts.pooling,
            opts.similarity,
            opts.normalize,
            _bind(head, head_params),
            opts.eps,
            reference_maps,
        )
        result = {
            "similarity": out.similarity,
            "query_maps": _resized(out.query_map, out_hw),
            "finite": jnp.concatenate(
                [input_and_activation_finite(q, aq), input_and_activation_finite(r, ar)], axis=1
            ),
        }
        if reference_maps:
            result["reference_maps"] = _resized(out.reference_map, out_hw)
        return result

    return step


def make_embed_step(extractor: FeatureExtractor, pooling: Pooling, head: _Head | None):
    """``(params, x) -> {embedding (N, C), projection (N, D), finite}``; activations stay inside."""

    def step(params: Any, x: jax.Array) -> dict[str, jax.Array]:
        ext_params, head_params = params
        acts = extractor.apply(ext_params, x).activations[0]
        e, z = _embed(acts, pooling, _bind(head, head_params))
        return {"embedding": e, "projection": z, "finite": input_and_activation_finite(x, acts)}

    return step


def make_retrieval_step(
    extractor: FeatureExtractor,
    opts: _Options,
    head: _Head | None,
    top_k: int,
    exclude_self: bool,
    out_hw: tuple[int, int] | None,
):
    """``(params with the gallery, (q, q_index)) -> top-k and the query's map per neighbour``."""

    def step(params: Any, x: tuple[jax.Array, jax.Array]) -> dict[str, jax.Array]:
        (ext_params, head_params), (gallery_e, gallery_z) = params
        gallery_z = gallery_e if gallery_z is None else gallery_z
        q, q_index = x
        head_fn = _bind(head, head_params)
        aq = extractor.apply(ext_params, q).activations[0]
        eq, zq = _embed(aq, opts.pooling, head_fn)
        sims = similarity_matrix(zq, gallery_z, opts.similarity, opts.eps)  # (B, Ng)
        if exclude_self:
            same = jnp.arange(sims.shape[1])[None, :] == q_index[:, None]
            sims = jnp.where(same, -jnp.inf, sims)
        _, idx = jax.lax.top_k(sims, top_k)  # (B, k)
        er = gallery_e[idx]  # (B, k, C)
        eqk = jnp.broadcast_to(eq[:, None, :], er.shape)
        s, c = fam_contributions(eqk, er, opts.similarity, head_fn, opts.eps)
        w = normalize_weights(c, opts.normalize)
        return {
            "similarity": s,
            "indices": idx,
            "maps": _resized(_maps_per_pair(aq, w), out_hw),
            "embedding": eq,
            "finite": input_and_activation_finite(q, aq),
        }

    return step


def make_episode_step(
    extractor: FeatureExtractor, opts: _Options, head: _Head | None, out_hw: tuple[int, int] | None
):
    """``(params with the prototypes, (q, given)) -> class similarities, prediction, map``;
    ``given`` is the target class index, or -1 for "the predicted class"."""

    def step(params: Any, x: tuple[jax.Array, jax.Array]) -> dict[str, jax.Array]:
        (ext_params, head_params), (protos, protos_z) = params
        q, given = x
        aq = extractor.apply(ext_params, q).activations[0]
        out = prototype_fam(aq, given, protos, protos_z, opts, _bind(head, head_params))
        out["maps"] = _resized(out["maps"], out_hw)
        out["finite"] = input_and_activation_finite(q, aq)
        return out

    return step


def prototype_fam(
    aq: jax.Array,
    given: jax.Array,
    protos: jax.Array,
    protos_z: jax.Array | None,
    opts: _Options,
    head_fn: Head | None,
) -> dict[str, jax.Array]:
    """FAM of each query against a class prototype, at feature resolution.

    ``aq`` (B, h, w, C) query activations; ``protos`` (P, C) prototype embeddings (``protos_z``
    their head projections, None without a head); ``given`` (B,) the prototype to explain
    against, or -1 for the most similar one. With ``S_bp = S(z_b, protos_z[p])``:
    ``predictions = argmax_p S_bp``, ``targets = given if given >= 0 else predictions``, and
    ``maps = fam_sample_map(aq, normalize(c(eq, protos[targets])))``. Returns
    ``{similarities (B, P), predictions, targets, maps (B, h, w), embedding (B, C)}``. The one
    place this logic lives (`FAM.explain_episode` and the dataset audit use it).
    """
    protos_z = protos if protos_z is None else protos_z
    eq, zq = _embed(aq, opts.pooling, head_fn)
    sims = similarity_matrix(zq, protos_z, opts.similarity, opts.eps)  # (B, P)
    pred = jnp.argmax(sims, axis=1).astype(jnp.int32)
    target = jnp.where(given >= 0, given, pred)
    _, c = fam_contributions(eq, protos[target], opts.similarity, head_fn, opts.eps)
    w = normalize_weights(c, opts.normalize)
    return {
        "similarities": sims,
        "predictions": pred,
        "targets": target,
        "maps": jax.vmap(fam_sample_map)(aq, w),
        "embedding": eq,
    }


def class_prototypes(embeddings: np.ndarray, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(classes, prototypes)``: the sorted distinct ``labels`` and, per class, the mean of
    its ``embeddings`` rows (accumulated in float64, returned as float32 (n_classes, C))."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.shape[0] != embeddings.shape[0]:
        raise ValueError(
            f"support_labels must be one label per support image: {embeddings.shape[0]} "
            f"images, labels of shape {labels.shape}"
        )
    classes, label_idx = np.unique(labels, return_inverse=True)
    counts = np.bincount(label_idx, minlength=classes.size)
    protos = np.zeros((classes.size, embeddings.shape[1]), np.float64)
    np.add.at(protos, label_idx, embeddings.astype(np.float64))
    return classes, (protos / counts[:, None]).astype(np.float32)


def make_reference_map_step(
    extractor: FeatureExtractor, opts: _Options, head: _Head | None, out_hw: tuple[int, int] | None
):
    """``(params, (images (R, ...), eq (R, m, C))) -> maps (R, m, ...)``: each reference image's
    FAM for up to ``m`` queries (pair weights from (eq_j, pool(A_r))), one backbone pass per row.
    """

    def step(params: Any, x: tuple[jax.Array, jax.Array]) -> dict[str, jax.Array]:
        ext_params, head_params = params
        images, eq = x
        ar = extractor.apply(ext_params, images).activations[0]
        er, _ = _embed(ar, opts.pooling, None)
        er = jnp.broadcast_to(er[:, None, :], eq.shape)
        _, c = fam_contributions(eq, er, opts.similarity, _bind(head, head_params), opts.eps)
        w = normalize_weights(c, opts.normalize)
        return {"maps": _resized(_maps_per_pair(ar, w), out_hw)}

    return step


# ------------------------------------------------------------------------------ host helpers


def _next_pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


@dataclasses.dataclass(frozen=True)
class _RowPlan:
    """Pairs grouped by reference image: row ``i`` explains image ``ref[i]`` for the pairs
    ``pairs[i]`` (-1 = empty slot); rows are sorted by ``ref``."""

    ref: np.ndarray  # (R,) int64
    pairs: np.ndarray  # (R, m) int64


def plan_reference_rows(pair_ref: np.ndarray, cap: int = MAX_PAIRS_PER_ROW) -> _RowPlan:
    """Group pairs by their reference image (vectorised): one row per distinct reference,
    ``m = min(cap, next_pow2(most pairs per reference))`` slots, hubs split over several rows.
    """
    pair_ref = np.asarray(pair_ref, np.int64)
    order = np.argsort(pair_ref, kind="stable")
    refs = pair_ref[order]
    uniq, start, count = np.unique(refs, return_index=True, return_counts=True)
    m = min(cap, _next_pow2(int(count.max())))
    rows_per_ref = -(-count // m)
    row_offset = np.concatenate([[0], np.cumsum(rows_per_ref)])
    group = np.repeat(np.arange(uniq.size), count)
    rank = np.arange(refs.size) - start[group]
    row = row_offset[group] + rank // m
    pairs = np.full((int(row_offset[-1]), m), -1, np.int64)
    pairs[row, rank % m] = order
    return _RowPlan(ref=np.repeat(uniq, rows_per_ref), pairs=pairs)


def _rebatch(chunks: Iterator[tuple[np.ndarray, ...]], size: int) -> Iterator[tuple[Any, ...]]:
    """Merge small host chunks (tuples of arrays with one leading axis) into batches of size."""
    buf: list[tuple[np.ndarray, ...]] = []
    held = 0
    for chunk in chunks:
        buf.append(chunk)
        held += chunk[0].shape[0]
        while held >= size:
            merged = tuple(np.concatenate(parts) for parts in zip(*buf, strict=True))
            yield tuple(a[:size] for a in merged)
            rest = tuple(a[size:] for a in merged)
            buf, held = ([rest], rest[0].shape[0]) if rest[0].shape[0] else ([], 0)
    if held:
        yield tuple(np.concatenate(parts) for parts in zip(*buf, strict=True))


# -------------------------------------------------------------------------------- explainer


class FAM:
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
      head: transformation after pooling (projection head): None, a Keras layer/model (JAX
        backend) or a JAX function of one embedding (C,) -> (D,). Contributions go through it
        by one ``jax.vjp``: exact for a linear bias-free head or a bias-free ReLU MLP
        (cosine/dot) and for any affine head (euclidean), first-order otherwise.
      normalize: channel weight normalisation ``"none"``, ``"max"``, ``"sum"``, ``"minmax"``,
        ``"softmax"``; None (default) -> ``"max"`` for cosine/dot, ``"minmax"`` for euclidean
        (whose contributions are all <= 0).
      batch_size: the most images (pairs for `explain`) per device step; rounded up to a
        multiple of the number of devices.
      eps: epsilon of the cosine denominator.
      devices: devices to shard the batch over; default all local devices.
    """

    def __init__(
        self,
        model: Any,
        conv_layer: str | int | None = None,
        pooling: Pooling = "gap",
        similarity: Similarity = "cosine",
        head: Any = None,
        normalize: Normalize | None = None,
        batch_size: int | None = 32,
        eps: float = EPS,
        devices: Sequence[jax.Device] | None = None,
    ):
        check_options(pooling, similarity, normalize)
        if head is not None and not (callable(head) or _is_keras_layer(head)):
            raise TypeError(
                "head must be None, a Keras layer/model, or a JAX function of one embedding "
                f"(C,) -> (D,); got {type(head).__name__}"
            )
        self.extractor = load(model, layers=conv_layer)
        self.layer_name = self.extractor.layer_name
        self.pooling = pooling
        self.similarity = similarity
        self.normalize = resolve_normalize(normalize, similarity)
        self.head = head
        self.eps = float(eps)
        self.batch_size = 256 if batch_size is None else int(batch_size)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        self.devices = devices
        self.last_similarities: np.ndarray = np.zeros(0, np.float32)
        self._opts = _Options(pooling, similarity, self.normalize, self.eps)
        self._heads: dict[int, _Head | None] = {}
        self._runners: dict[tuple[Any, ...], BatchRunner] = {}
        self._base_params: dict[tuple[Any, ...], Any] = {}

    # -- plumbing ---------------------------------------------------------------------------

    def feature_shape(self, sample_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """(h, w, C) of the explained layer's activations for images of ``sample_shape``."""
        spec = jax.ShapeDtypeStruct((1, *sample_shape), jnp.float32)
        feats = jax.eval_shape(self.extractor.apply, self.extractor.params, spec)
        return tuple(feats.activations[0].shape[1:])  # type: ignore[return-value]

    def _head(self, sample_shape: tuple[int, int, int]) -> _Head | None:
        channels = self.feature_shape(sample_shape)[2]
        if channels not in self._heads:
            self._heads[channels] = build_head(self.head, channels)
        return self._heads[channels]

    def _runner(self, key: tuple[Any, ...], make: Callable[[_Head | None], Any]) -> BatchRunner:
        """The cached runner for ``key`` (key[1] is the sample shape), built on first use."""
        if key not in self._runners:
            head = self._head(key[1])
            mesh = data_mesh(self.devices) if self.devices is not None else None
            params = (self.extractor.params, () if head is None else head.params)
            runner = BatchRunner(make(head), params, self.batch_size, mesh)
            self._base_params[key] = runner.params  # model + head, already on the devices
            self._runners[key] = runner
        return self._runners[key]

    def _with_extra(self, key: tuple[Any, ...], extra: Any) -> BatchRunner:
        """The runner for ``key`` with replicated extra arrays (a gallery, prototypes) as the
        second half of its params: ``((model, head), extra)``; same shapes -> no retrace."""
        runner = self._runners[key]
        runner.params = (self._base_params[key], jax.device_put(extra, replicated(runner.mesh)))
        return runner

    def _stream(self, inputs: Any, what: str):
        try:
            return image_stream(inputs, self.batch_size, self.extractor.input_shape)
        except ValueError as err:
            raise ValueError(f"{what}: {err}") from err

    def _out_hw(self, sample_shape: tuple[int, int, int], resize: bool):
        return tuple(sample_shape[:2]) if resize else None

    def _embeddings(
        self, inputs: Any, what: str, progress: bool = False
    ) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int]]:
        """Stream ``inputs`` once: pooled embeddings (N, C) and projections (N, D)."""
        stream = self._stream(inputs, what)
        runner = self._runner(
            ("embed", stream.sample_shape),
            lambda head: make_embed_step(self.extractor, self.pooling, head),
        )
        es, zs, seen = [], [], 0
        bar = progress_bar(stream.count, enabled=progress, desc=f"embed {what}")
        for out in runner.run(stream.batches, stream.count):
            raise_on_nonfinite(out["finite"], seen, self.layer_name, what)
            es.append(out["embedding"])
            zs.append(out["projection"])
            seen += out["finite"].shape[0]
            bar.update(out["finite"].shape[0])
        bar.close()
        return np.concatenate(es), np.concatenate(zs), stream.sample_shape

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
        qs = self._stream(queries, "queries")
        rs = self._stream(references, "references")
        if qs.count is not None and rs.count is not None and qs.count != rs.count:
            raise ValueError(
                f"queries and references pair up one to one: got {qs.count} queries and "
                f"{rs.count} references (repeat a single reference with np.repeat, or use "
                "explain_retrieval to compare every query with a gallery)"
            )
        if qs.sample_shape != rs.sample_shape:
            raise ValueError(
                f"queries have shape {qs.sample_shape} but references {rs.sample_shape}; both "
                "go through the model in one batch and must have the same (H, W, C)"
            )
        shape = qs.sample_shape
        runner = self._runner(
            ("pairs", shape, resize, reference_maps),
            lambda head: make_pair_step(
                self.extractor, self._opts, head, self._out_hw(shape, resize), reference_maps
            ),
        )
        sims, qmaps, rmaps, seen = [], [], [], 0
        bar = progress_bar(qs.count, enabled=progress, desc="explain pairs")
        for out in runner.run(_zip_pairs(qs.batches, rs.batches), qs.count):
            raise_on_nonfinite(out["finite"][:, :2], seen, self.layer_name, "queries")
            raise_on_nonfinite(out["finite"][:, 2:], seen, self.layer_name, "references")
            sims.append(out["similarity"])
            qmaps.append(out["query_maps"])
            if reference_maps:
                rmaps.append(out["reference_maps"])
            seen += out["similarity"].shape[0]
            bar.update(out["similarity"].shape[0])
        bar.close()
        self.last_similarities = np.concatenate(sims).astype(np.float32)
        q = _as_maps(np.concatenate(qmaps), resize)
        return (q, _as_maps(np.concatenate(rmaps), resize)) if reference_maps else q

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
        top_k = _positive_int(top_k, "top_k")
        gallery_e, gallery_z, g_shape = self._embeddings(gallery, "gallery", progress)
        n_gallery = gallery_e.shape[0]
        available = n_gallery - 1 if exclude_self else n_gallery
        if top_k > available:
            raise ValueError(
                f"top_k={top_k} but the gallery has only {n_gallery} images"
                + (" (one of them the query itself, exclude_self=True)" if exclude_self else "")
                + "; lower top_k or add gallery images"
            )
        qs = self._stream(queries, "queries")
        if qs.sample_shape != g_shape:
            raise ValueError(
                f"queries have shape {qs.sample_shape} but the gallery {g_shape}; they must have "
                "the same (H, W, C)"
            )
        if exclude_self and qs.count is not None and qs.count != n_gallery:
            raise ValueError(
                f"exclude_self=True means the queries are the gallery, but there are {qs.count} "
                f"queries and {n_gallery} gallery images"
            )
        shape = qs.sample_shape
        key = ("retrieval", shape, resize, top_k, exclude_self, n_gallery)
        self._runner(
            key,
            lambda head: make_retrieval_step(
                self.extractor, self._opts, head, top_k, exclude_self, self._out_hw(shape, resize)
            ),
        )
        # projections only with a head (else they are the embeddings: not sent twice)
        runner = self._with_extra(key, (gallery_e, None if self.head is None else gallery_z))
        sims, idx, maps, eqs, seen = [], [], [], [], 0
        bar = progress_bar(qs.count, enabled=progress, desc="explain queries")
        for out in runner.run(_with_index(qs.batches), qs.count):
            raise_on_nonfinite(out["finite"], seen, self.layer_name, "queries")
            sims.append(out["similarity"])
            idx.append(out["indices"])
            maps.append(out["maps"])
            eqs.append(out["embedding"])
            seen += out["finite"].shape[0]
            bar.update(out["finite"].shape[0])
        bar.close()
        if exclude_self and seen != n_gallery:
            raise ValueError(
                f"exclude_self=True means the queries are the gallery, but there are {seen} "
                f"queries and {n_gallery} gallery images"
            )
        indices = np.concatenate(idx).astype(np.int64)
        query_maps = _as_maps(np.concatenate(maps), resize)
        ref_maps = None
        if neighbour_maps:
            eq = np.concatenate(eqs)
            pair_eq = np.repeat(eq, top_k, axis=0)
            ref = self._reference_maps(gallery, "gallery", indices.ravel(), pair_eq, resize)
            ref_maps = ref.reshape(query_maps.shape)
        return RetrievalResult(
            similarities=np.concatenate(sims).astype(np.float32),
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
        n_way = classes.size
        counts = np.bincount(label_idx, minlength=n_way)

        qs = self._stream(queries, "queries")
        if qs.sample_shape != s_shape:
            raise ValueError(
                f"queries have shape {qs.sample_shape} but the support set {s_shape}; they must "
                "have the same (H, W, C)"
            )
        given = None
        if query_labels is not None:
            ql = np.asarray(query_labels)
            if ql.ndim != 1 or (qs.count is not None and ql.shape[0] != qs.count):
                raise ValueError(
                    f"query_labels must be one label per query: {qs.count} queries, labels of "
                    f"shape {ql.shape}"
                )
            pos = np.searchsorted(classes, ql)
            pos = np.clip(pos, 0, n_way - 1)
            unknown = classes[pos] != ql
            if unknown.any():
                raise ValueError(
                    f"query_labels {sorted(set(ql[unknown].tolist()))[:10]} are not support "
                    f"labels {classes.tolist()[:20]}"
                )
            given = pos.astype(np.int32)

        shape = qs.sample_shape
        key = ("episode", shape, resize, n_way)
        self._runner(
            key,
            lambda head: make_episode_step(
                self.extractor, self._opts, head, self._out_hw(shape, resize)
            ),
        )
        head = self._head(shape)
        protos_z = None if head is None else jax.vmap(_bind(head, head.params))(protos)
        runner = self._with_extra(key, (protos, protos_z))
        outs: list[dict[str, np.ndarray]] = []
        seen = 0
        for out in runner.run(_with_given(qs.batches, given), qs.count):
            raise_on_nonfinite(out["finite"], seen, self.layer_name, "queries")
            outs.append(out)
            seen += out["finite"].shape[0]
        if given is not None and seen != given.shape[0]:
            raise ValueError(
                f"query_labels must be one label per query: {seen} queries, {given.shape[0]} labels"
            )
        cat = {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}
        targets = cat["targets"].astype(np.int64)

        members = np.full((n_way, int(counts.max())), -1, np.int64)
        order = np.argsort(label_idx, kind="stable")
        rank = np.arange(order.size) - np.repeat(np.cumsum(counts) - counts, counts)
        members[label_idx[order], rank] = order
        support_idx = members[targets]  # (Nq, K)
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
            query_maps=_as_maps(cat["maps"], resize),
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
        stream = self._stream(source, what)
        shape = stream.sample_shape
        m = plan.pairs.shape[1]
        runner = self._runner(
            ("reference", shape, resize, m),
            lambda head: make_reference_map_step(
                self.extractor, self._opts, head, self._out_hw(shape, resize)
            ),
        )
        eq_padded = np.concatenate([pair_eq.astype(np.float32), np.zeros_like(pair_eq[:1])])

        def rows() -> Iterator[tuple[np.ndarray, np.ndarray]]:
            offset, r0 = 0, 0
            for batch in stream.batches:
                end = offset + batch.shape[0]
                r1 = int(np.searchsorted(plan.ref, end))
                if r1 > r0:
                    images = batch[plan.ref[r0:r1] - offset]
                    yield images, eq_padded[plan.pairs[r0:r1]]  # -1 -> the zero row
                r0, offset = r1, end
                if r0 == plan.ref.size:
                    return

        out = None
        row = 0
        for res in runner.run(_rebatch(rows(), runner.batch_size), plan.ref.size):
            maps = res["maps"]  # (R, m, ...)
            n = maps.shape[0]
            if out is None:
                out = np.empty((pair_ref.size, *maps.shape[2:]), np.float32)
            slots = plan.pairs[row : row + n]
            valid = slots >= 0
            out[slots[valid]] = maps[valid]
            row += n
        if row != plan.ref.size:  # pragma: no cover - the gallery changed between passes
            raise ValueError(f"{what}: fewer images on the second pass than on the first")
        return _as_maps(out, resize)


# ------------------------------------------------------------------------------------- utils


def _as_maps(maps: np.ndarray, resize: bool) -> np.ndarray:
    maps = maps.astype(np.float32, copy=False)
    return maps[..., None] if resize else maps


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")
    return int(value)


def _zip_pairs(
    q_batches: Iterator[np.ndarray], r_batches: Iterator[np.ndarray]
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Zip two streams batched alike; a ValueError with both counts if they differ in length."""
    nq = nr = 0
    for q, r in itertools.zip_longest(q_batches, r_batches):
        nq += 0 if q is None else q.shape[0]
        nr += 0 if r is None else r.shape[0]
        if q is None or r is None or q.shape[0] != r.shape[0]:
            nq += sum(b.shape[0] for b in q_batches)
            nr += sum(b.shape[0] for b in r_batches)
            raise ValueError(
                f"queries and references pair up one to one: got {nq} queries and {nr} references"
            )
        yield q, r


def _with_index(batches: Iterator[np.ndarray]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    offset = 0
    for b in batches:
        yield b, np.arange(offset, offset + b.shape[0], dtype=np.int32)
        offset += b.shape[0]


def _with_given(
    batches: Iterator[np.ndarray], given: np.ndarray | None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    offset = 0
    for b in batches:
        n = b.shape[0]
        if given is None:
            g = np.full(n, -1, np.int32)
        else:
            g = given[offset : offset + n]
            if g.shape[0] != n:
                raise ValueError(
                    f"query_labels must be one label per query: more than {given.shape[0]} queries"
                )
        yield b, g
        offset += n
