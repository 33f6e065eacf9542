"""The FAM formula (fastfem.kernels.fam) against a NumPy reference written from the formula in its
module docstring (tests/support/fam_reference.py), and its invariants: contributions add up to S,
cosine scale invariance, planted patterns, degenerate inputs."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from fam_reference import linear_head, mlp_head, np_contributions, np_fam

import fastfem
from fastfem.kernels.fam import (
    NORMALIZATIONS,
    POOLINGS,
    SIMILARITIES,
    fam_contributions,
    fam_map,
    fam_pair,
    fam_pairs,
    fam_sample_map,
    normalize_weights,
    pool,
    similarity_matrix,
    similarity_score,
)


def acts_pair(seed, n=3, shape=(7, 9, 12), relu=True):
    """Activations with per-image channel gains, so embeddings differ between images."""
    rng = np.random.default_rng(seed)
    full = (n, *shape)
    a = rng.normal(size=full) * rng.uniform(0.2, 2.0, size=(n, 1, 1, shape[-1]))
    b = rng.normal(size=full) * rng.uniform(0.2, 2.0, size=(n, 1, 1, shape[-1]))
    a, b = a + rng.normal(size=shape[-1]), b + rng.normal(size=shape[-1])
    if relu:
        a, b = np.maximum(a, 0), np.maximum(b, 0)
    return a.astype(np.float32), b.astype(np.float32)


RNG = np.random.default_rng(7)
W_LIN = RNG.normal(size=(12, 5)).astype(np.float32)
W1, W2 = RNG.normal(size=(12, 8)).astype(np.float32), RNG.normal(size=(8, 4)).astype(np.float32)
B1 = RNG.normal(size=8).astype(np.float32)

HEADS = {
    "none": (None, None),
    "linear": (lambda e: e @ W_LIN, linear_head(W_LIN)),
    "relu_mlp": (lambda e: jax.nn.relu(e @ W1) @ W2, mlp_head(W1, W2)),
    "relu_mlp_bias": (lambda e: jax.nn.relu(e @ W1 + B1) @ W2, mlp_head(W1, W2, B1)),
    "affine": (lambda e: e @ W_LIN + 0.5, linear_head(W_LIN)),  # Jacobian ignores the bias
}
#: heads tested for exactness only (the README's table): 1-homogeneous, and not
LEAKY_MLP = lambda e: jax.nn.leaky_relu(e @ W1, 0.1) @ W2  # noqa: E731
TANH = lambda e: jnp.tanh(e @ W_LIN)  # noqa: E731


@pytest.mark.parametrize("similarity", SIMILARITIES)
@pytest.mark.parametrize("head", ["none", "linear", "relu_mlp", "leaky_mlp", "affine", "tanh"])
def test_contributions_add_up_to_similarity(similarity, head):
    # exact: no head (all); linear bias-free and bias-free (leaky-)ReLU MLP (1-homogeneous;
    # cosine/dot); any affine head (euclidean); tanh: first order everywhere
    exact = (
        head in ("none", "linear")
        or (head in ("relu_mlp", "leaky_mlp") and similarity != "euclidean")
        or (head == "affine" and similarity == "euclidean")
    )
    a, b = acts_pair(1, n=6)
    eq = jax.vmap(pool)(a)
    er = jax.vmap(pool)(b)
    g = {"leaky_mlp": LEAKY_MLP, "tanh": TANH}.get(head) or HEADS[head][0]
    s, c = fam_contributions(eq, er, similarity, g)
    assert s.shape == (6,) and c.shape == (6, 12)
    s, total = np.asarray(s, np.float64), np.asarray(c, np.float64).sum(-1)
    if exact:
        np.testing.assert_allclose(total, s, rtol=1e-5, atol=1e-6 * np.abs(s).max())
    else:  # first-order only: documented as such, and visibly not exact here
        assert np.abs(total - s).max() > 1e-3 * np.abs(s).max()


def test_first_order_head_is_documented_not_exact():
    a, b = acts_pair(2, n=6)
    eq, er = jax.vmap(pool)(a), jax.vmap(pool)(b)
    s, c = fam_contributions(eq, er, "cosine", HEADS["relu_mlp_bias"][0])
    assert np.abs(np.asarray(c).sum(-1) - np.asarray(s)).max() > 1e-4


@pytest.mark.parametrize("pooling", POOLINGS)
@pytest.mark.parametrize("similarity", SIMILARITIES)
@pytest.mark.parametrize("normalize", NORMALIZATIONS)
def test_matches_numpy_reference(pooling, similarity, normalize):
    a, b = acts_pair(3)
    got = fam_pairs(a, b, pooling, similarity, normalize, reference_map=True)
    for i in range(a.shape[0]):
        s, c, w, qm, rm = np_fam(a[i], b[i], pooling, similarity, normalize)
        np.testing.assert_allclose(got.similarity[i], s, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got.contributions[i], c, rtol=1e-4, atol=1e-6 * np.abs(c).max())
        np.testing.assert_allclose(got.weights[i], w, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(got.query_map[i], qm, rtol=0, atol=1e-5)
        np.testing.assert_allclose(got.reference_map[i], rm, rtol=0, atol=1e-5)


@pytest.mark.parametrize("similarity", SIMILARITIES)
@pytest.mark.parametrize("head", ["linear", "relu_mlp", "relu_mlp_bias"])
def test_heads_match_numpy_reference(similarity, head):
    fn, np_head = HEADS[head]
    a, b = acts_pair(4)
    got = fam_pairs(a, b, "gap", similarity, "max", head=fn, reference_map=True)
    for i in range(a.shape[0]):
        s, c, w, qm, rm = np_fam(a[i], b[i], "gap", similarity, "max", head=np_head)
        np.testing.assert_allclose(got.similarity[i], s, rtol=1e-5, atol=1e-6 * max(1, abs(s)))
        np.testing.assert_allclose(got.weights[i], w, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(got.query_map[i], qm, rtol=0, atol=1e-5)
        np.testing.assert_allclose(got.reference_map[i], rm, rtol=0, atol=1e-5)


@pytest.mark.parametrize("normalize", NORMALIZATIONS)
@pytest.mark.parametrize("pooling", POOLINGS)
def test_cosine_fam_is_invariant_to_scaling_either_input(normalize, pooling):
    a, b = acts_pair(5, relu=False)  # signed activations: scaling must still commute
    base = fam_pairs(a, b, pooling, "cosine", normalize, reference_map=True)
    for sa, sb in ((3.7, 1.0), (1.0, 0.02), (250.0, 0.5)):
        out = fam_pairs(a * sa, b * sb, pooling, "cosine", normalize, reference_map=True)
        np.testing.assert_allclose(out.similarity, base.similarity, atol=1e-6)
        np.testing.assert_allclose(out.weights, base.weights, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out.query_map, base.query_map, atol=1e-5)
        np.testing.assert_allclose(out.reference_map, base.reference_map, atol=1e-5)


def planted(seed, where_q, where_r, shape=(12, 12, 16), shared=(0, 1, 2, 3)):
    """Background: every channel a weak random field with a per-image gain, so the images'
    embeddings differ. A pattern (channels ``shared``, strong, 2x2 blob) at ``where_q`` in the
    query and ``where_r`` in the reference."""
    rng = np.random.default_rng(seed)
    a = rng.uniform(0, 0.3, size=shape) * rng.uniform(0.2, 1.5, size=shape[-1])
    b = rng.uniform(0, 0.3, size=shape) * rng.uniform(0.2, 1.5, size=shape[-1])
    (i, j), (k, m) = where_q, where_r
    for ch in shared:
        a[i : i + 2, j : j + 2, ch] += 6.0
        b[k : k + 2, m : m + 2, ch] += 6.0
    return a.astype(np.float32), b.astype(np.float32)


@pytest.mark.parametrize("similarity", SIMILARITIES)
@pytest.mark.parametrize("pooling", POOLINGS)
def test_planted_pattern_is_where_both_maps_peak(similarity, pooling):
    where_q, where_r = (2, 8), (9, 3)
    a, b = planted(11, where_q, where_r)
    qm, rm = fam_map(a, b, pooling, similarity, reference_map=True)
    for m, (i, j) in ((np.asarray(qm), where_q), (np.asarray(rm), where_r)):
        pi, pj = np.unravel_index(np.argmax(m), m.shape)
        assert i <= pi < i + 2 and j <= pj < j + 2, (similarity, pooling, (pi, pj), (i, j))
        assert m[i : i + 2, j : j + 2].min() > 0.9


@pytest.mark.parametrize(
    "pooling,similarity,normalize,head",
    list(itertools.product(POOLINGS, SIMILARITIES, NORMALIZATIONS, ["none", "relu_mlp_bias"])),
)
def test_zero_and_constant_activations_are_finite(pooling, similarity, normalize, head):
    fn = HEADS[head][0]
    zeros = np.zeros((7, 9, 12), np.float32)
    const = np.full((7, 9, 12), 2.5, np.float32)
    rnd = acts_pair(6, n=1)[0][0]
    q = np.stack([zeros, zeros, const, const, rnd])
    r = np.stack([zeros, rnd, const, rnd, zeros])
    out = fam_pairs(q, r, pooling, similarity, normalize, fn, reference_map=True)
    for arr in out:
        assert np.all(np.isfinite(np.asarray(arr)))
    for m in (out.query_map, out.reference_map):
        assert float(np.min(m)) >= 0.0 and float(np.max(m)) <= 1.0
    # a constant map (zero or constant activations) is 0, not NaN and not noise
    np.testing.assert_array_equal(out.query_map[:4], 0.0)
    # a single pair through the per-pair function gives the same
    one = fam_pair(q[4], r[4], pooling, similarity, normalize, fn, reference_map=True)
    np.testing.assert_allclose(one.query_map, out.query_map[4], atol=1e-6)


def test_normalize_guards():
    z = jnp.zeros(5)
    for mode in ("none", "max", "sum"):
        np.testing.assert_array_equal(normalize_weights(z, mode), np.zeros(5))
    np.testing.assert_array_equal(normalize_weights(jnp.full(5, 0.3), "minmax"), np.ones(5))
    np.testing.assert_allclose(normalize_weights(z, "softmax"), np.full(5, 0.2), atol=1e-7)
    c = jnp.array([[1.0, -4.0, 2.0], [0.0, 0.5, 0.25]])
    np.testing.assert_allclose(normalize_weights(c, "max"), [[0.25, -1, 0.5], [0, 1, 0.5]])
    np.testing.assert_allclose(normalize_weights(c, "sum")[0], np.array([1, -4, 2]) / 7)
    np.testing.assert_allclose(normalize_weights(c, "minmax")[0], [5 / 6, 0, 1])


def test_constant_map_is_zero_not_nan():
    m = fam_sample_map(jnp.ones((4, 4, 3)), jnp.ones(3))
    np.testing.assert_array_equal(m, np.zeros((4, 4)))


def test_euclidean_default_normalisation_is_minmax():
    a, b = acts_pair(8)
    default = fam_pairs(a, b, similarity="euclidean")
    explicit = fam_pairs(a, b, similarity="euclidean", normalize="minmax")
    np.testing.assert_array_equal(default.weights, explicit.weights)
    assert np.ptp(np.asarray(default.query_map)) > 0
    # with "max", weights are <= 0 and the ReLU map of non-negative activations vanishes
    zero = fam_pairs(a, b, similarity="euclidean", normalize="max")
    assert np.asarray(zero.weights).max() <= 0 and np.asarray(zero.query_map).max() == 0


def test_similarity_matrix_equals_pairwise_scores():
    rng = np.random.default_rng(9)
    zq, zg = rng.normal(size=(4, 6)).astype(np.float32), rng.normal(size=(11, 6)).astype(np.float32)
    for sim in SIMILARITIES:
        mat = np.asarray(similarity_matrix(zq, zg, sim))
        np.testing.assert_allclose(
            mat[1, 3], similarity_score(zq[1], zg[3], sim), rtol=1e-5, atol=1e-6
        )
        ref = np.array([[np_contributions(q, g, sim)[0] for g in zg] for q in zq])
        np.testing.assert_allclose(mat, ref, rtol=1e-5, atol=1e-5)


def test_jit_leading_axes_and_top_level_exports():
    a, b = acts_pair(10, n=6)
    a, b = a.reshape(2, 3, *a.shape[1:]), b.reshape(2, 3, *b.shape[1:])
    jitted = jax.jit(fam_map, static_argnames=("pooling", "similarity", "normalize"))
    got = np.asarray(jitted(a, b, similarity="dot", normalize="sum"))
    assert got.shape == (2, 3, 7, 9)
    eager = np.asarray(fastfem.fam_map(a, b, similarity="dot", normalize="sum"))
    np.testing.assert_allclose(got, eager, atol=1e-6)
    assert fastfem.fam_contributions is fam_contributions


def test_bf16_activations_accumulate_in_float32():
    a, b = acts_pair(12)
    qa, qb = jnp.asarray(a, jnp.bfloat16), jnp.asarray(b, jnp.bfloat16)
    out = fam_pairs(qa, qb)
    assert out.query_map.dtype == jnp.float32 and out.weights.dtype == jnp.float32
    ref = fam_pairs(np.asarray(qa.astype(jnp.float32)), np.asarray(qb.astype(jnp.float32)))
    np.testing.assert_allclose(out.query_map, ref.query_map, atol=1e-6)


def test_bad_options_and_shapes():
    a, b = acts_pair(13)
    with pytest.raises(ValueError, match=r"unknown similarity 'l1'; expected one of"):
        fam_map(a, b, similarity="l1")
    with pytest.raises(ValueError, match="unknown pooling 'avg'"):
        fam_map(a, b, pooling="avg")
    with pytest.raises(ValueError, match="unknown normalize 'l2'"):
        fam_map(a, b, normalize="l2")
    with pytest.raises(ValueError, match="same leading"):
        fam_map(a, b[:2])
    with pytest.raises(ValueError, match=r"same shape \(\.\.\., C\)"):
        fam_contributions(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match=r"head must map ONE pooled embedding"):
        fam_contributions(np.ones(3), np.ones(3), head=lambda e: jnp.outer(e, e))
