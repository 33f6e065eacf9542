"""FAM in NumPy, float64, written from the formula (`fastfem.kernels.fam`'s docstring, Liao et al.
2023): the tests' reference.

A head is given as ``(g, jac)``: ``g(e) -> z`` and ``jac(e) -> dz/de`` (D, C), both NumPy.
"""

import numpy as np

EPS = 1e-8


def np_pool(a, pooling):
    a = a.astype(np.float64)
    return a.mean(axis=(0, 1)) if pooling == "gap" else a.max(axis=(0, 1))


def np_contributions(eq, er, similarity, head=None, eps=EPS):
    eq, er = eq.astype(np.float64), er.astype(np.float64)
    if head is None:
        g, jac = (lambda e: e), (lambda e: np.eye(e.size))
    else:
        g, jac = head
    zq, zr, j = g(eq), g(er), jac(eq)
    if similarity == "euclidean":
        s = -np.sum((zq - zr) ** 2)
        return s, (eq - er) * (j.T @ (-(zq - zr)))
    c = eq * (j.T @ zr)
    s = zq @ zr
    if similarity == "cosine":
        d = np.linalg.norm(zq) * np.linalg.norm(zr) + eps
        s, c = s / d, c / d
    return s, c


def np_normalize(c, mode):
    if mode == "none":
        return c
    if mode == "max":
        d = np.abs(c).max()
        return c / d if d > 0 else c * 0
    if mode == "sum":
        d = np.abs(c).sum()
        return c / d if d > 0 else c * 0
    if mode == "minmax":
        span = c.max() - c.min()
        return (c - c.min()) / span if span > 0 else np.ones_like(c)
    e = np.exp(c - c.max())
    return e / e.sum()


def np_map(a, w):
    cam = np.maximum(np.einsum("hwc,c->hw", a.astype(np.float64), w), 0)
    span = cam.max() - cam.min()
    if span <= 1e-6 * np.abs(cam).max() or span == 0:
        return np.zeros_like(cam)
    return (cam - cam.min()) / span


def np_fam(aq, ar, pooling="gap", similarity="cosine", normalize="max", head=None):
    """One pair: (S, c, w, query_map, reference_map)."""
    eq, er = np_pool(aq, pooling), np_pool(ar, pooling)
    s, c = np_contributions(eq, er, similarity, head)
    w = np_normalize(c, normalize)
    return s, c, w, np_map(aq, w), np_map(ar, w)


def linear_head(w):
    """g(e) = e @ w (bias-free linear), with its Jacobian."""
    w = np.asarray(w, np.float64)
    return (lambda e: e @ w), (lambda e: w.T)


def mlp_head(w1, w2, b1=None):
    """g(e) = relu(e @ w1 + b1) @ w2, with its Jacobian."""
    w1, w2 = np.asarray(w1, np.float64), np.asarray(w2, np.float64)
    b1 = np.zeros(w1.shape[1]) if b1 is None else np.asarray(b1, np.float64)

    def g(e):
        return np.maximum(e @ w1 + b1, 0) @ w2

    def jac(e):
        on = (e @ w1 + b1 > 0).astype(np.float64)
        return (w1 * on[None, :] @ w2).T

    return g, jac
