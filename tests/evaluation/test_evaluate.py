"""`fastfem.evaluate` / `Evaluator` / ``fastfem evaluate``: the fused step gives the same numbers
as the per-sample metric functions, for classifiers and for FAM's similarity scores."""

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from fastfem.converters import load
from subprocess_runs import run_json, simulated_devices

import fastfem
from fastfem.cli import main as cli_main
from fastfem.evaluation import FAITHFULNESS_METRICS, LOCALISATION_METRICS, METRICS, Evaluator
from fastfem.metrics import faithfulness as F
from fastfem.metrics import localisation as L

TESTS_DIR = Path(__file__).parents[1] / "support"
N = 10


@pytest.fixture(scope="module")
def data(cnn32, images32):
    x = images32[:N]
    rng = np.random.default_rng(0)
    x0 = rng.integers(0, 20, N)
    y0 = rng.integers(0, 20, N)
    boxes = np.stack([x0, y0, x0 + rng.integers(4, 13, N), y0 + rng.integers(4, 13, N)], 1)
    maps = fastfem.FEM(cnn32, conv_layer="relu_b").explain(x)
    r, c = np.unravel_index(np.argmax(maps[0, ..., 0]), (32, 32))
    far = (31 if c < 16 else 0, 31 if r < 16 else 0)
    boxes[0] = (*far, far[0] + 1, far[1] + 1)  # one pixel far from the peak
    boxes[1] = (0, 0, 32, 32)  # the whole image
    maps[2] = 0.25  # constant map
    probs = np.asarray(jax.nn.softmax(cnn32(x)))
    return x, boxes, maps, probs


def test_all_metrics_match_the_metric_functions(cnn32, data):
    x, boxes, maps, probs = data
    res = fastfem.evaluate(
        None, x, boxes=boxes, maps=maps, model=cnn32, activation="softmax", steps=4
    )
    assert tuple(res.per_sample) == METRICS
    for name, v in res.per_sample.items():
        assert v.shape == (N,) and v.dtype == np.float32 and np.all(np.isfinite(v)), name
        assert res.means[name] == pytest.approx(float(np.mean(v)), rel=1e-6)
    loc = L.localisation_metrics(maps, boxes)
    for name in ("pointing_game", "energy_pointing_game", "iou"):
        np.testing.assert_allclose(res.per_sample[name], getattr(loc, name), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(res.per_sample["iou_box"], L.iou_box_batch(maps, boxes))
    assert res.per_sample["pointing_game"][0] == 0 and res.per_sample["pointing_game"][1] == 1
    assert res.per_sample["energy_pointing_game"][1] == pytest.approx(1.0)
    area = (boxes[2, 2] - boxes[2, 0]) * (boxes[2, 3] - boxes[2, 1]) / 32**2
    assert res.per_sample["energy_pointing_game"][2] == pytest.approx(area)  # constant map
    assert res.per_sample["average_drop"][2] == 0.0  # x * 1 = x
    # faithfulness: predicted class targets, scores from the same model
    np.testing.assert_array_equal(res.targets, probs.argmax(-1))
    np.testing.assert_allclose(res.base_scores, probs.max(-1), rtol=1e-5, atol=1e-7)
    scorer = F.class_scorer(load(cnn32, include_output=True), "softmax")
    sal = jax.vmap(L.normalize_map)(maps[..., 0])
    scores, target = F.drop_and_increase(scorer, scorer.params, x, sal, -jnp.ones(N, jnp.int32))
    for name in ("average_drop", "increase_in_confidence"):
        np.testing.assert_allclose(res.per_sample[name], scores[name], rtol=1e-5, atol=1e-5)
    curve = F.perturbation_curves(scorer, scorer.params, x, maps[..., 0], target, 4, "deletion")
    np.testing.assert_allclose(res.curves["deletion"], curve, rtol=1e-5, atol=1e-6)
    assert res.curves["insertion"].shape == (N, 5)
    assert res.summary()["n"] == N and "explain" not in res.seconds


def test_targets_and_scores(cnn32, data):
    x, _, maps, probs = data
    ev = Evaluator(None, ["average_drop"], model=cnn32, activation="softmax")
    labels = np.arange(N) % 3
    by_index = ev(x, targets=labels, maps=maps)
    by_onehot = ev(x, targets=np.eye(3)[labels], maps=maps)
    np.testing.assert_array_equal(by_index.targets, labels)
    np.testing.assert_array_equal(
        by_onehot.per_sample["average_drop"], by_index.per_sample["average_drop"]
    )
    # probabilities down to 1e-19: a relative bound alone fails on any other x86-64 CPU
    np.testing.assert_allclose(
        by_index.base_scores, probs[np.arange(N), labels], rtol=1e-5, atol=1e-7
    )
    assert len(ev._runners) == 1  # same shapes: compiled once
    # logits (no activation): non-positive base scores give NaN average drop, finite means
    raw = fastfem.evaluate(None, x, maps=maps, model=cnn32, metrics=["average_drop"])
    ad = raw.per_sample["average_drop"]
    logits = np.asarray(cnn32(x)).max(-1)
    np.testing.assert_array_equal(np.isnan(ad), logits <= 0)


def test_explainer_maps_feature_resolution_and_mask_boxes(cnn32, data):
    x, boxes, _, _ = data
    fem = fastfem.FEM(cnn32, conv_layer="relu_b")
    res = fastfem.evaluate(fem, x, boxes=boxes, metrics=list(LOCALISATION_METRICS))
    assert "explain" in res.seconds and res.targets is None
    small = fem.explain(x, resize=False)  # (N, 15, 15): resized bilinearly in the step
    masks = np.asarray(L.box_masks(jnp.asarray(boxes), 32, 32))
    res_small = fastfem.evaluate(None, x, boxes=masks, maps=small, metrics=["energy_pointing_game"])
    from fastfem.kernels.resize import resize_matrices

    rh, rw = resize_matrices((15, 15), (32, 32), "bilinear")
    up = np.einsum("Hh,nhw,Ww->nHW", rh, small, rw)
    np.testing.assert_allclose(
        res_small.per_sample["energy_pointing_game"],
        L.localisation_metrics(up, masks).energy_pointing_game,
        rtol=1e-5,
    )


def test_metric_selection_and_errors(cnn32, data):
    x, boxes, maps, _ = data
    only_faith = fastfem.evaluate(None, x, maps=maps, model=cnn32, steps=2)
    assert tuple(only_faith.per_sample) == FAITHFULNESS_METRICS
    only_loc = fastfem.evaluate(None, x, boxes=boxes, maps=maps)  # no model: localisation
    assert tuple(only_loc.per_sample) == LOCALISATION_METRICS
    # FEM keeps its model: with boxes, the default is every metric
    everything = fastfem.evaluate(fastfem.FEM(cnn32), x, boxes=boxes, steps=2)
    assert tuple(everything.per_sample) == LOCALISATION_METRICS + FAITHFULNESS_METRICS
    with pytest.raises(ValueError, match="nothing to evaluate"):
        fastfem.evaluate(None, x, maps=maps)
    # an explainer over a bare extractor (no model output) cannot be scored without model=
    bare = fastfem.FEM(fastfem.converters.from_keras(cnn32, layers="relu_b"))
    with pytest.raises(ValueError, match="the explainer's model .* pass model="):
        fastfem.evaluate(bare, x, metrics=["average_drop"])
    with pytest.raises(ValueError, match="^model= is a FeatureExtractor without"):
        fastfem.evaluate(None, x, maps=maps, model=bare.extractor, metrics=["average_drop"])
    with pytest.raises(ValueError, match="unknown metric"):
        fastfem.evaluate(None, x, boxes=boxes, maps=maps, metrics=["accuracy"])
    with pytest.raises(ValueError, match="need boxes"):
        fastfem.evaluate(None, x, maps=maps, metrics=["iou"])
    with pytest.raises(ValueError, match="boxes must be"):
        fastfem.evaluate(None, x, boxes=boxes[:, :3], maps=maps, metrics=["iou"])
    with pytest.raises(ValueError, match="maps must be"):
        fastfem.evaluate(None, x, boxes=boxes, maps=maps[:3], metrics=["iou"])


def test_fam_is_scored_by_similarity_to_its_reference(cnn32, images32):
    x, refs = images32[:6], images32[6:12]
    fam = fastfem.FAM(cnn32, conv_layer="relu_b")
    res = fastfem.evaluate(
        fam,
        x,
        targets=refs,
        metrics=["average_drop", "increase_in_confidence", "insertion_auc"],
        steps=3,
    )
    assert res.config["score"].startswith("cosine similarity")
    # the clean score is the pair's similarity as FAM computed it
    np.testing.assert_allclose(res.base_scores, fam.last_similarities, rtol=1e-5, atol=1e-6)
    assert res.targets is None and res.curves["insertion"].shape == (6, 4)
    # the last insertion step is the clean query: its similarity again
    np.testing.assert_allclose(
        res.curves["insertion"][:, -1], fam.last_similarities, rtol=1e-5, atol=1e-6
    )
    with pytest.raises(ValueError, match="reference images"):
        fastfem.evaluate(fam, x, metrics=["average_drop"])


def test_baselines(cnn32, data):
    x, boxes, _, _ = data
    uniform = fastfem.metrics.UniformMap().explain(x)
    assert uniform.shape == (N, 32, 32, 1)
    mean = fastfem.explainers.MeanActivation(cnn32, conv_layer="relu_b").explain(x)
    acts = load(cnn32, layers="relu_b").apply(load(cnn32, layers="relu_b").params, x).activations[0]
    assert mean.shape == (N, 32, 32, 1)
    np.testing.assert_allclose(
        mean.mean(axis=(1, 2, 3)), np.asarray(acts).mean(axis=(1, 2, 3)), rtol=0.2
    )
    res = fastfem.evaluate(fastfem.metrics.UniformMap(), x, boxes=boxes, model=cnn32, steps=2)
    area = (
        np.clip(boxes[:, 2] - boxes[:, 0], 0, None)
        * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
        / 32**2
    )
    for name in ("pointing_game", "energy_pointing_game", "iou", "iou_box"):
        np.testing.assert_allclose(res.per_sample[name], area, rtol=1e-5, atol=1e-6, err_msg=name)
    assert np.all(res.per_sample["increase_in_confidence"] == 0)


def test_cli_evaluate(tmp_path):
    out = tmp_path / "ev"
    argv = ["evaluate", "--method", "uniform", "--limit", "6", "--quiet", "--out", str(out)]
    metrics = "pointing_game,iou_box,average_drop,increase_in_confidence"
    assert cli_main([*argv, "--metrics", metrics]) == 0
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["images"] == 6 and summary["boxes"] is True
    assert list(summary["means"]) == metrics.split(",")
    assert summary["means"]["increase_in_confidence"] == 0.0
    assert summary["means"]["pointing_game"] == pytest.approx(summary["means"]["iou_box"])
    lines = (out / "per_sample.csv").read_text().splitlines()
    assert lines[0] == "id," + metrics and len(lines) == 7 and lines[1].startswith("test-00000,")
    assert cli_main([*argv, "--metrics", "nope"]) == 2
    # a method: explained and scored in one fused step, its --preprocess inside, the same
    # numbers as explaining first on the same preprocessing extractor
    fem = ["evaluate", "--limit", "6", "--quiet", "--out", str(tmp_path / "fem")]
    assert cli_main([*fem, "--metrics", "average_drop,deletion_auc"]) == 0
    summary = json.loads((tmp_path / "fem" / "metrics.json").read_text())
    assert summary["config"]["fused"] and "explain" not in summary["seconds"]
    from fastfem.explainers.registry import make_explainer
    from fastfem.sample import MODEL_PATH, generate

    apart = make_explainer(
        "fem", str(MODEL_PATH), include_output=True, preprocess=summary["preprocess"]
    )
    x = generate("test", n=6).images
    res = fastfem.evaluate(apart, x, metrics=["average_drop", "deletion_auc"], fuse=False)
    assert not res.config["fused"]
    for name in ("average_drop", "deletion_auc"):
        assert summary["means"][name] == pytest.approx(res.means[name], rel=1e-4, abs=1e-4)


SHARDED = """
import json, os, sys
sys.path.insert(0, sys.argv[1])
import jax, numpy as np
import fastfem
from subprocess_runs import run_json, simulated_devices
from tiny_models import small_cnn
assert jax.device_count() == 4
model = small_cnn((32, 32, 3))
x = np.random.default_rng(1).random((10, 32, 32, 3), dtype=np.float32)
boxes = np.array([[2, 3, 20, 25]] * 10)
kw = dict(boxes=boxes, model=model, activation="softmax", steps=3, batch_size=4)
fem = fastfem.FEM(model, conv_layer="relu_b")
many = fastfem.evaluate(fem, x, **kw)
one = fastfem.evaluate(fem, x, devices=jax.devices()[:1], **kw)
print(json.dumps({k: float(np.nanmax(np.abs(many.per_sample[k] - one.per_sample[k])))
                  for k in many.per_sample}))
"""


@pytest.mark.slow
def test_four_devices_equal_one_device():
    diffs = run_json(SHARDED, str(TESTS_DIR), env=simulated_devices(4))
    assert set(diffs) == set(METRICS)
    assert max(diffs.values()) < 1e-4, diffs  # average drop is in percent


def test_fused_explanation_equals_explain_then_metrics(cnn32, data):
    x, boxes, _, _ = data
    metrics = ["pointing_game", "energy_pointing_game", "iou_box", "average_drop", "deletion_auc"]
    kw = dict(boxes=boxes, model=cnn32, activation="softmax", steps=2, metrics=metrics)
    for explainer in (
        fastfem.FEM(cnn32, conv_layer="relu_b", variant="gradcam"),
        fastfem.explainers.MeanActivation(cnn32, conv_layer="relu_b"),
    ):
        fused = fastfem.evaluate(explainer, x, **kw)
        apart = fastfem.evaluate(explainer, x, fuse=False, **kw)
        assert fused.config["fused"] and not apart.config["fused"]
        assert "explain" not in fused.seconds and "explain" in apart.seconds
        for name in metrics:
            np.testing.assert_allclose(
                fused.per_sample[name], apart.per_sample[name], rtol=1e-4, atol=1e-5, err_msg=name
            )
    # a scoring model that does not contain the explainer's weights: no fusion
    from tiny_models import small_cnn

    other = small_cnn((32, 32, 3), seed=9)
    ev = Evaluator(fastfem.FEM(cnn32), ["average_drop"], model=other)
    assert not ev.fused


def test_repeated_fused_evaluations_keep_no_step_in_the_explainer(cnn32, data):
    """Each fused evaluation builds its step on a scoring extractor of its own, in the engine's
    bounded cache (`fastfem.engine.cache`: a kept step holds its weights), never in the
    explainer; the explainer's own step stays the same object."""
    from fastfem.engine import cache

    x, boxes, _, _ = data
    explainer = fastfem.FEM(cnn32, conv_layer="relu_b")
    own = explainer.step(x.shape[1:])
    kept = dict(vars(explainer))
    first = fastfem.evaluate(explainer, x, boxes=boxes, model=cnn32, metrics=["pointing_game"])
    second = fastfem.evaluate(explainer, x, boxes=boxes, model=cnn32, metrics=["pointing_game"])
    assert first.config["fused"] and second.config["fused"]
    np.testing.assert_array_equal(
        first.per_sample["pointing_game"], second.per_sample["pointing_game"]
    )
    assert vars(explainer).keys() == kept.keys() and explainer.step(x.shape[1:]).fn is own.fn
    assert len(cache._steps) <= cache.KEPT


def test_explainer_model_is_scored_without_model_argument(cnn32, data):
    """``evaluate(FEM(model), images)``: the explainer's own model gives the scores."""
    x, _, _, _ = data
    for explainer in (
        fastfem.FEM(cnn32, conv_layer="relu_b"),
        fastfem.MLFEM(cnn32, layers=["relu_a", "relu_b"]),
    ):
        own = fastfem.evaluate(explainer, x, metrics=["average_drop"], activation="softmax")
        assert own.config["fused"]  # the explainer's own model, in the one step
        given = fastfem.evaluate(
            explainer, x, metrics=["average_drop"], model=cnn32, activation="softmax"
        )
        np.testing.assert_array_equal(own.targets, given.targets)
        # two separately compiled paths of one model: float32 rounding (average drop in %)
        np.testing.assert_allclose(
            own.per_sample["average_drop"], given.per_sample["average_drop"], rtol=1e-4, atol=1e-4
        )


def test_numbers_are_checked_at_the_door(cnn32, data):
    """Out-of-range targets and inverted or NaN boxes are refused, naming the value (they
    used to give NaN, silently mean the last class, or score 0)."""
    x, boxes, maps, _ = data
    ev = Evaluator(None, ["average_drop"], model=cnn32, activation="softmax")
    for bad in (np.full(N, 99), np.full(N, -1)):
        with pytest.raises(ValueError, match=r"class indices must be in \[0, 3\)"):
            ev(x, targets=bad, maps=maps)
    with pytest.raises(ValueError, match="integers"):
        ev(x, targets=np.full(N, 0.5), maps=maps)
    # inverted, NaN, and empty (x1 == x0): one validator, `fastfem.data.boxes.check_box`
    for box in ((9, 5, 4, 12), (1, np.nan, 5, 6), (5, 5, 5, 9)):
        wrong = boxes.astype(np.float64).copy()
        wrong[3] = box
        with pytest.raises(ValueError, match=r"^boxes\[3\]: box \["):
            fastfem.evaluate(None, x, boxes=wrong, maps=maps)
    with pytest.raises(ValueError, match="threshold"):
        Evaluator(None, ["iou"], threshold=1.5)
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        Evaluator(None, ["deletion_auc"], model=cnn32, steps=0)
