"""Faithfulness metrics: does the model's score follow the explanation? Inputs built on device.

The model enters through a `Scorer`: a pure, jittable ``features(params, x) -> F`` (one forward
pass over a batch of images) and ``value(F, target) -> score`` per image:

* classifiers (`class_scorer`): ``F`` is the model output (optionally passed through
  ``softmax``/``sigmoid``), the target is a class index and the score ``F[target]``. The
  default target is the class predicted on the clean image.
* similarity models (`similarity_scorer`, for FAM): ``F`` is the (pooled, optionally projected)
  embedding at the explained layer, the target is the reference's embedding and the score the
  similarity (cosine, dot or negative squared euclidean; `fastfem.kernels.fam`). So a FAM map
  is judged by how much the query's similarity to its reference depends on the highlighted
  pixels, exactly as a class map is judged by the class score.

With ``Y`` the score on the image ``x`` and ``O`` the score on ``x * L`` (the map normalised to
[0, 1], `fastfem.metrics.localisation.normalize_map`, broadcast over channels):

* average drop (Chattopadhay et al. 2018): ``max(0, Y - O) / Y * 100`` per sample; NaN where
  ``Y <= 0`` (the ratio is meaningless for non-positive scores such as logits or euclidean
  similarities; means are taken over the finite samples);
* increase in confidence: ``100 * [O > Y]`` per sample; the mean is the percentage of images.

Deletion / insertion (Petsiuk et al. 2018, RISE) with ``T`` steps: pixels are ranked by
decreasing value of the map as given (`fastfem.evaluate` passes the raw map, not the
normalised one, so the ReLU of the default normalisation creates no ties; ties keep raster
order), and at step ``k = 0..T`` the top ``n_k = floor(k P / T)`` of the ``P`` pixels (all
channels of a pixel together) are replaced by the baseline (deletion, starting from ``x``) or
copied from ``x`` into the baseline image (insertion, starting from the baseline). The curve is
the ``T + 1`` scores and the AUC its trapezoidal area over a [0, 1] abscissa:
``(sum_k s_k - (s_0 + s_T) / 2) / T``. Lower is better for deletion, higher for insertion. All
``T + 1`` inputs of a batch are built on device from the pixel ranks (no gather, no host
round-trip) and scored in chunks of at most ``max_images`` images per forward pass
(`jax.lax.map` over groups of steps), which bounds memory whatever ``T`` is.

Conventions of the peers (tested in tests/metrics/test_quantus_parity.py and
tests/metrics/test_metrics_faithfulness.py):

* Xplique's ``AverageDropMetric`` returns fractions (ours are percentages, as in the paper),
  with ``(base + 1e-8)`` in the denominator (ours: NaN for ``Y <= 0``), and builds its mask as
  the min-max of ``|explanation|`` with ``+1e-8`` (ours: ``normalize="abs_minmax"`` is the
  same mask; the default ``"relu_minmax"`` and ``"minmax"`` do not take ``|.|``, so negative
  map values are least important instead of most). A constant map gives an all-zero mask in
  Xplique and the uniform mask ``L = 1`` here (``O = Y``: no drop, no increase).
* Xplique's ``Deletion``/``Insertion`` use the same ``T + 1`` points (``np.linspace(0, P,
  T+1)`` cast to int, equal to ``floor(k P / T)`` when ``P`` is a multiple of ``T``) and the
  same AUC, but average the curve over the batch first (the mean of our per-sample AUCs is the
  same number) and break saliency ties in reverse raster order.
* Quantus's ``PixelFlipping`` (with ``features_in_step = C * P / T`` on a channel-first input
  and a numeric ``perturb_baseline``; its default ``"black"`` is the current image's minimum)
  records only the ``T`` points after each step (our ``s_1..s_T``, no ``k = 0`` point) and its
  AUC is ``np.trapz(s_1..s_T, dx=1)``, not normalised to [0, 1] (and ``np.trapz`` no longer
  exists in NumPy 2.4, so Quantus 0.6's AUC helper fails there; the curves still work). It
  has no insertion metric; insertion is its pixel flipping started from the baseline image
  with a ``perturb_func`` that copies the original pixels back in.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from fastfem.converters import FeatureExtractor, Features
from fastfem.metrics.localisation import Normalize, normalize_map

CurveMode = Literal["deletion", "insertion"]
Activation = Literal["softmax", "sigmoid"] | None
Baseline = float | Literal["mean"]


# ----------------------------------------------------------------------------------------------
# Per-sample formulas.


def masked_input(x: jax.Array, saliency: jax.Array) -> jax.Array:
    """``x * L`` for ONE image (H, W, C) and a normalised map (H, W) in [0, 1]."""
    return x * saliency[..., None].astype(x.dtype)


def average_drop(y: jax.Array, o: jax.Array) -> jax.Array:
    """``max(0, Y - O) / Y * 100`` (percent); NaN where ``Y <= 0``. Elementwise."""
    y = jnp.asarray(y, jnp.float32)
    o = jnp.asarray(o, jnp.float32)
    positive = y > 0
    return jnp.where(positive, jnp.maximum(y - o, 0.0) / jnp.where(positive, y, 1.0), jnp.nan) * 100


def increase_in_confidence(y: jax.Array, o: jax.Array) -> jax.Array:
    """``100 * [O > Y]`` (percent); NaN where either score is NaN. Elementwise."""
    y, o = jnp.asarray(y, jnp.float32), jnp.asarray(o, jnp.float32)
    return jnp.where(jnp.isnan(y) | jnp.isnan(o), jnp.nan, jnp.where(o > y, 100.0, 0.0))


def saliency_ranks(saliency: jax.Array) -> jax.Array:
    """Rank of each pixel of ONE map (H, W) in decreasing saliency: int32 (H, W), 0 = most
    salient; ties keep raster order (a stable sort)."""
    flat = saliency.reshape(-1)
    order = jnp.argsort(flat, descending=True, stable=True)
    ranks = jnp.zeros(flat.shape, jnp.int32).at[order].set(jnp.arange(flat.size, dtype=jnp.int32))
    return ranks.reshape(saliency.shape)


def step_counts(n_pixels: int, steps: int) -> np.ndarray:
    """Pixels perturbed at each of the ``T + 1`` steps: ``floor(k * P / T)``, k = 0..T."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1; got {steps}")
    k = np.arange(steps + 1, dtype=np.int64)
    return (k * int(n_pixels) // int(steps)).astype(np.int32)


def baseline_image(x: jax.Array, baseline: Baseline = 0.0) -> jax.Array:
    """The perturbation baseline of ONE image (H, W, C): a constant, or ``"mean"`` (the
    image's per-channel mean)."""
    if isinstance(baseline, str):
        if baseline != "mean":
            raise ValueError(f"baseline must be a number or 'mean'; got {baseline!r}")
        return jnp.broadcast_to(jnp.mean(x, axis=(0, 1), keepdims=True), x.shape)
    return jnp.full_like(x, baseline)


def perturbed_input(
    x: jax.Array, ranks: jax.Array, count: jax.Array, base: jax.Array, mode: CurveMode
) -> jax.Array:
    """Step input of ONE image: deletion replaces the ``count`` top-ranked pixels of ``x`` by
    ``base``; insertion copies them from ``x`` into ``base``."""
    top = (ranks < count)[..., None]
    if mode == "deletion":
        return jnp.where(top, base, x)
    if mode == "insertion":
        return jnp.where(top, x, base)
    raise ValueError(f"mode must be 'deletion' or 'insertion'; got {mode!r}")


def curve_auc(scores: jax.Array) -> jax.Array:
    """Trapezoidal AUC over [0, 1] of curves (..., T + 1): ``(sum - (s_0 + s_T) / 2) / T``."""
    scores = jnp.asarray(scores, jnp.float32)
    t = scores.shape[-1] - 1
    if t < 1:
        raise ValueError("a curve needs at least 2 points")
    return (jnp.sum(scores, -1) - 0.5 * (scores[..., 0] + scores[..., -1])) / t


# ----------------------------------------------------------------------------------------------
# Scorers: the model's target score, as pure jittable functions.


@dataclasses.dataclass(frozen=True)
class Scorer:
    """How a model scores images against per-image targets, as pure jittable functions.

    Attributes:
      kind: ``"class"`` or ``"similarity"``.
      params: the parameters pytree passed to ``apply``.
      apply: ``(params, x (M, H, W, C)) -> Features``: one forward pass of the extractor.
      from_features: ``Features -> F (M, K)``: class outputs (after ``activation``) or
        embeddings. ``features(params, x) = from_features(apply(params, x))``; a fused step
        that already ran ``apply`` (for an explanation) reuses its `Features`.
      value: ``(F (M, K), target (M, ...)) -> (M,)`` float32: the target score of each image.
      targets: ``(params, F_clean (M, K), given) -> target``: the targets used for the batch
        (class: ``given`` class indices, -1 meaning the predicted class; similarity: ``given``
        are the reference images, embedded here).
      description: for logs and reports.
    """

    kind: str
    params: Any
    apply: Callable[[Any, jax.Array], Features]
    from_features: Callable[[Features], jax.Array]
    value: Callable[[jax.Array, Any], jax.Array]
    targets: Callable[[Any, jax.Array, Any], Any]
    description: str = ""

    def features(self, params: Any, x: jax.Array) -> jax.Array:
        """``F`` (M, K) of a batch of images: one forward pass."""
        return self.from_features(self.apply(params, x))

    def scores(self, params: Any, x: jax.Array, target: Any) -> jax.Array:
        """Target scores (M,) of a batch of images."""
        return self.value(self.features(params, x), target)


def _activate(out: jax.Array, activation: Activation) -> jax.Array:
    if activation is None:
        return out
    if activation == "softmax":
        return jax.nn.softmax(out, axis=-1)
    if activation == "sigmoid":
        return jax.nn.sigmoid(out)
    raise ValueError(f"activation must be None, 'softmax' or 'sigmoid'; got {activation!r}")


def class_scorer(extractor: FeatureExtractor, activation: Activation = None) -> Scorer:
    """Scores ``output[target]`` of a `FeatureExtractor` built with the model output.

    ``activation``: applied to the output first (``"softmax"`` for a model that returns
    logits; the bundled sample CNN already ends in a softmax). Targets: class indices, -1 for
    the class predicted on the clean image.
    """
    if not extractor.has_output:
        raise ValueError(
            "class scores need the model output: build the extractor with include_output=True "
            "(e.g. fastfem.converters.load(model, include_output=True))"
        )
    _activate(jnp.zeros((1, 2)), activation)  # validates the name

    def from_features(feats: Features) -> jax.Array:
        out = jnp.asarray(feats.output, jnp.float32)
        return _activate(out.reshape(out.shape[0], -1), activation)

    def value(f: jax.Array, target: jax.Array) -> jax.Array:
        return jnp.take_along_axis(f, target.astype(jnp.int32)[:, None], axis=1)[:, 0]

    def targets(params: Any, f_clean: jax.Array, given: jax.Array) -> jax.Array:
        del params
        predicted = jnp.argmax(f_clean, axis=-1).astype(jnp.int32)
        given = given.astype(jnp.int32)
        return jnp.where(given >= 0, given, predicted)

    act = f", {activation}" if activation else ""
    desc = f"class score{act}"
    return Scorer("class", extractor.params, extractor.apply, from_features, value, targets, desc)


def similarity_scorer(
    extractor: FeatureExtractor,
    pooling: str = "gap",
    similarity: str = "cosine",
    head: Callable[[jax.Array], jax.Array] | None = None,
    layer: int = 0,
) -> Scorer:
    """Scores ``S(g(pool(A(x))), g(pool(A(r))))`` against a reference r (FAM's similarity).

    ``A`` is the extractor's ``layer``-th activation, ``pool``/``S`` as in
    `fastfem.kernels.fam`, ``g`` the optional head (a function of ONE embedding). Targets are
    the reference images; their embeddings are computed in the same jitted step.
    """
    from fastfem.kernels.fam import check_options, pool, similarity_score

    check_options(pooling=pooling, similarity=similarity)

    def from_features(feats: Features) -> jax.Array:
        e = jax.vmap(lambda s: pool(s, pooling))(feats.activations[layer])
        return e if head is None else jax.vmap(lambda v: jnp.asarray(head(v), jnp.float32))(e)

    def value(f: jax.Array, target: jax.Array) -> jax.Array:
        return jax.vmap(lambda a, b: similarity_score(a, b, similarity))(f, target)

    def targets(params: Any, f_clean: jax.Array, references: jax.Array) -> jax.Array:
        del f_clean
        return from_features(extractor.apply(params, references))

    desc = f"{similarity} similarity of {pooling} embeddings" + (" + head" if head else "")
    return Scorer(
        "similarity", extractor.params, extractor.apply, from_features, value, targets, desc
    )


# ----------------------------------------------------------------------------------------------
# Batched, jittable drivers (called inside one jitted step).


def drop_and_increase(
    scorer: Scorer,
    params: Any,
    x: jax.Array,
    saliency: jax.Array,
    given: Any,
    f_clean: jax.Array | None = None,
) -> tuple[dict[str, jax.Array], Any]:
    """Base scores, masked scores, AD and IC of a batch.

    ``saliency``: normalised maps (B, H, W); ``given``: the targets as passed to
    ``scorer.targets``; ``f_clean``: ``scorer.features`` of ``x`` when the caller already has
    them (a fused explanation step), so only ``x * L`` goes through the model; otherwise ``x``
    and ``x * L`` go through it in ONE forward pass of 2B images. Returns ``(scores, target)``:
    a dict of (B,) arrays (``base_score``, ``masked_score``, ``average_drop``,
    ``increase_in_confidence``) and the resolved targets (for the curves)."""
    b = x.shape[0]
    masked = jax.vmap(masked_input)(x, saliency)
    if f_clean is None:
        # (B, 2, ...) then (2B, ...): sample-major, so a batch sharded over devices stays sharded.
        pair = jnp.stack([x, masked], axis=1).reshape(2 * b, *x.shape[1:])
        f = scorer.features(params, pair)
        f = f.reshape(b, 2, *f.shape[1:])
        f_clean, f_masked = f[:, 0], f[:, 1]
    else:
        f_masked = scorer.features(params, masked)
    target = scorer.targets(params, f_clean, given)
    y = scorer.value(f_clean, target)
    o = scorer.value(f_masked, target)
    scores = {
        "base_score": y,
        "masked_score": o,
        "average_drop": average_drop(y, o),
        "increase_in_confidence": increase_in_confidence(y, o),
    }
    return scores, target


def perturbation_curves(
    scorer: Scorer,
    params: Any,
    x: jax.Array,
    saliency: jax.Array,
    target: Any,
    steps: int,
    mode: CurveMode,
    baseline: Baseline = 0.0,
    max_images: int = 256,
) -> jax.Array:
    """Deletion or insertion curves (B, T + 1) of a batch, jittable.

    ``saliency``: maps (B, H, W) (any monotone normalisation gives the same ranks; a map
    with NaN/inf values gives a NaN curve);
    ``target``: resolved targets (class indices (B,) or reference embeddings (B, D)). The
    ``B * (T + 1)`` step inputs are scored in forward passes of at most
    ``max(max_images, B)`` images: groups of ``G = max_images // B`` steps, looped over with
    `jax.lax.map` so that only one group's inputs and activations are live at a time.
    """
    b, h, w, c = x.shape
    counts = step_counts(h * w, steps)
    group = int(min(max(1, max_images // max(b, 1)), steps + 1))
    n_groups = -(-(steps + 1) // group)
    padded = np.concatenate([counts, np.full(n_groups * group - counts.size, counts[-1])])
    groups = jnp.asarray(padded.reshape(n_groups, group), jnp.int32)
    ranks = jax.vmap(saliency_ranks)(saliency)
    base = jax.vmap(lambda img: baseline_image(img, baseline))(x)
    tiled = jax.tree.map(lambda a: jnp.repeat(a, group, axis=0), target)

    def one_group(group_counts: jax.Array) -> jax.Array:
        per_sample = jax.vmap(  # over samples
            jax.vmap(perturbed_input, in_axes=(None, None, 0, None, None)),  # over steps
            in_axes=(0, 0, None, 0, None),
        )
        imgs = per_sample(x, ranks, group_counts, base, mode)  # (B, G, H, W, C)
        scores = scorer.scores(params, imgs.reshape(b * group, h, w, c), tiled)
        return scores.reshape(b, group)

    out = jax.lax.map(one_group, groups)  # (n_groups, B, G)
    curves = jnp.transpose(out, (1, 0, 2)).reshape(b, n_groups * group)[:, : steps + 1]
    finite = jnp.all(jnp.isfinite(saliency), axis=(1, 2))  # a NaN map has no order
    return jnp.where(finite[:, None], curves, jnp.nan)


def normalized_maps(maps: jax.Array, normalize: Normalize = "relu_minmax") -> jax.Array:
    """`normalize_map` over a batch (B, H, W)."""
    return jax.vmap(lambda m: normalize_map(m, normalize))(maps)
