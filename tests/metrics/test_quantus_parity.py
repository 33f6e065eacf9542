"""Parity with Quantus 0.6 (installed with --no-deps, see tests/requirements-nodeps.txt).

* ``PointingGame`` and ``AttributionLocalisation`` (the energy-based pointing game) need no
  model: same random maps and boxes, same numbers, within Quantus's conventions (which are
  documented in `fastfem.metrics.localisation`): its pointing game counts a hit if ANY maximal
  pixel is in the box (our ``ties="any"``; our default ``"mean"`` agrees whenever the peak is
  unique), and its energy game takes ``|a| / max |a|`` (our ``normalize="abs_max"``).
* ``PixelFlipping`` (deletion) needs a model: Quantus only wraps tf.keras/torch models, and
  this process runs Keras on JAX, so the test wraps the same JAX model in a Quantus
  ``ModelInterface`` (by patching ``quantus.helpers.utils.get_wrapped_model``): the comparison
  is of Quantus's flipping algorithm (ordering, steps, baseline) against ours with one scoring
  function. Insertion is Quantus's pixel flipping started from the baseline with a
  ``perturb_func`` that copies the original pixels back (Quantus has no insertion metric).
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from fastfem.converters import Features, from_fn

from fastfem.metrics import faithfulness as F
from fastfem.metrics import localisation as L

quantus = pytest.importorskip("quantus")

H = W = 16
N = 24


@pytest.fixture(scope="module")
def random_case():
    rng = np.random.default_rng(11)
    x = rng.random((N, 3, H, W), dtype=np.float32)  # Quantus: channel first
    maps = rng.normal(size=(N, H, W)).astype(np.float32)  # signed, no ties
    x0, y0 = rng.integers(0, W - 2, N), rng.integers(0, H - 2, N)
    boxes = np.stack([x0, y0, x0 + rng.integers(1, 10, N), y0 + rng.integers(1, 10, N)], 1)
    boxes = np.minimum(boxes, W)
    masks = np.asarray(L.box_masks(jnp.asarray(boxes), H, W))
    return x, maps, boxes, masks


def quantus_call(metric, x, maps, masks, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.asarray(
            metric(
                model=None,
                x_batch=x,
                y_batch=np.zeros(len(x), int),
                a_batch=maps[:, None],
                s_batch=masks[:, None].astype(np.float32),
                channel_first=True,
                **kw,
            ),
            dtype=np.float64,
        )


def test_pointing_game_matches_quantus(random_case):
    x, maps, _, masks = random_case
    theirs = quantus_call(quantus.PointingGame(disable_warnings=True), x, maps, masks)
    ours = L.localisation_metrics(maps, masks).pointing_game
    np.testing.assert_array_equal(ours, theirs)
    assert 0 < theirs.mean() < 1
    # tied peaks (a plateau): Quantus counts a hit if any peak is in the box = ties="any"
    plateau = np.round(np.clip(maps, 0, None), 0)  # integer levels: many tied maxima
    theirs = quantus_call(quantus.PointingGame(disable_warnings=True), x, plateau, masks)
    ours_any = L.localisation_metrics(plateau, masks, ties="any").pointing_game
    np.testing.assert_array_equal(ours_any, theirs)
    # ... and our default counts the fraction of the tied peaks in the box: here it differs
    ours_mean = np.asarray(L.localisation_metrics(plateau, masks).pointing_game)
    assert np.any(ours_mean != theirs) and np.all(ours_mean <= theirs)


def test_energy_pointing_game_matches_quantus_attribution_localisation(random_case):
    x, maps, _, masks = random_case
    # Quantus defaults: abs=True, normalise=True (divide by the max |a|) = normalize="abs_max"
    theirs = quantus_call(quantus.AttributionLocalisation(disable_warnings=True), x, maps, masks)
    ours = L.localisation_metrics(maps, masks, normalize="abs_max").energy_pointing_game
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-7)

    # our default (ReLU, then per-sample min-max) through Quantus's normalise_func hook
    def relu_minmax(a, **kw):
        a = np.clip(a, 0, None)
        lo = a.min(axis=(1, 2, 3), keepdims=True)
        return (a - lo) / (a.max(axis=(1, 2, 3), keepdims=True) - lo)

    metric = quantus.AttributionLocalisation(
        abs=False, normalise_func=relu_minmax, disable_warnings=True
    )
    theirs = quantus_call(metric, x, maps, masks)
    ours = L.localisation_metrics(maps, masks).energy_pointing_game
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-7)


def test_degenerate_boxes_differ_from_quantus_as_documented(random_case):
    """Empty box: Quantus's energy game gives NaN (left out of its mean), and its pointing game
    gives True, a hit (it writes NaN into a bool array); ours give 0 for both (finite,
    documented in the README and `fastfem.metrics.localisation`)."""
    x, maps, _, _ = random_case
    masks = np.zeros((2, H, W), bool)
    masks[1, 4:9, 4:9] = True  # Quantus asserts that a batch has some non-zero mask
    energy = quantus_call(
        quantus.AttributionLocalisation(disable_warnings=True), x[:2], maps[:2], masks
    )
    hit = quantus_call(quantus.PointingGame(disable_warnings=True), x[:2], maps[:2], masks)
    assert np.isnan(energy[0]) and hit[0] == 1.0
    ours = L.localisation_metrics(maps[:2], masks)
    assert ours.energy_pointing_game[0] == 0 and ours.pointing_game[0] == 0


class JaxModel(quantus.helpers.model.model_interface.ModelInterface):
    """A Quantus ModelInterface around a pure JAX classifier on channel-last images."""

    def __init__(self, predict_fn):
        super().__init__(model=predict_fn, channel_first=True, softmax=False)

    def predict(self, x, **kwargs):
        return np.asarray(self.model(jnp.asarray(np.transpose(x, (0, 2, 3, 1)))))

    def shape_input(self, x, shape, channel_first=None, batched=False):
        return x.reshape(shape) if batched else x.reshape(1, *shape)

    def get_model(self):
        return self.model

    def get_softmax_arg_model(self):
        return self.model

    def state_dict(self):
        return {}

    def get_random_layer_generator(self, order="top_down", seed=42):
        raise NotImplementedError

    def add_mean_shift_to_first_layer(self, input_shift, shape):
        raise NotImplementedError

    def get_hidden_representations(self, x, layer_names=None, layer_indices=None, **kw):
        raise NotImplementedError

    @property
    def random_layer_generator_length(self):
        return 0


def small_classifier():
    """conv -> relu -> mean -> dense -> softmax on (H, W, 1) images; Features with the output."""
    rng = np.random.default_rng(5)
    params = (
        jnp.asarray(rng.normal(size=(3, 3, 1, 4)).astype(np.float32)),
        jnp.asarray(rng.normal(size=(4, 3)).astype(np.float32)),
    )

    def apply(p, x):
        a = jax.nn.relu(
            jax.lax.conv_general_dilated(
                x, p[0], (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
            )
        )
        return Features(activations=(a,), output=jax.nn.softmax(a.mean(axis=(1, 2)) @ p[1]))

    return from_fn(apply, params, (H, W, 1), has_output=True)


@pytest.mark.parametrize("mode", ["deletion", "insertion"])
def test_deletion_insertion_curves_match_quantus_pixel_flipping(random_case, monkeypatch, mode):
    x_cf, maps, _, _ = random_case
    # one channel: Quantus checks features_in_step against H * W but flips the C * H * W
    # values of x one by one, so only a grayscale input makes its steps whole pixels
    x_cf, maps = x_cf[:8, :1], np.abs(maps[:8])
    x = np.transpose(x_cf, (0, 2, 3, 1))
    ext = small_classifier()
    predict = jax.jit(lambda im: ext.apply(ext.params, im).output)
    labels = np.asarray(predict(jnp.asarray(x))).argmax(-1)
    steps = 8
    monkeypatch.setattr(
        quantus.helpers.utils, "get_wrapped_model", lambda model, **kw: JaxModel(model)
    )

    kw = {}
    start = x_cf
    if mode == "insertion":
        flat_x = x_cf.reshape(len(x_cf), -1)

        def insert(arr, indices, **_):
            out = arr.copy()
            rows = np.arange(arr.shape[0])[:, None]
            out[rows, indices] = flat_x[rows, indices]
            return out

        kw = {"perturb_func": insert}
        start = np.zeros_like(x_cf)
    metric = quantus.PixelFlipping(
        features_in_step=H * W // steps, perturb_baseline=0.0, disable_warnings=True, **kw
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = np.asarray(
            metric(
                model=predict,
                x_batch=start,
                y_batch=labels,
                a_batch=maps[:, None],
                channel_first=True,
                batch_size=8,
            )
        )
    scorer = F.class_scorer(ext)
    ours = F.perturbation_curves(scorer, ext.params, x, maps, jnp.asarray(labels), steps, mode)
    ours = np.asarray(ours)
    # Quantus records the T points after each step (no k = 0 point)
    assert theirs.shape == (8, steps) and np.ptp(theirs) > 0.01
    np.testing.assert_allclose(ours[:, 1:], theirs, rtol=1e-5, atol=1e-6)
    # its AUC is np.trapz(dx=1) over those T points (np.trapz is gone in NumPy 2.4, so
    # Quantus's own helper cannot run here); ours is over the T + 1 points on [0, 1]
    quantus_auc = np.trapezoid(theirs, dx=1, axis=1)
    np.testing.assert_allclose(
        F.curve_auc(ours), (quantus_auc + 0.5 * (ours[:, 0] + ours[:, 1])) / steps, rtol=1e-5
    )
