"""The probe that follows each row's map peak (`fastfem.audit.reliance.peaks`): its windows, its
labels' test against references written from their formulas, and a JAX model that relies on a
white square at a random place, audited for real with and without labels."""

from __future__ import annotations

import json
import math

import jax.numpy as jnp
import numpy as np
import pyarrow.parquet as pq
import pytest
from fastfem.converters import Features, from_fn

from fastfem.audit import audit
from fastfem.audit.reliance import evenly_spaced
from fastfem.audit.reliance.labels import labels_confirm
from fastfem.audit.reliance.peaks import (
    CONTRAST_FALL,
    LEAD_ALPHA,
    MIN_EXTRA,
    ORDINARY,
    PeakRows,
    PeakTest,
    confirmed,
    is_lead,
    labels_mark,
    labels_p_value,
    lost_extra,
    maps_mark,
    peak_candidates,
    peak_tests,
)
from fastfem.audit.reliance.probes import peak_pixels, peak_probe, peak_side, probe_params
from fastfem.audit.reliance.rules import ALPHA, MIN_COLLAPSE
from fastfem.audit.reliance.stats import MIN_HITS, ProbeTest
from fastfem.audit.reliance.step import peak_windows, probed
from fastfem.audit.reliance.table import RELIANCE_FILE
from fastfem.audit.report.page import write_report
from fastfem.kernels.occlusion import FILLS, fill_params, probe_image

SQUARE = 6  # the shortcut: a white square this many px across, anywhere


def test_a_window_is_the_square_around_its_peak_clipped_to_the_image():
    h, w, side = 12, 10, 4
    peaks = np.asarray([[6, 5], [0, 5], [11, 9]], np.int32)  # middle, top edge, corner
    got = np.asarray(peak_windows(jnp.asarray(peaks), h, w, jnp.int32(side)))
    for k, (cy, cx) in enumerate(peaks):
        want = np.zeros((h, w), np.float32)
        for y in range(cy - side // 2, cy - side // 2 + side):
            for x in range(cx - side // 2, cx - side // 2 + side):
                if 0 <= y < h and 0 <= x < w:
                    want[y, x] = 1.0
        np.testing.assert_array_equal(got[k], want)
    np.testing.assert_array_equal(
        peak_pixels(np.asarray([0.5, 0.999, 0.0]), np.asarray([0.25, 0.999, 1.2]), h, w),
        [[6, 2], [11, 9], [0, 9]],
    )


def test_the_peak_probe_hides_each_images_own_window():
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(3, 16, 16, 3)).astype(np.float32)
    peaks = np.asarray([[2, 3], [8, 8], [15, 0]], np.int32)
    probe = peak_probe(16, 16)
    params, _ = probe_params([probe], fill_params(x.mean((0, 1, 2)), x.std((0, 1, 2)), 16, 16))
    assert float(params.follow[0]) == 1.0 and int(params.side) == peak_side(16, 16) == 4
    windows = peak_windows(jnp.asarray(peaks), 16, 16, params.side)
    got, _ = probed(
        jnp.asarray(x), params.masks[0], params.fills[0], params.fill, windows, params.follow[0]
    )
    for k in range(3):
        want = probe_image(jnp.asarray(x[k]), windows[k], FILLS.index("inpaint"), params.fill)
        np.testing.assert_allclose(np.asarray(got[k]), np.asarray(want), atol=1e-6)
        outside = np.asarray(windows[k]) == 0
        np.testing.assert_array_equal(np.asarray(got[k])[outside], x[k][outside])


def binomial_tail_reference(k: int, n: int, q: float) -> float:
    return sum(math.comb(n, j) * q**j * (1 - q) ** (n - j) for j in range(k, n + 1))


def test_the_labels_p_value_is_the_binomial_tail_at_the_own_labelled_rate():
    rng = np.random.default_rng(1)
    own = rng.uniform(size=200) < 0.5
    labels = np.where(rng.uniform(size=200) < 0.3, 2, 1)
    labels[rng.uniform(size=200) < 0.1] = -1  # no label
    hit = rng.uniform(size=200) < np.where(labels == 2, 0.6, 0.2)
    other = own & (labels == 2)
    mine = own & (labels == 1)
    q = (np.sum(hit & mine) + 1) / (np.sum(mine) + 2)
    want = binomial_tail_reference(int(np.sum(hit & other)), int(np.sum(other)), q)
    assert labels_p_value(hit, own, labels, 1) == pytest.approx(want, rel=1e-9)


def a_test(hits: int, collapse: float, p: float) -> ProbeTest:
    return ProbeTest(0, 1, hits, 80, 30, 240, 1.0, p, collapse=collapse)


def evidence(t: ProbeTest, share: float, rest: float, other: int | None = None) -> PeakTest:
    return PeakTest(t, share, rest, round(t.hits * share) if other is None else other)


def test_a_peak_test_is_a_candidate_only_where_every_rule_and_the_labels_hold():
    n = 4
    ok = a_test(20, 0.6, ALPHA / n / 10)
    assert confirmed(evidence(ok, 0.8, 0.1), n) and labels_mark(0.8, ok.p_value, n)
    # a model that mixes its classes (half the class's other rows labelled another class):
    # the labels' significance, not a lift over those rows, says the hits stand out
    assert confirmed(evidence(ok, 0.8, 0.5), n) and not labels_confirm(0.8, 0.5)
    assert not confirmed(evidence(a_test(20, 0.6, ALPHA / n * 2), 0.8, 0.5), n)
    assert not confirmed(evidence(ok, 0.4, 0.0), n)  # the hits are the class's own images
    assert not confirmed(evidence(a_test(20, MIN_COLLAPSE * 0.9, ALPHA / n / 10), 0.8, 0.1), n)
    assert not confirmed(evidence(a_test(20, 0.6, ALPHA / n * 2), 0.8, 0.1), n)
    # MIN_HITS hits labelled another class, not MIN_HITS hits
    assert confirmed(evidence(a_test(MIN_HITS * 2, 0.6, 1e-9), 0.5, 0.0), n)
    assert not confirmed(evidence(a_test(MIN_HITS * 2 - 1, 0.6, 1e-9), 0.5, 0.0), n)
    # the count of hits labelled another class, not hits x share: with unlabelled hit rows
    # (share over the labelled ones only) the product overcounts
    assert not confirmed(evidence(a_test(MIN_HITS * 2, 0.6, 1e-9), 1.0, 0.0, MIN_HITS - 1), n)


def test_peak_tests_count_the_sample_and_take_the_labels_p_value():
    rng = np.random.default_rng(2)
    pred = rng.integers(0, 3, 240)
    labels = np.where(rng.uniform(size=240) < 0.8, pred, (pred + 1) % 3)
    labels[rng.uniform(size=240) < 0.2] = -1  # no label
    drop = rng.uniform(size=240)
    extra = rng.uniform(size=240) < np.where(drop >= 0.5, 0.6, 0.2)
    got = peak_tests(drop, pred, np.asarray([0, 2]), labels, extra)
    assert [e.test.cls for e in got] == [0, 2]
    flag_all = drop >= 0.5
    rest_rate = (np.sum(extra & ~flag_all) + 1) / (np.sum(~flag_all) + 2)
    for t, share, rest, other, fell, fell_rest, fell_p, fell_rows in got:
        own = pred == t.cls
        k, n = np.sum(own & flag_all & extra), np.sum(own & flag_all)
        assert (fell_rows, fell, fell_rest) == (k, pytest.approx(k / n), pytest.approx(rest_rate))
        tail = sum(
            math.comb(n, j) * rest_rate**j * (1 - rest_rate) ** (n - j) for j in range(k, n + 1)
        )
        assert fell_p == pytest.approx(tail, rel=1e-9)
        hit = drop >= 0.25  # the test's hits, at TAU
        flag = drop >= 0.5  # what the labels read: the rows it would flag
        labelled = labels >= 0
        assert (t.hits, t.rows) == (np.sum(own & hit), np.sum(own))
        assert (t.other_hits, t.other_rows) == (np.sum(~own & hit), np.sum(~own))
        assert t.p_value == labels_p_value(flag, own, labels, t.cls)
        assert share == pytest.approx(np.mean(labels[own & flag & labelled] != t.cls))
        assert rest == pytest.approx(np.mean(labels[own & ~flag & labelled] != t.cls))
        assert other == np.sum(own & flag & labelled & (labels != t.cls))
        assert other < round(np.sum(own & flag) * share)  # unlabelled rows are not counted
    # without labels or maps: no label evidence, and the maps' test says nothing
    for e in peak_tests(drop, pred, np.asarray([0, 2]), None):
        assert math.isnan(e.share) and e.other_labelled == 0 and e.test.p_value == 1.0
        assert e.extra_p == 1.0 and e.extra_rows == 0


def test_a_map_loses_a_salient_extra_where_its_contrast_falls_to_an_ordinary_maps():
    typical = 10.0
    contrast = np.asarray([30.0, 30.0, 30.0, 12.0, 12.0, 9.0])
    hidden = np.asarray([10.0, 7.0, 29.0, 9.6, 9.7, 12.0])
    want = [
        hidden[i] * CONTRAST_FALL <= contrast[i] and hidden[i] >= ORDINARY * typical
        for i in range(len(contrast))
    ]
    # an extra on an ordinary map; the only thing in the image (what is left is below an
    # ordinary map); a map that barely changes; a fall of exactly CONTRAST_FALL; one just
    # short of it; a map that peaks harder without the window
    assert want == [True, False, False, True, False, False]
    np.testing.assert_array_equal(lost_extra(contrast, hidden, typical), want)


def maps_evidence(t: ProbeTest, extra: float, p: float, share=float("nan")) -> PeakTest:
    return PeakTest(t, share, float("nan"), 0, extra, 0.1, p, round(t.hits * extra))


def test_the_maps_make_a_peak_test_a_candidate_without_labels_where_every_rule_holds():
    n = 4
    ok = a_test(20, 0.6, 1.0)  # the labels say nothing (no labels)
    assert maps_mark(maps_evidence(ok, 0.8, ALPHA / n / 10), n)
    assert not confirmed(maps_evidence(ok, 0.8, ALPHA / n / 10), n)  # not by the labels
    assert not maps_mark(maps_evidence(ok, 0.8, ALPHA / n * 2), n)  # not significant
    assert not maps_mark(maps_evidence(ok, MIN_EXTRA * 0.9, 1e-9), n)  # too few lose one
    assert not maps_mark(maps_evidence(a_test(20, MIN_COLLAPSE * 0.9, 1.0), 0.8, 1e-9), n)
    assert not maps_mark(maps_evidence(a_test(MIN_HITS + 1, 0.6, 1.0), 0.5, 1e-9), n)  # 3 rows
    # labels, given, may disown it (its flagged rows mostly labelled the class) ...
    assert not maps_mark(maps_evidence(ok, 0.8, 1e-9, share=0.3), n)
    # ... and need not confirm it (the class's own images carry the mark too)
    assert maps_mark(maps_evidence(ok, 0.8, 1e-9, share=0.5), n)
    # a lead by the maps only where they are asked for the class
    lead = maps_evidence(ok, 0.8, 0.02)
    assert is_lead(lead, n, by_maps=True) and not is_lead(lead, n)
    assert not is_lead(maps_evidence(ok, 0.8, 1e-9), n, by_maps=True)  # a candidate already
    assert not is_lead(maps_evidence(ok, MIN_EXTRA * 0.9, 0.02), n, by_maps=True)


def test_a_class_the_maps_confirm_is_a_candidate_only_where_its_windows_are_enough():
    # 20 rows of class 0 knocked out by their windows, each map losing its peak (3.0 -> 1.0,
    # the median); 60 rows of classes 1-3 untouched: the maps confirm class 0. A mark's window
    # pasted into other images moves them (0.9 against a null of 0.1); a digit's stroke
    # junction does not (0.05 against 0.03: an object part), and is no candidate
    pred = np.repeat([0, 1, 2, 3], 20)
    drop = np.where(pred == 0, 0.9, 0.0)
    contrast = np.where(pred == 0, 3.0, 1.0)

    def follow(x, peaks):
        return pred, drop, contrast, np.ones(len(x))

    sample = PeakRows(np.zeros((80, 16, 16, 3), np.float32), np.full((80, 2), 8), None)
    asked = []

    def transplant(moved):
        def test(cls, hit):
            asked.append((cls, hit.copy()))
            return moved

        return test

    (found,) = peak_candidates(follow, sample, pred, transplant=transplant((0.9, 0.1)))
    assert found.cls == 0 and (found.transplant, found.transplant_null) == (0.9, 0.1)
    assert asked[0][0] == 0 and np.array_equal(asked[0][1], drop >= 0.5)  # the hits flagged
    assert peak_candidates(follow, sample, pred, transplant=transplant((0.05, 0.03))) == []
    assert peak_candidates(follow, sample, pred, {0}, transplant=transplant((0.9, 0.1))) == []
    assert len(peak_candidates(follow, sample, pred)) == 1  # not asked: the maps alone


def test_a_lead_is_counted_again_where_only_the_counts_or_the_correction_fail():
    n = 4
    lead = a_test(20, 0.6, 0.02)  # significant at LEAD_ALPHA, not at ALPHA / n
    assert is_lead(evidence(lead, 0.8, 0.1), n) and not confirmed(evidence(lead, 0.8, 0.1), n)
    few = a_test(6, 0.6, 1e-4)  # 3 hits labelled another class: too few to confirm
    assert is_lead(evidence(few, 0.5, 0.0), n)
    assert not is_lead(evidence(a_test(20, 0.6, 1e-6), 0.8, 0.1), n)  # confirmed already
    assert not is_lead(evidence(a_test(20, 0.6, LEAD_ALPHA * 2), 0.8, 0.1), n)
    assert not is_lead(evidence(lead, 0.4, 0.0), n)  # the class's own images
    assert not is_lead(evidence(a_test(20, MIN_COLLAPSE * 0.9, 0.02), 0.8, 0.1), n)


def test_evenly_spaced_rows_take_the_first_and_the_last_and_never_more_than_there_are():
    np.testing.assert_array_equal(evenly_spaced(10, 4), [0, 3, 6, 9])
    np.testing.assert_array_equal(evenly_spaced(3, 8), [0, 1, 2])
    assert evenly_spaced(0, 5).size == 0 and evenly_spaced(5, 0).size == 0


def square_model():
    """Three classes by the colour of a blob (its channel with the most excess over the grey
    background) and class 0 whenever a white square of ``SQUARE`` px lies anywhere (the
    shortcut: its smallest channel's excess, box-averaged over the square, is high).
    Activations: the image's excess over grey (the square lights every channel, a blob one)."""

    def apply(params, x):
        excess = jnp.maximum(x - 0.3, 0.0)
        colour = jnp.max(excess.reshape(x.shape[0], -1, 3), axis=1)
        white = jnp.min(excess, axis=-1)  # (B, H, W): high on white only
        k = jnp.ones((SQUARE, SQUARE)) / SQUARE**2
        boxed = jax_box(white, k)
        square = jnp.max(boxed.reshape(x.shape[0], -1), axis=1)
        logits = 20.0 * colour + jnp.stack(
            [80.0 * jnp.maximum(square - 0.5, 0.0), 0 * square, 0 * square], axis=1
        )
        return Features(activations=(excess,), output=logits)

    return from_fn(apply, {}, (64, 64, 3), ("excess",), has_output=True)


def jax_box(white: jnp.ndarray, k: jnp.ndarray) -> jnp.ndarray:
    import jax

    return jax.vmap(lambda im: jax.scipy.signal.convolve2d(im, k, mode="valid"))(white)


def square_images(n: int = 480, seed: int = 0, margin: int = 0, rate: float = 0.25):
    """Grey noisy 64 px backgrounds, a coloured 10x10 blob anywhere (the label: its colour
    channel) and on a share ``rate`` of the images a white ``SQUARE`` px square anywhere
    else, at least ``margin`` px from the image's edges."""
    rng = np.random.default_rng(seed)
    x = 0.3 + 0.02 * rng.standard_normal((n, 64, 64, 3))
    labels = rng.integers(0, 3, n)
    marked = rng.uniform(size=n) < rate
    for i, c in enumerate(labels):
        y0, x0 = rng.integers(0, 54, size=2)
        x[i, y0 : y0 + 10, x0 : x0 + 10, c] = 0.9
        while marked[i]:
            sy, sx = rng.integers(margin, 64 - SQUARE - margin, size=2)
            if sy + SQUARE <= y0 or sy >= y0 + 10 or sx + SQUARE <= x0 or sx >= x0 + 10:
                x[i, sy : sy + SQUARE, sx : sx + SQUARE, :] = 1.0
                break
    return np.clip(x, 0, 1).astype(np.float32), labels, marked


@pytest.mark.slow
def test_a_square_at_a_random_place_is_found_by_the_peak_with_labels(tmp_path):
    """The model relies on the square wherever it lies; the audit with labels finds it by the
    peak probe (where a border ring takes the squares near the edge, the maps' rule is not
    asked for the class) and flags only rows labelled another class; the report shows its
    evidence."""
    images, labels, marked = square_images()
    model = square_model()
    pred = np.asarray(jnp.argmax(model.apply(model.params, jnp.asarray(images)).output, 1))
    relied = marked & (labels != 0)
    assert np.all(pred[relied] == 0) and np.mean(pred[~marked] == labels[~marked]) > 0.95
    source = tmp_path / "squares.npz"
    np.savez(source, images=images, labels=np.asarray(labels).astype(str))
    audit(str(source), model, out=tmp_path / "labelled", reliance_sample=240)
    cands = pq.read_table(tmp_path / "labelled" / RELIANCE_FILE).to_pydict()
    at = [k for k, kind in enumerate(cands["region_kind"]) if kind == "peak"]
    assert len(at) == 1 and cands["predicted_class"][at[0]] == 0, cands["region"]
    assert cands["status"][at[0]] == "confirmed" and cands["label_other"][at[0]] >= 0.5
    flags = pq.read_table(tmp_path / "labelled" / "flags.parquet").to_pydict()
    found = np.zeros(len(images), bool)  # by any candidate (a fixed one may flag a row first)
    by_peak = np.zeros(len(images), bool)
    for rid, region in zip(flags["id"], flags["region"], strict=True):
        found[int(rid)] = True
        by_peak[int(rid)] = region == cands["region"][at[0]]
    assert found[relied].mean() >= 0.95 and marked[found].mean() >= 0.95
    assert by_peak.sum() >= 0.5 * relied.sum() and marked[by_peak].all()
    assert not np.any(by_peak & (labels == 0))  # only rows labelled another class
    html = write_report(tmp_path / "labelled").read_text()
    assert "(its own on each row)" in html and "a lead the labels confirm" in html


@pytest.mark.slow
def test_a_square_at_a_random_place_is_found_by_the_maps_without_labels(tmp_path):
    """Without labels: the window knocks out the square's rows and the blob classes' own
    blobs alike, and only the square's rows lose a salient extra (what is left is a blob's
    ordinary map; a hidden blob leaves noise): the square's class is a candidate, flagged on
    every row its window knocks out, the blobs' classes are not; the same images without a
    square give no candidate at all."""
    images, labels, marked = square_images(margin=8)  # no fixed ring holds a square
    model = square_model()
    relied = marked & (labels != 0)
    audit(images, model, out=tmp_path / "unlabelled", reliance_sample=240)
    cands = pq.read_table(tmp_path / "unlabelled" / RELIANCE_FILE).to_pydict()
    assert cands["region_kind"] == ["peak"] and cands["predicted_class"] == [0], cands
    assert cands["label_other"] == [None] and cands["lost_extra"][0] >= MIN_EXTRA
    assert cands["lost_extra_rest"][0] < 0.5 * cands["lost_extra"][0]
    assert cands["transplant"][0] >= 2 * cands["transplant_null"][0] + 0.2  # the square: enough
    flags = pq.read_table(tmp_path / "unlabelled" / "flags.parquet").to_pydict()
    flagged = np.zeros(len(images), bool)
    flagged[[int(i) for i in flags["id"]]] = True
    assert flagged[relied].all()  # every image the square moved to class 0
    assert np.all(labels[flagged & ~marked] == 0)  # the rest: class 0's own blobs it hides
    html = write_report(tmp_path / "unlabelled").read_text()
    assert "lost a salient extra" in html and "a lead the labels confirm" not in html
    clean, _, _ = square_images(margin=8, rate=0.0)
    audit(clean, model, out=tmp_path / "clean", reliance_sample=240)
    assert pq.read_table(tmp_path / "clean" / RELIANCE_FILE).num_rows == 0


@pytest.mark.slow
def test_a_lead_on_a_small_sample_is_counted_again_on_more_of_its_class(tmp_path):
    """With 10 sampled rows per class the square's class is a lead only (3 hits labelled
    another class); counted again with up to three times as many of its rows read again, it
    is confirmed, and its test counts those rows."""
    images, labels, marked = square_images()
    model = square_model()
    source = tmp_path / "squares.npz"
    np.savez(source, images=images, labels=np.asarray(labels).astype(str))
    audit(str(source), model, out=tmp_path / "small", reliance_sample=30)
    cands = pq.read_table(tmp_path / "small" / RELIANCE_FILE).to_pydict()
    at = [k for k, kind in enumerate(cands["region_kind"]) if kind == "peak"]
    assert len(at) == 1 and cands["status"][at[0]] == "confirmed", cands
    assert cands["sample_rows"][at[0]] > 10  # the class's 10 sampled rows and more
    assert cands["p_value"][at[0]] <= ALPHA / 3
    grown = cands["sample_rows"][at[0]] - 10  # the class's rows read again for the lead
    summary = json.loads((tmp_path / "small" / "manifest.json").read_text())["reliance"]
    assert f"on 30 sampled rows (+{grown} read for leads)," in summary, summary
    flags = pq.read_table(tmp_path / "small" / "flags.parquet").to_pydict()
    flagged = np.asarray([int(i) for i in flags["id"]])
    assert len(flagged) and marked[flagged].all() and np.all(labels[flagged] != 0)
