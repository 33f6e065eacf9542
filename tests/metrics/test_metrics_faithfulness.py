"""Faithfulness metrics: hand-computed cases with a linear model, curves against a NumPy
reference, memory chunking, degenerate maps, and parity with Xplique (subprocess, TF backend)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from fastfem.converters import Features, from_fn

from fastfem.metrics import faithfulness as F
from fastfem.metrics.localisation import normalize_map

TESTS_DIR = Path(__file__).parents[1] / "support"


def linear_extractor(h=6, w=6, c=2, k=3, seed=0):
    """A 'model' whose class scores are linear in the pixels: out_k = sum(x * W_k)."""
    weights = np.random.default_rng(seed).random((h, w, c, k)).astype(np.float32) / (h * w * c)

    def apply(p, x):
        return Features(activations=(x,), output=jnp.einsum("nhwc,hwck->nk", x, p))

    return from_fn(apply, jnp.asarray(weights), (h, w, c), has_output=True), weights


def test_average_drop_and_increase_formulas():
    y = jnp.array([0.8, 0.5, 0.5, 0.0, -1.0])
    o = jnp.array([0.2, 0.6, 0.5, 0.1, -2.0])
    ad = np.asarray(F.average_drop(y, o))
    np.testing.assert_allclose(ad[:3], [75.0, 0.0, 0.0])
    assert np.isnan(ad[3]) and np.isnan(ad[4])  # Y <= 0: undefined
    np.testing.assert_array_equal(F.increase_in_confidence(y, o), [0, 100, 0, 100, 0])


def test_drop_and_increase_with_a_linear_model():
    ext, weights = linear_extractor()
    scorer = F.class_scorer(ext)
    rng = np.random.default_rng(1)
    x = rng.random((5, 6, 6, 2), dtype=np.float32)
    maps = rng.random((5, 6, 6), dtype=np.float32)
    saliency = jax.vmap(normalize_map)(maps)
    scores, target = F.drop_and_increase(scorer, ext.params, x, saliency, -jnp.ones(5, jnp.int32))
    out = np.einsum("nhwc,hwck->nk", x, weights)
    t = out.argmax(-1)
    np.testing.assert_array_equal(target, t)
    lo, hi = maps.min(axis=(1, 2), keepdims=True), maps.max(axis=(1, 2), keepdims=True)
    masked = x * ((maps - lo) / (hi - lo))[..., None]
    y = out[np.arange(5), t]
    o = np.einsum("nhwc,hwck->nk", masked, weights)[np.arange(5), t]
    np.testing.assert_allclose(scores["base_score"], y, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(scores["masked_score"], o, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(
        scores["average_drop"], np.maximum(y - o, 0) / y * 100, rtol=1e-4, atol=1e-3
    )
    np.testing.assert_array_equal(scores["increase_in_confidence"], (o > y) * 100.0)
    # given targets are used as is
    given = jnp.array([2, 1, 0, 2, 1], jnp.int32)
    _, t2 = F.drop_and_increase(scorer, ext.params, x, saliency, given)
    np.testing.assert_array_equal(t2, given)


def test_constant_map_leaves_the_image_unchanged():
    ext, _ = linear_extractor()
    scorer = F.class_scorer(ext)
    x = np.random.default_rng(2).random((3, 6, 6, 2), dtype=np.float32)
    saliency = jax.vmap(normalize_map)(jnp.full((3, 6, 6), 0.3))
    scores, _ = F.drop_and_increase(scorer, ext.params, x, saliency, -jnp.ones(3, jnp.int32))
    np.testing.assert_array_equal(scores["average_drop"], 0.0)
    np.testing.assert_array_equal(scores["increase_in_confidence"], 0.0)


def test_nonfinite_map_gives_nan_scores():
    ext, _ = linear_extractor()
    scorer = F.class_scorer(ext)
    x = np.random.default_rng(2).random((2, 6, 6, 2), dtype=np.float32)
    maps = np.random.default_rng(3).random((2, 6, 6), dtype=np.float32)
    maps[1, 2, 2] = np.nan
    saliency = jax.vmap(normalize_map)(maps)
    scores, t = F.drop_and_increase(scorer, ext.params, x, saliency, -jnp.ones(2, jnp.int32))
    for name in ("average_drop", "increase_in_confidence"):
        assert np.isfinite(scores[name][0]) and np.isnan(scores[name][1]), name
    curve = F.perturbation_curves(scorer, ext.params, x, maps, t, 2, "deletion")
    assert np.all(np.isfinite(curve[0])) and np.all(np.isnan(curve[1]))


def test_ranks_and_step_counts():
    m = jnp.array([[0.5, 0.9], [0.5, 0.1]])
    np.testing.assert_array_equal(F.saliency_ranks(m), [[1, 0], [2, 3]])  # tie: raster order
    np.testing.assert_array_equal(F.step_counts(36, 4), [0, 9, 18, 27, 36])
    np.testing.assert_array_equal(F.step_counts(10, 4), [0, 2, 5, 7, 10])  # floor(k P / T)
    np.testing.assert_allclose(F.curve_auc(jnp.array([1.0, 0.5, 0.0])), 0.5)
    np.testing.assert_allclose(F.curve_auc(jnp.array([[1.0, 1.0], [0.0, 1.0]])), [1.0, 0.5])
    with pytest.raises(ValueError, match="steps"):
        F.step_counts(10, 0)


def numpy_curves(x, maps, weights, target, steps, mode, baseline=0.0):
    """Reference: flip the top floor(kP/T) pixels (stable descending order), score linearly."""
    n, h, w, _ = x.shape
    p = h * w
    out = np.zeros((n, steps + 1))
    for i in range(n):
        order = np.argsort(-maps[i].reshape(-1), kind="stable")
        base = np.full_like(x[i], baseline) if baseline != "mean" else x[i].mean((0, 1)) + 0 * x[i]
        for k in range(steps + 1):
            top = np.zeros(p, bool)
            top[order[: k * p // steps]] = True
            top = top.reshape(h, w, 1)
            img = np.where(top, base, x[i]) if mode == "deletion" else np.where(top, x[i], base)
            out[i, k] = np.einsum("hwc,hwc->", img, weights[..., target[i]])
    return out


def test_curves_match_a_numpy_reference_and_do_not_depend_on_chunking():
    ext, weights = linear_extractor()
    scorer = F.class_scorer(ext)
    rng = np.random.default_rng(3)
    x = rng.random((4, 6, 6, 2), dtype=np.float32)
    maps = rng.random((4, 6, 6), dtype=np.float32)
    target = jnp.array([0, 1, 2, 0], jnp.int32)
    steps = 5  # 36 pixels: floor(k * 36 / 5) = 0, 7, 14, 21, 28, 36
    cases = [("deletion", 0.0, 1), ("deletion", 0.0, 7), ("insertion", 0.0, 1000)]
    cases += [("deletion", 0.5, 256), ("insertion", "mean", 256)]
    for mode, baseline, mi in cases:  # one step per pass, uneven groups, all at once
        ref = numpy_curves(x, maps, weights, np.asarray(target), steps, mode, baseline)
        curve = F.perturbation_curves(
            scorer, ext.params, x, maps, target, steps, mode, baseline, max_images=mi
        )
        np.testing.assert_allclose(curve, ref, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(
            F.curve_auc(curve), np.trapezoid(ref, dx=1 / steps, axis=1), rtol=1e-5
        )
    # deletion starts at the clean score, insertion ends there
    full = np.einsum("nhwc,hwck->nk", x, weights)[np.arange(4), np.asarray(target)]
    dele = F.perturbation_curves(scorer, ext.params, x, maps, target, steps, "deletion")
    np.testing.assert_allclose(dele[:, 0], full, rtol=1e-5, atol=1e-7)


def test_curves_jit_under_a_sharding_friendly_layout():
    ext, _ = linear_extractor()
    scorer = F.class_scorer(ext, activation="softmax")
    x = np.random.default_rng(4).random((3, 6, 6, 2), dtype=np.float32)
    maps = np.random.default_rng(5).random((3, 6, 6), dtype=np.float32)

    @jax.jit
    def run(p, x, m):
        t = jnp.zeros(3, jnp.int32)
        return F.perturbation_curves(scorer, p, x, m, t, 6, "insertion", max_images=4)

    out = run(ext.params, x, maps)
    assert out.shape == (3, 7) and np.all(np.isfinite(out))
    np.testing.assert_allclose(out[:, -1], jax.nn.softmax(ext.apply(ext.params, x).output)[:, 0])


def test_scorer_errors():
    ext, _ = linear_extractor()
    no_out = from_fn(lambda p, x: x, (), (6, 6, 2))
    with pytest.raises(ValueError, match="include_output"):
        F.class_scorer(no_out)
    with pytest.raises(ValueError, match="activation"):
        F.class_scorer(ext, activation="tanh")
    with pytest.raises(ValueError, match="baseline"):
        F.baseline_image(jnp.zeros((2, 2, 1)), "blur")


XPLIQUE_SCRIPT = r"""
import json, os, sys
import numpy as np
import keras
assert keras.backend.backend() == "tensorflow"
from xplique.metrics import AverageDropMetric, AverageIncreaseMetric, Deletion, Insertion
d = sys.argv[1]
model = keras.saving.load_model(os.path.join(d, "model.keras"), compile=False)
x = np.load(os.path.join(d, "x.npy")); maps = np.load(os.path.join(d, "maps.npy"))
y = np.load(os.path.join(d, "onehot.npy"))
steps = int(sys.argv[2])
out = {}
ad = AverageDropMetric(model, x, y, batch_size=16, activation="softmax")
ai = AverageIncreaseMetric(model, x, y, batch_size=16, activation="softmax")
out["ad"] = np.asarray(ad.detailed_evaluate(x, y, maps)).tolist()
out["ic"] = np.asarray(ai.detailed_evaluate(x, y, maps)).tolist()
for name, cls in (("deletion", Deletion), ("insertion", Insertion)):
    metric = cls(model, x, y, batch_size=16, steps=steps, activation="softmax")
    out[name + "_auc"] = float(metric.evaluate(maps))
    out[name + "_curve"] = [float(v) for v in metric.detailed_evaluate(maps).values()]
print(json.dumps(out))
"""


@pytest.mark.slow
def test_average_drop_increase_deletion_insertion_match_xplique(tmp_path):
    """Xplique (Keras on TensorFlow, subprocess) and fastfem on the same model, maps, targets.

    Definitions coincide for non-negative, non-constant maps: Xplique's |.| is then a no-op
    and its min-max mask equals ours; its AD is a fraction, ours a percentage.
    """
    from tiny_models import small_cnn

    import fastfem

    model = small_cnn((16, 16, 3), seed=3)
    model.save(tmp_path / "model.keras")
    rng = np.random.default_rng(7)
    n = 12
    x = rng.random((n, 16, 16, 3), dtype=np.float32)
    maps = rng.random((n, 16, 16, 1), dtype=np.float32)
    labels = rng.integers(0, 3, n)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "maps.npy", maps)
    np.save(tmp_path / "onehot.npy", np.eye(3, dtype=np.float32)[labels])
    steps = 8
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run(
        [sys.executable, "-c", XPLIQUE_SCRIPT, str(tmp_path), str(steps)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ref = json.loads(proc.stdout.strip().splitlines()[-1])

    result = fastfem.evaluate(
        None,
        x,
        targets=labels,
        maps=maps,
        model=model,
        activation="softmax",
        steps=steps,
        normalize="abs_minmax",  # Xplique's mask; equal to the default here (maps >= 0)
    )
    np.testing.assert_allclose(
        result.per_sample["average_drop"], np.asarray(ref["ad"]) * 100, rtol=1e-4, atol=1e-4
    )
    np.testing.assert_array_equal(
        result.per_sample["increase_in_confidence"], np.asarray(ref["ic"]) * 100
    )
    for name in ("deletion", "insertion"):
        np.testing.assert_allclose(
            result.curves[name].mean(axis=0), ref[f"{name}_curve"], rtol=1e-4, atol=1e-6
        )
        np.testing.assert_allclose(
            result.means[f"{name}_auc"], ref[f"{name}_auc"], rtol=1e-4, atol=1e-6
        )
    default = fastfem.evaluate(
        None,
        x,
        targets=labels,
        maps=maps,
        model=model,
        activation="softmax",
        metrics=["average_drop"],
    )
    np.testing.assert_allclose(
        default.per_sample["average_drop"], result.per_sample["average_drop"], rtol=1e-5
    )
