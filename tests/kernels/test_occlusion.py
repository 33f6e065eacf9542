"""Occlusion probes (`fastfem.kernels.occlusion`) against NumPy references of their formulas."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fastfem.kernels import occlusion as O


def _image(h=32, w=40, seed=0):
    return np.random.default_rng(seed).uniform(size=(h, w, 3)).astype(np.float32)


@pytest.mark.parametrize("size", [(64, 64), (96, 96), (37, 53)])
def test_every_thin_line_lies_whole_in_one_band_and_one_column(size):
    h, w = size
    regions = O.region_family(h, w)
    bands = [r for r in regions if r.kind == "band"]
    columns = [r for r in regions if r.kind == "column"]
    assert len(bands) == 15 and len(columns) == 15
    thick = max(1, h // 16)
    for y in range(h - thick + 1):
        line = np.zeros((h, w), bool)
        line[y : y + thick] = True
        assert any(r.mask[line].all() for r in bands), y
    thick = max(1, w // 16)
    for x in range(w - thick + 1):
        line = np.zeros((h, w), bool)
        line[:, x : x + thick] = True
        assert any(r.mask[line].all() for r in columns), x


def test_family_masks_match_their_boxes_and_names():
    for r in O.region_family(64, 64):
        assert r.mask.shape == (64, 64) and r.mask.dtype == np.float32
        ys, xs = np.nonzero(r.mask)
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == r.box
        if r.kind not in ("border", "corners"):  # rectangles are full boxes
            assert r.mask.sum() == (r.box[2] - r.box[0]) * (r.box[3] - r.box[1])
    ring = O.border_region(64, 64, 2)
    assert ring.mask.sum() == 64 * 64 - 60 * 60
    assert len({r.name for r in O.region_family(64, 64)}) == len(O.region_family(64, 64))


def test_gaussian_matrix_rows_are_normalised_gaussians():
    g = O.gaussian_matrix(20, 3.0)
    np.testing.assert_allclose(g.sum(axis=1), 1.0, rtol=1e-6)
    d = np.arange(20)[:, None] - np.arange(20)[None, :]
    ref = np.exp(-(d**2) / 18.0)
    np.testing.assert_allclose(g, ref / ref.sum(axis=1, keepdims=True), rtol=1e-5)


def _params(x):
    return O.fill_params(x.reshape(-1, 3).mean(0), x.reshape(-1, 3).std(0), *x.shape[:2])


def test_inpaint_is_normalised_convolution_of_the_outside():
    x = _image()
    region = O.region_family(32, 40)[20]
    p = _params(x)
    got = np.asarray(O.inpaint(jnp.asarray(x), jnp.asarray(region.mask), p))
    gy, gx = np.asarray(p.fill_y), np.asarray(p.fill_x)
    out = 1.0 - region.mask
    num = np.einsum("hi,iwc,vw->hvc", gy, x * out[:, :, None], gx)
    den = np.einsum("hi,iw,vw->hv", gy, out, gx)[:, :, None]
    np.testing.assert_allclose(got, num / den, rtol=1e-4, atol=1e-5)


def test_probe_leaves_the_outside_and_hides_a_mark_inside():
    x = np.full((32, 32, 3), 0.4, np.float32)
    x[14:17, :] = 1.0  # a bright line across the image
    band = next(r for r in O.region_family(32, 32) if r.kind == "band" and r.mask[14:17].all())
    p = _params(x)
    fills = {
        f: np.asarray(O.probe_image(jnp.asarray(x), jnp.asarray(band.mask), i, p))
        for i, f in enumerate(O.FILLS)
    }
    outside = band.mask == 0
    for f in ("mean", "blur", "noise", "inpaint"):
        np.testing.assert_array_equal(fills[f][outside], x[outside])
    # filled from the surroundings (all 0.4): the line is gone
    np.testing.assert_allclose(fills["inpaint"][14:17], 0.4, atol=1e-5)
    want = np.broadcast_to(np.asarray(p.mean), (3, 32, 3))
    np.testing.assert_allclose(fills["mean"][14:17], want, atol=1e-6)


def test_colour_moments_undo_a_blended_tint():
    x = _image()
    tinted = 0.65 * x + 0.35 * np.asarray([1.0, 0.55, 0.1], np.float32)
    mean, std = np.asarray([0.5, 0.5, 0.5], np.float32), np.asarray([0.2, 0.2, 0.2], np.float32)
    a = np.asarray(O.colour_moments(jnp.asarray(x), jnp.asarray(mean), jnp.asarray(std)))
    b = np.asarray(O.colour_moments(jnp.asarray(tinted), jnp.asarray(mean), jnp.asarray(std)))
    np.testing.assert_allclose(a, b, atol=1e-4)  # the tint is gone: same image either way
    ref = (x - x.mean((0, 1))) / x.std((0, 1)) * std + mean
    np.testing.assert_allclose(a, np.clip(ref, 0, 1), atol=1e-5)


def _falloff_reference(x):
    """``falloff`` from its formula in NumPy: the grey level's least-squares line against r^2,
    the gain ``(a + b r^2) / a`` clipped, the image divided by it."""
    h, w = x.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    r2 = ((yy - h / 2) ** 2 + (xx - w / 2) ** 2) / (h * h / 4 + w * w / 4)
    design = np.stack([np.ones(h * w), r2.ravel()], axis=1)
    (a, b), *_ = np.linalg.lstsq(design, x.mean(-1).ravel(), rcond=None)
    gain = np.clip((a + b * r2) / a, 1 / O.FALLOFF_GAIN, O.FALLOFF_GAIN)
    return np.clip(x / gain[:, :, None], 0, 1)


@pytest.mark.parametrize("shape", [(32, 40), (48, 48)])
def test_falloff_takes_a_vignette_away_and_matches_its_formula(shape):
    h, w = shape
    x = 0.2 + 0.5 * _image(h, w)
    yy, xx = np.mgrid[0:h, 0:w] + 0.5
    r2 = ((yy - h / 2) ** 2 + (xx - w / 2) ** 2) / (h * h / 4 + w * w / 4)
    vignetted = (x * (1 - 0.6 * r2)[:, :, None]).astype(np.float32)
    whole = jnp.ones((h, w))
    fill = O.FILLS.index("falloff")
    got = np.asarray(O.fill_image(jnp.asarray(vignetted), whole, fill, _params(vignetted)))
    np.testing.assert_allclose(got, _falloff_reference(vignetted), atol=2e-5)
    # the corners come back (a random image has no fall-off of its own to speak of)
    corner = (r2 > 0.8)[:, :, None]
    assert (
        abs((got * corner).sum() / corner.sum() / 3 - (x * corner).sum() / corner.sum() / 3) < 0.05
    )
    flat = np.full((h, w, 3), 0.5, np.float32)  # nothing to take away: unchanged
    np.testing.assert_allclose(np.asarray(O.flatten_falloff(jnp.asarray(flat))), flat, atol=1e-6)


def test_lowpass_removes_a_checkerboard_texture_but_not_a_large_shape():
    yy, xx = np.mgrid[:64, :64]
    texture = ((yy + xx) % 2).astype(np.float32)
    shape = ((yy - 32) ** 2 + (xx - 32) ** 2 < 15**2).astype(np.float32)
    x = np.stack([0.5 * shape + 0.2 * texture] * 3, -1)
    p = _params(x)
    low = np.asarray(O.fill_image(jnp.asarray(x), jnp.ones((64, 64)), 3, p))
    assert np.abs(np.diff(low[26:38, 26:38, 0], axis=1)).max() < 0.02  # texture gone
    assert low[32, 32, 0] - low[2, 2, 0] > 0.4  # the disc stays


def test_probe_image_vmaps_and_jits():
    x = np.stack([_image(seed=i) for i in range(3)])
    p = _params(x[0])
    region = O.region_family(32, 40)[3]
    f = jax.jit(jax.vmap(O.probe_image, in_axes=(0, None, None, None)))
    out = np.asarray(f(jnp.asarray(x), jnp.asarray(region.mask), jnp.int32(5), p))
    for i in range(3):
        one = np.asarray(O.probe_image(jnp.asarray(x[i]), jnp.asarray(region.mask), 5, p))
        np.testing.assert_allclose(out[i], one, rtol=1e-5, atol=1e-6)


def test_median_equals_scipy_and_removes_salt_and_pepper_but_keeps_a_shape():
    from scipy import ndimage

    x = _image()
    got = np.asarray(O.median_3x3(jnp.asarray(x)))
    want = np.stack(
        [ndimage.median_filter(x[..., c], size=3, mode="nearest") for c in range(3)], -1
    )
    np.testing.assert_allclose(got, want, atol=1e-7)
    img = np.full((32, 32, 3), 0.5, np.float32)
    img[8:24, 8:24] = 0.9  # a shape
    noisy = img.copy()
    rng = np.random.default_rng(1)
    ys, xs = rng.integers(0, 32, 40), rng.integers(0, 32, 40)
    noisy[ys, xs] = rng.choice([0.0, 1.0], size=(40, 1))  # isolated salt-and-pepper pixels
    cleaned = np.asarray(O.median_3x3(jnp.asarray(noisy)))
    isolated = np.abs(cleaned - img).max(axis=-1) > 1e-6
    assert isolated.sum() <= 12  # (pixels that had a second noisy neighbour)
    changed = np.abs(np.asarray(O.median_3x3(jnp.asarray(img))) - img).max(axis=-1) > 0
    assert np.argwhere(changed).tolist() == [[8, 8], [8, 23], [23, 8], [23, 23]]  # only corners


def test_median_network_is_the_median_of_every_binary_input():
    # the 0-1 principle: a comparator network computes an order statistic of every input
    # iff it does for all 2^9 inputs of zeros and ones
    bits = (np.arange(512)[:, None] >> np.arange(9)[None, :]) & 1
    got = np.asarray(O.median_of_9([jnp.asarray(bits[:, j]) for j in range(9)]))
    np.testing.assert_array_equal(got, np.median(bits, axis=1))


def test_balance_takes_a_channel_gain_away_and_keeps_the_image_within():
    x = _image() * 0.5 + 0.2
    gain = np.asarray([1.3, 0.9, 0.6], np.float32)  # a scanner's cast: one gain per channel
    got = np.asarray(O.balance(jnp.asarray(x * gain)))
    ref = np.asarray(O.balance(jnp.asarray(x)))
    # the same image either way, up to one brightness factor (the grey level moves with the gains)
    np.testing.assert_allclose(got, ref * (got.mean() / ref.mean()), atol=1e-5)
    # NumPy reference from the formula: each channel scaled to the mean of the channel means
    xbar = (x * gain).mean((0, 1))
    np.testing.assert_allclose(got, np.clip(x * gain * xbar.mean() / xbar, 0, 1), atol=1e-5)
    grey = np.repeat(x[..., :1], 3, axis=-1)  # no cast: a grey image is left as it is
    np.testing.assert_allclose(np.asarray(O.balance(jnp.asarray(grey))), grey, atol=1e-6)


def test_balance_moves_an_orange_blend_towards_the_clean_image():
    x = _image() * 0.6 + 0.2  # grey on average: its channel means are about equal
    cast = 0.65 * x + 0.35 * np.asarray([1.0, 0.55, 0.15], np.float32)  # a 35% orange blend
    balanced = np.asarray(O.balance(jnp.asarray(cast)))
    means = balanced.mean((0, 1))
    np.testing.assert_allclose(means, means.mean(), atol=1e-3)  # the orange is gone
    hue = np.abs(cast.mean((0, 1)) - cast.mean()).max()  # the cast's distance from grey
    assert np.abs(x.mean((0, 1)) - x.mean()).max() < 0.02 < hue


def test_the_corners_region_is_the_four_corner_cells_at_once():
    regions = O.region_family(64, 64)
    (corners,) = [r for r in regions if r.kind == "corners"]
    cells = [r for r in regions if r.kind == "cell"]
    corner_cells = [
        c
        for c in cells
        if c.box in ((0, 0, 16, 16), (48, 0, 64, 16), (0, 48, 16, 64), (48, 48, 64, 64))
    ]
    assert len(corner_cells) == 4
    np.testing.assert_array_equal(corners.mask, np.maximum.reduce([c.mask for c in corner_cells]))
    assert corners.box == (0, 0, 64, 64) and corners.mask.sum() == 4 * 16 * 16


def _hue_reference(x: np.ndarray, degrees: float) -> np.ndarray:
    """``no <hue>`` written from its formula in NumPy, pixel by pixel."""
    out = x.copy()
    for idx in np.ndindex(x.shape[:2]):
        r, g, b = (float(v) for v in x[idx])
        theta = np.arctan2(np.sqrt(3) / 2 * (g - b), r - (g + b) / 2)
        w = (max(r, g, b) - min(r, g, b)) * max(0.0, np.cos(theta - np.radians(degrees))) ** 4
        out[idx] = x[idx] + w * (x[idx].mean() - x[idx])
    return out


def test_hue_fills_turn_one_hue_grey_and_keep_the_others():
    x = _image(seed=4)
    x[2:6, 2:6] = [0.9, 0.1, 0.1]  # a red square
    x[10:14, 2:6] = [0.1, 0.85, 0.2]  # a green one
    x[20:24, 2:6] = 0.6  # grey
    p = _params(x)
    whole = jnp.ones(x.shape[:2])
    for name, degrees in O.HUES.items():
        got = np.asarray(O.fill_image(jnp.asarray(x), whole, O.FILLS.index(f"no {name}"), p))
        np.testing.assert_allclose(got, _hue_reference(x, degrees), atol=1e-5)
        np.testing.assert_allclose(got[20:24, 2:6], 0.6, atol=1e-6)  # grey has no hue
    no_red = np.asarray(O.fill_image(jnp.asarray(x), whole, O.FILLS.index("no red"), p))
    np.testing.assert_allclose(np.ptp(no_red[3, 3]), 0.8 * (1 - 0.8), atol=1e-6)  # red: 80% out
    np.testing.assert_allclose(no_red[11, 3], [0.1, 0.85, 0.2], atol=1e-6)  # ... not the green
    grey = np.asarray(O.hue_out(jnp.asarray(x[..., :1]), 0.0))
    np.testing.assert_array_equal(grey, x[..., :1])  # one channel: no hue to remove


def _grain_reference(x, detail):
    """``grain`` from its formula in NumPy: the fine detail ``d`` the RMS of ``x`` minus its
    Gaussian blur of sigma max(H, W) / 64 (row-normalised, per channel), the grain the fixed
    standard normal grey image of seed 0 times ``GRAIN_GAIN (D - d)`` where positive."""
    h, w, c = x.shape
    sigma = max(h, w) / 64
    gy, gx = (
        np.exp(-((np.arange(n)[:, None] - np.arange(n)[None, :]) ** 2) / (2 * sigma**2))
        for n in (h, w)
    )
    gy, gx = gy / gy.sum(1, keepdims=True), gx / gx.sum(1, keepdims=True)
    low = np.einsum("hi,iwc->hwc", gy, x.astype(np.float64))
    low = np.einsum("hwc,vw->hvc", low, gx)
    d = np.sqrt(np.mean((x - low) ** 2))
    z = np.random.default_rng(O.NOISE_SEED).standard_normal((h, w, 1))  # grey
    return np.clip(x + O.GRAIN_GAIN * max(detail - d, 0.0) * z, 0, 1), d


def test_grain_gives_a_soft_image_the_detail_it_lacks_and_leaves_a_sharp_one():
    h, w = 48, 40
    sharp = 0.2 + 0.6 * _image(h, w, seed=3)
    gy, gx = O.gaussian_matrix(h, 2.0), O.gaussian_matrix(w, 2.0)
    soft = np.einsum("hi,iwc,vw->hvc", gy, sharp, gx).astype(np.float32)  # out of focus
    _, d_sharp = _grain_reference(sharp, 0.0)
    _, d_soft = _grain_reference(soft, 0.0)
    assert d_soft < 0.2 * d_sharp
    p = O.fill_params(sharp.reshape(-1, 3).mean(0), sharp.reshape(-1, 3).std(0), h, w, d_sharp)
    fill, whole = O.FILLS.index("grain"), jnp.ones((h, w))
    for x in (sharp, soft):
        got = np.asarray(O.fill_image(jnp.asarray(x), whole, fill, p))
        np.testing.assert_allclose(got, _grain_reference(x, d_sharp)[0], atol=2e-5)
        d = float(O.fine_detail(jnp.asarray(got), p.low_y, p.low_x))
        if x is sharp:  # as sharp as the sample's typical image: left as it is
            np.testing.assert_array_equal(got, sharp)
        else:  # given at least the fine detail it lacked
            assert d > d_sharp > 5 * d_soft
    # with no sample detail given (the default), every image is left as it is
    p0 = O.fill_params(p.mean, p.std, h, w)
    np.testing.assert_array_equal(
        np.asarray(O.fill_image(jnp.asarray(soft), whole, fill, p0)), soft
    )
