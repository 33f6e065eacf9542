"""fastfem's FAM (JAX) == the eager-TensorFlow reference (benchmarks/peers/fam_tf.py) to 1e-5.

One subprocess with ``KERAS_BACKEND=tensorflow`` loads the same saved model and heads, computes
the activations of the same inputs, and runs the TF reference for every option combination
(pooling x similarity x normalize x head) on them, plus the end-to-end ``FamTF.explain`` (with
the bilinear resize) for a few combinations. This process computes the same with the JAX kernel
(eagerly, one call per combination: no compile per option) and with the jitted ``fastfem.FAM``.
"""

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import keras
import numpy as np
import pytest
from fastfem.converters import from_keras
from fastfem.converters.head import build_head
from tiny_models import randomize_weights

import fastfem
from fastfem.kernels.fam import (
    NORMALIZATIONS,
    POOLINGS,
    SIMILARITIES,
    FamPair,
    fam_contributions,
    fam_pairs,
    fam_sample_map,
    normalize_weights,
    pool,
)

ROOT = Path(__file__).parents[2]
LAYER = "relu_b"
HEADS = ("none", "linear", "mlp")
END_TO_END = [  # (pooling, similarity, normalize, head)
    ("gap", "cosine", "max", "none"),
    ("gmp", "dot", "sum", "linear"),
    ("gap", "euclidean", "minmax", "mlp"),
    ("gmp", "cosine", "softmax", "mlp"),
]

TF_SCRIPT = r"""
import itertools, json, os, sys, time
t0 = time.perf_counter()
sys.path.insert(0, sys.argv[1])
d = sys.argv[2]
import numpy as np
import keras
assert keras.backend.backend() == "tensorflow"
import tensorflow as tf
from benchmarks.peers.fam_tf import (
    FamTF, tf_contributions, tf_maps, tf_normalize, tf_pool, POOLINGS, SIMILARITIES,
    NORMALIZATIONS,
)
t_import = time.perf_counter() - t0
model = keras.saving.load_model(os.path.join(d, "model.keras"), compile=False)
heads = {"none": None}
for name in ("linear", "mlp"):
    heads[name] = keras.saving.load_model(os.path.join(d, name + ".keras"), compile=False)
q, r = np.load(os.path.join(d, "q.npy")), np.load(os.path.join(d, "r.npy"))
t_load = time.perf_counter() - t0
features = keras.Model(model.inputs, model.get_layer("relu_b").output)
aq, ar = features(q), features(r)
out = {"aq": aq.numpy(), "ar": ar.numpy()}
for pooling, sim, head in itertools.product(POOLINGS, SIMILARITIES, heads):
    s, c = tf_contributions(tf_pool(aq, pooling), tf_pool(ar, pooling), sim, heads[head])
    for norm in NORMALIZATIONS:  # the formula of tf_fam, contributions shared across norms
        w = tf_normalize(c, norm)
        res = dict(similarity=s, contributions=c, weights=w, query_map=tf_maps(aq, w),
                   reference_map=tf_maps(ar, w))
        for k, v in res.items():
            out[f"{pooling}-{sim}-{norm}-{head}-{k}"] = v.numpy()
t_combos = time.perf_counter() - t0
for pooling, sim, norm, head in json.loads(sys.argv[3]):
    fam = FamTF(model, "relu_b", pooling, sim, heads[head], norm, batch_size=4)
    qm, rm = fam.explain(q, r, reference_maps=True)
    out[f"e2e-{pooling}-{sim}-{norm}-{head}-q"] = qm
    out[f"e2e-{pooling}-{sim}-{norm}-{head}-r"] = rm
    out[f"e2e-{pooling}-{sim}-{norm}-{head}-s"] = fam.last_similarities
np.savez(os.path.join(d, "tf.npz"), **out)
t_all = time.perf_counter() - t0
times = {"import": t_import, "load": t_load, "combos": t_combos, "all": t_all}
print(json.dumps({"n": len(out), "seconds": times}))
"""


def make_heads(channels: int):
    inp = keras.Input((channels,))
    linear = keras.Model(inp, keras.layers.Dense(5, use_bias=False)(inp), name="linear_head")
    inp = keras.Input((channels,))
    hidden = keras.layers.Dense(12, activation="relu")(inp)
    mlp = keras.Model(inp, keras.layers.Dense(6)(hidden), name="mlp_head")  # biases: 1st order
    return {"linear": randomize_weights(linear, 3), "mlp": randomize_weights(mlp, 4, scale=0.5)}


@pytest.fixture(scope="module")
def parity(tmp_path_factory, cnn32):
    pytest.importorskip("tensorflow")
    d = tmp_path_factory.mktemp("fam_parity")
    model = cnn32  # tiny_models.small_cnn((32, 32, 3)), shared with the other tests
    heads = make_heads(16)
    model.save(d / "model.keras")
    for name, head in heads.items():
        head.save(d / f"{name}.keras")
    rng = np.random.default_rng(3)
    # per-image contrast and offset, so the pairs' embeddings differ clearly
    q = rng.random((6, 32, 32, 3), np.float32) * rng.uniform(0.3, 2, (6, 1, 1, 3)).astype("f4")
    r = rng.random((6, 32, 32, 3), np.float32) * rng.uniform(0.3, 2, (6, 1, 1, 3)).astype("f4")
    np.save(d / "q.npy", q)
    np.save(d / "r.npy", r)
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(
        [sys.executable, "-c", TF_SCRIPT, str(ROOT), str(d), json.dumps(END_TO_END)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    print(proc.stdout.strip().splitlines()[-1])
    return model, heads, q, r, dict(np.load(d / "tf.npz"))


@pytest.mark.slow
def test_kernel_matches_eager_tf_for_every_option_combination(parity):
    model, heads, q, r, tf_out = parity
    ext = from_keras(model, layers=LAYER)
    aq, ar = ext.apply(ext.params, q).activations[0], ext.apply(ext.params, r).activations[0]
    # the two backends' activations agree first (else the comparison below means nothing)
    np.testing.assert_allclose(aq, tf_out["aq"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ar, tf_out["ar"], rtol=1e-5, atol=1e-5)
    jax_heads = {"none": None, **{k: build_head(h, 16) for k, h in heads.items()}}
    # the kernel's functions, each compiled once for these shapes (options are static)
    weights_fn = jax.jit(normalize_weights, static_argnums=1)
    maps_fn = jax.jit(jax.vmap(fam_sample_map))
    worst = {}
    for pooling, sim, head in itertools.product(POOLINGS, SIMILARITIES, HEADS):
        h = jax_heads[head]
        fn = None if h is None else (lambda e, h=h: h.apply(h.params, e))
        # fam_pairs' formula, step by step: contributions shared by the normalisations
        eq, er = jax.vmap(pool, (0, None))(aq, pooling), jax.vmap(pool, (0, None))(ar, pooling)
        s, c = fam_contributions(eq, er, sim, fn)
        for norm in NORMALIZATIONS:
            w = weights_fn(c, norm)
            got = FamPair(s, c, w, maps_fn(aq, w), maps_fn(ar, w))
            key = f"{pooling}-{sim}-{norm}-{head}"
            check_pair(got, {k: tf_out[f"{key}-{k}"] for k in got._fields}, key, worst)
    assert len(worst) == 2 * 2 * 3 * 5 * 3
    print("max |JAX - TF| over all maps:", max(worst.values()))
    # and the batched public kernel on one combination, for good measure
    got = fam_pairs(aq, ar, "gmp", "dot", "sum", None, reference_map=True)
    check_pair(got, {k: tf_out[f"gmp-dot-sum-none-{k}"] for k in got._fields}, "fam_pairs", worst)


def check_pair(got, want, key, worst):
    if True:
        s_scale = max(1.0, np.abs(want["similarity"]).max())
        np.testing.assert_allclose(
            got.similarity, want["similarity"], rtol=1e-5, atol=1e-5 * s_scale
        )
        w_scale = max(1.0, np.abs(want["weights"]).max())
        np.testing.assert_allclose(got.weights, want["weights"], rtol=0, atol=1e-5 * w_scale)
        for m in ("query_map", "reference_map"):
            err = float(np.abs(np.asarray(getattr(got, m)) - want[m]).max())
            worst[f"{key}-{m}"] = err
            assert err <= 1e-5, (key, m, err)


@pytest.mark.slow
def test_explainer_matches_eager_tf_end_to_end(parity):
    model, heads, q, r, tf_out = parity
    for pooling, sim, norm, head in END_TO_END:
        fam = fastfem.FAM(
            model,
            conv_layer=LAYER,
            pooling=pooling,
            similarity=sim,
            head=heads.get(head),
            normalize=norm,
            batch_size=4,
        )
        qm, rm = fam.explain(q, r, reference_maps=True)
        key = f"e2e-{pooling}-{sim}-{norm}-{head}"
        assert qm.shape == tf_out[f"{key}-q"].shape == (6, 32, 32, 1)
        assert np.ptp(tf_out[f"{key}-q"]) > 0.5  # maps with structure
        np.testing.assert_allclose(qm, tf_out[f"{key}-q"], rtol=0, atol=1e-5)
        np.testing.assert_allclose(rm, tf_out[f"{key}-r"], rtol=0, atol=1e-5)
        s = tf_out[f"{key}-s"]
        np.testing.assert_allclose(
            fam.last_similarities, s, rtol=1e-5, atol=1e-5 * max(1, np.abs(s).max())
        )
