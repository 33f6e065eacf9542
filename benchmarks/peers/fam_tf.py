"""FAM in eager TensorFlow, written from the formula below (not from fastfem's code).

The parity reference of fastfem's FAM (tests/explainers/test_fam_tf_parity.py) and its eager-TF
peer in the benchmarks: what a TensorFlow user would write, Xplique style — a Python loop over
batches, every op run eagerly, the head differentiated by ``tf.GradientTape``. TF ops only.

Run it with Keras on the TensorFlow backend (``KERAS_BACKEND=tensorflow`` before Keras is
imported); the model is a Keras 3 model or a ``.keras`` path.

Formula (one pair; batched here over the leading axis)::

    eq = pool(Aq), er = pool(Ar)                      gap: mean over (h, w); gmp: max
    zq = g(eq), zr = g(er)                            (no head: z = e)
    dot        S = zq.zr                      c = eq * J^T zr
    cosine     S = zq.zr / (|zq||zr| + eps)   c = eq * J^T zr / (|zq||zr| + eps)
    euclidean  S = -|zq - zr|^2               c = (eq - er) * J^T (zr - zq)
    w = normalize(c)      none | max: c/max|c| | sum: c/sum|c| | minmax | softmax
    L = minmax(ReLU(sum_k w_k Aq_k))          constant map (range <= 1e-6 max|L|) -> 0
    resize: bilinear, half-pixel centres (tf.image.resize)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

EPS = 1e-8
CONSTANT_MAP_RTOL = 1e-6
POOLINGS = ("gap", "gmp")
SIMILARITIES = ("cosine", "dot", "euclidean")
NORMALIZATIONS = ("none", "max", "sum", "minmax", "softmax")


def default_normalize(similarity: str) -> str:
    return "minmax" if similarity == "euclidean" else "max"


def tf_pool(acts: tf.Tensor, pooling: str) -> tf.Tensor:
    """(N, h, w, C) -> (N, C)."""
    if pooling == "gap":
        return tf.reduce_mean(acts, axis=[1, 2])
    if pooling == "gmp":
        return tf.reduce_max(acts, axis=[1, 2])
    raise ValueError(f"unknown pooling {pooling!r}")


def tf_contributions(
    eq: tf.Tensor, er: tf.Tensor, similarity: str, head: Any = None, eps: float = EPS
) -> tuple[tf.Tensor, tf.Tensor]:
    """Similarities (N,) and contributions (N, C) of embedding pairs (N, C).

    ``head`` maps a batch of embeddings (N, C) -> (N, D) row by row (a Keras layer/model or a
    TF function); ``J^T v`` is one ``tape.gradient`` with ``output_gradients=v``.
    """
    if similarity not in SIMILARITIES:
        raise ValueError(f"unknown similarity {similarity!r}")
    if head is None:
        zq, zr = eq, er
        grad = zr - zq if similarity == "euclidean" else zr
    else:
        with tf.GradientTape() as tape:
            tape.watch(eq)
            zq = tf.cast(head(eq), tf.float32)
        zr = tf.cast(head(er), tf.float32)
        v = zr - zq if similarity == "euclidean" else zr
        grad = tape.gradient(zq, eq, output_gradients=tf.stop_gradient(v))
    if similarity == "euclidean":
        s = -tf.reduce_sum(tf.square(zq - zr), axis=-1)
        return s, (eq - er) * grad
    s = tf.reduce_sum(zq * zr, axis=-1)
    c = eq * grad
    if similarity == "cosine":
        d = tf.norm(zq, axis=-1) * tf.norm(zr, axis=-1) + eps
        s, c = s / d, c / d[:, None]
    return s, c


def tf_normalize(c: tf.Tensor, mode: str) -> tf.Tensor:
    """(N, C) contributions -> (N, C) weights."""
    if mode == "none":
        return c
    if mode in ("max", "sum"):
        a = tf.abs(c)
        d = tf.reduce_max(a, -1, keepdims=True) if mode == "max" else tf.reduce_sum(a, -1, True)
        return c / tf.where(d > 0, d, tf.ones_like(d))
    if mode == "minmax":
        lo, hi = tf.reduce_min(c, -1, keepdims=True), tf.reduce_max(c, -1, keepdims=True)
        span = hi - lo
        scaled = (c - lo) / tf.where(span > 0, span, tf.ones_like(span))
        return tf.where(span > 0, scaled, tf.ones_like(c))
    if mode == "softmax":
        return tf.nn.softmax(c, axis=-1)
    raise ValueError(f"unknown normalize {mode!r}")


def tf_maps(acts: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """(N, h, w, C), (N, C) -> (N, h, w): ReLU of the weighted sum, min-max per sample."""
    cam = tf.nn.relu(tf.einsum("nhwc,nc->nhw", acts, weights))
    lo = tf.reduce_min(cam, axis=[1, 2], keepdims=True)
    hi = tf.reduce_max(cam, axis=[1, 2], keepdims=True)
    span = hi - lo
    ok = span > CONSTANT_MAP_RTOL * tf.maximum(tf.abs(hi), tf.abs(lo))
    return tf.where(ok, (cam - lo) / tf.where(ok, span, tf.ones_like(span)), tf.zeros_like(cam))


def tf_fam(
    aq: tf.Tensor,
    ar: tf.Tensor,
    pooling: str = "gap",
    similarity: str = "cosine",
    normalize: str | None = None,
    head: Any = None,
    eps: float = EPS,
) -> dict[str, tf.Tensor]:
    """FAM of a batch of activation pairs: similarity, contributions, weights, both maps."""
    normalize = default_normalize(similarity) if normalize is None else normalize
    aq, ar = tf.cast(aq, tf.float32), tf.cast(ar, tf.float32)
    eq, er = tf_pool(aq, pooling), tf_pool(ar, pooling)
    s, c = tf_contributions(eq, er, similarity, head, eps)
    w = tf_normalize(c, normalize)
    return {
        "similarity": s,
        "contributions": c,
        "weights": w,
        "query_map": tf_maps(aq, w),
        "reference_map": tf_maps(ar, w),
    }


def _resolve_layer(model: Any, conv_layer: str | int | None) -> Any:
    if conv_layer is None:
        for layer in reversed(model.layers):
            if hasattr(layer, "filters"):
                return layer
        raise ValueError("the model has no layer with `filters`")
    if isinstance(conv_layer, int):
        return model.layers[conv_layer]
    return model.get_layer(conv_layer)


class FamTF:
    """Eager-TF FAM explainer: ``FamTF(model, ...).explain(queries, references)``.

    Same options and outputs as ``fastfem.FAM.explain`` (maps (N, H, W, 1) float32), computed
    batch by batch in eager TensorFlow.
    """

    def __init__(
        self,
        model: Any,
        conv_layer: str | int | None = None,
        pooling: str = "gap",
        similarity: str = "cosine",
        head: Any = None,
        normalize: str | None = None,
        batch_size: int = 32,
        eps: float = EPS,
    ):
        import keras

        if keras.backend.backend() != "tensorflow":
            raise RuntimeError("FamTF needs Keras on the TensorFlow backend")
        if isinstance(model, str):
            model = keras.saving.load_model(model, compile=False)
        layer = _resolve_layer(model, conv_layer)
        self.features = keras.Model(model.inputs, layer.output)
        self.pooling, self.similarity, self.head = pooling, similarity, head
        self.normalize = default_normalize(similarity) if normalize is None else normalize
        self.batch_size, self.eps = int(batch_size), float(eps)
        self.last_similarities = np.zeros(0, np.float32)

    def explain(
        self, queries: Any, references: Any, reference_maps: bool = False, resize: bool = True
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        if len(queries) != len(references):
            raise ValueError("queries and references must have the same length")
        size = tf.shape(queries)[1:3]
        sims, qmaps, rmaps = [], [], []
        for start in range(0, len(queries), self.batch_size):
            q = tf.convert_to_tensor(queries[start : start + self.batch_size], tf.float32)
            r = tf.convert_to_tensor(references[start : start + self.batch_size], tf.float32)
            aq = self.features(q, training=False)
            ar = self.features(r, training=False)
            out = tf_fam(aq, ar, self.pooling, self.similarity, self.normalize, self.head, self.eps)
            maps = [out["query_map"]] + ([out["reference_map"]] if reference_maps else [])
            if resize:
                maps = [tf.image.resize(m[..., None], size, method="bilinear") for m in maps]
            sims.append(out["similarity"].numpy())
            qmaps.append(maps[0].numpy())
            if reference_maps:
                rmaps.append(maps[1].numpy())
        self.last_similarities = np.concatenate(sims)
        q = np.concatenate(qmaps).astype(np.float32)
        return (q, np.concatenate(rmaps).astype(np.float32)) if reference_maps else q

    __call__ = explain
