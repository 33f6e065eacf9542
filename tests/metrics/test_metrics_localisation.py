"""Localisation metrics against hand-computed cases, degenerate inputs, and jit/vmap."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fastfem.metrics import localisation as L


def box(h, w, xyxy):
    return np.asarray(L.box_mask(jnp.asarray(xyxy, jnp.float32), h, w))


def test_box_mask_integer_box_is_the_slice():
    m = box(8, 10, (2, 3, 7, 5))
    expected = np.zeros((8, 10), bool)
    expected[3:5, 2:7] = True
    np.testing.assert_array_equal(m, expected)


def test_box_mask_pixel_centres_and_scaling():
    # a centre at j + 0.5 is inside [x0, x1): x0 = 1.6 excludes pixel 1 (centre 1.5)
    m = box(4, 4, (1.6, 0, 3.6, 4))
    np.testing.assert_array_equal(m[0], [False, False, True, True])
    # a 64x64 image box at a 16x16 map: divided by 4
    scaled = np.asarray(L.box_mask(jnp.array([8.0, 16, 40, 32]), 16, 16, image_size=(64, 64)))
    expected = np.zeros((16, 16), bool)
    expected[4:8, 2:10] = True
    np.testing.assert_array_equal(scaled, expected)
    assert not box(5, 5, (3, 3, 3, 5)).any()  # x1 == x0: empty
    assert not box(5, 5, (4, 4, 1, 1)).any()  # inverted: empty


def test_map_that_is_one_inside_the_box_scores_one():
    b = box(12, 12, (3, 2, 9, 7))
    m = b.astype(np.float32)
    assert float(L.pointing_game(m, b)) == 1.0
    assert float(L.pointing_game(m, b, ties="any")) == 1.0
    assert float(L.energy_pointing_game(m, b)) == 1.0
    assert float(L.iou_at(m, b)) == 1.0
    assert L.iou_box(m, (3, 2, 9, 7)) == 1.0


def test_uniform_map_scores_the_box_area_fraction():
    b = box(10, 10, (2, 2, 7, 6))  # 5 x 4 = 20 pixels of 100
    for value in (0.0, 0.3, 1.0, -2.0):
        m = np.full((10, 10), value, np.float32)
        assert float(L.energy_pointing_game(m, b)) == pytest.approx(0.2)
        assert float(L.pointing_game(m, b)) == pytest.approx(0.2)  # ties="mean"
        assert float(L.iou_at(m, b)) == pytest.approx(0.2)  # A = every pixel
        assert float(L.pointing_game(m, b, ties="any")) == 1.0  # Quantus's rule
        assert float(L.pointing_game(m, b, ties="first")) == 0.0  # pixel (0, 0) is outside
        assert L.iou_box(m, (2, 2, 7, 6)) == pytest.approx(0.2)  # one component: the image
    # all-zero map under the modes that keep it zero: scored as uniform, finite
    zero = np.zeros((10, 10), np.float32)
    for mode in ("abs_max", "none"):
        assert float(L.energy_pointing_game(zero, b, normalize=mode)) == pytest.approx(0.2)


def test_hand_computed_energy_pointing_and_iou():
    m = np.array(
        [
            [0, 1, 2, 0],
            [0, 4, 8, 0],
            [0, 0, 1, 0],
            [0, 0, 0, 0],
        ],
        np.float32,
    )
    b = box(4, 4, (1, 0, 3, 2))  # rows 0-1, cols 1-2: values 1, 2, 4, 8
    # minmax keeps m / 8 (min 0): energy = 15 / 16
    assert float(L.energy_pointing_game(m, b)) == pytest.approx(15 / 16)
    assert float(L.pointing_game(m, b)) == 1.0
    # {L >= 0.5}: the 4 and the 8 -> IoU = 2 / 4;  t = 0.1: {1, 2, 4, 8, 1} -> 4 / 5
    assert float(L.iou_at(m, b, 0.5)) == pytest.approx(0.5)
    assert float(L.iou_at(m, b, 0.1)) == pytest.approx(4 / 5)
    # shifted map (+10): minmax removes the offset, abs_max does not
    assert float(L.energy_pointing_game(m + 10, b)) == pytest.approx(15 / 16)
    assert float(L.energy_pointing_game(m + 10, b, normalize="abs_max")) == pytest.approx(
        (15 + 40) / (16 + 160)
    )


def test_pointing_game_ties():
    m = np.zeros((4, 4), np.float32)
    m[0, 0] = m[3, 3] = m[3, 2] = 1.0  # three peaks, two of them in the box
    b = box(4, 4, (2, 2, 4, 4))
    assert float(L.pointing_game(m, b)) == pytest.approx(2 / 3)
    assert float(L.pointing_game(m, b, ties="any")) == 1.0
    assert float(L.pointing_game(m, b, ties="first")) == 0.0
    with pytest.raises(ValueError, match="ties"):
        L.pointing_game(m, b, ties="random")


def test_empty_and_whole_image_boxes():
    rng = np.random.default_rng(0)
    m = rng.random((8, 8), dtype=np.float32)
    empty = box(8, 8, (5, 5, 5, 5))
    whole = box(8, 8, (0, 0, 8, 8))
    for fn in (L.pointing_game, L.energy_pointing_game, L.iou_at):
        assert float(fn(m, empty)) == 0.0
    assert L.iou_box(m, (5, 5, 5, 5)) == 0.0
    assert float(L.pointing_game(m, whole)) == 1.0
    assert float(L.energy_pointing_game(m, whole)) == pytest.approx(1.0)
    Ln = np.asarray(L.normalize_map(m))
    assert float(L.iou_at(m, whole)) == pytest.approx((Ln >= 0.5).mean())


def test_constant_and_nonfinite_maps():
    b = jnp.asarray(box(6, 6, (0, 0, 3, 3)))
    constant = jnp.stack([jnp.zeros((6, 6)), jnp.full((6, 6), 5.0), jnp.full((6, 6), -1.0)])
    boxes = jnp.stack([b, b, b])
    for mode in L.NORMALIZATIONS:
        res = L.localisation_metrics(constant, boxes, normalize=mode)
        assert all(np.all(np.isfinite(v)) for v in res), (mode, res)
    bad = np.ones((6, 6), np.float32)
    bad[1, 1] = np.nan
    res = L.localisation_sample(jnp.asarray(bad), b)
    assert all(np.isnan(float(v)) for v in res)
    assert np.isnan(L.iou_box(bad, (0, 0, 3, 3)))


def test_normalize_modes():
    m = jnp.array([[-2.0, 0.0], [1.0, 2.0]])
    np.testing.assert_allclose(L.normalize_map(m), [[0, 0], [0.5, 1]])  # relu_minmax
    np.testing.assert_allclose(L.normalize_map(m, "minmax"), [[0, 0.5], [0.75, 1]])
    np.testing.assert_allclose(L.normalize_map(m, "abs_max"), [[1, 0], [0.5, 1]])
    np.testing.assert_allclose(L.normalize_map(m, "abs_minmax"), [[1, 0], [0.5, 1]])
    np.testing.assert_allclose(L.normalize_map(m, "none"), m)
    # float noise of a resized constant map counts as constant
    noisy = jnp.full((3, 3), 0.7) + jnp.array([[0, 1e-8, 0], [0, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(L.normalize_map(noisy), np.ones((3, 3)))
    with pytest.raises(ValueError, match="normalisation"):
        L.normalize_map(m, "zscore")


def test_largest_component_box_and_box_iou():
    region = np.zeros((10, 10), bool)
    region[1:3, 1:3] = True  # 4 pixels
    region[5:9, 4:7] = True  # 12 pixels: the largest
    region[9, 7] = True  # touches (8, 6) diagonally: same 8-connected component
    assert L.largest_component_box(region) == (4, 5, 8, 10)
    assert L.largest_component_box(np.zeros((3, 3), bool)) == (0, 0, 0, 0)
    assert L.box_iou((0, 0, 2, 2), (1, 1, 3, 3)) == pytest.approx(1 / 7)
    assert L.box_iou((0, 0, 2, 2), (2, 2, 4, 4)) == 0.0
    assert L.box_iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0
    m = region.astype(np.float32)
    # component box (4, 5, 8, 10) vs ground truth (4, 5, 8, 9): 16 / 20
    assert L.iou_box(m, (4, 5, 8, 9)) == pytest.approx(16 / 20)


def test_batched_equals_per_sample_and_jits():
    rng = np.random.default_rng(3)
    maps = rng.random((6, 12, 12), dtype=np.float32)
    xyxy = np.array([[0, 0, 6, 6], [2, 3, 10, 12], [5, 5, 5, 9], [0, 0, 12, 12]] * 2)[:6]
    res = L.localisation_metrics(maps[..., None], xyxy, threshold=0.4)
    masks = L.box_masks(jnp.asarray(xyxy), 12, 12)
    res_masks = L.localisation_metrics(maps, masks, threshold=0.4)
    for i in range(6):
        b = masks[i]
        assert float(res.pointing_game[i]) == float(L.pointing_game(maps[i], b))
        np.testing.assert_allclose(res.energy_pointing_game[i], L.energy_pointing_game(maps[i], b))
        np.testing.assert_allclose(res.iou[i], L.iou_at(maps[i], b, 0.4))
    for a, c in zip(res, res_masks, strict=True):
        np.testing.assert_array_equal(a, c)
    # vmap + jit of a per-sample function, as a user would
    fn = jax.jit(jax.vmap(L.energy_pointing_game))
    np.testing.assert_allclose(fn(maps, masks), res.energy_pointing_game, rtol=1e-6, atol=1e-7)
    boxes_iou = L.iou_box_batch(maps, xyxy, threshold=0.4)
    assert boxes_iou.shape == (6,) and np.all((boxes_iou >= 0) & (boxes_iou <= 1))


def test_relu_keeps_a_resize_undershoot_out_of_the_energy():
    # a plateau in the box with a small negative ring around it (bicubic undershoot)
    m = np.zeros((10, 10), np.float32)
    m[2:8, 2:8] = -0.07
    m[3:7, 3:7] = 1.0
    b = box(10, 10, (3, 3, 7, 7))
    assert float(L.energy_pointing_game(m, b)) == pytest.approx(1.0)  # relu_minmax
    lifted = float(L.energy_pointing_game(m, b, normalize="minmax"))
    # minmax lifts the 64 background pixels to 0.07 / 1.07 each
    assert lifted == pytest.approx(16 / (16 + 64 * 0.07 / 1.07), rel=1e-5)


def test_several_boxes_per_image_score_against_their_union():
    rng = np.random.default_rng(4)
    maps = rng.random((3, 12, 12), dtype=np.float32)
    sets = np.array(
        [
            [[0, 0, 4, 4], [6, 6, 12, 12]],
            [[2, 3, 10, 12], [0, 0, 0, 0]],  # an empty padding box adds nothing
            [[0, 0, 12, 3], [0, 9, 12, 12]],
        ],
        np.float32,
    )
    union = np.stack([box(12, 12, s[0]) | box(12, 12, s[1]) for s in sets])
    got = L.localisation_metrics(maps, sets)
    want = L.localisation_metrics(maps, union)
    for a, c in zip(got, want, strict=True):
        np.testing.assert_array_equal(a, c)
    assert np.asarray(got.energy_pointing_game)[1] == pytest.approx(
        float(L.energy_pointing_game(maps[1], box(12, 12, sets[1, 0])))
    )
