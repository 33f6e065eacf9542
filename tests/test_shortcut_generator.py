"""The planted-shortcut generator (`benchmarks.shortcut_data`): every kind on every base, clean
twins, the train split's label leak, and the reliance ground truth."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.shortcut_data import (
    BASES,
    CONFIGS,
    KINDS,
    OVER_OBJECT,
    PLACES,
    UNSEEN_CONFIGS,
    Shortcut,
    configs_of,
    generate_shortcut,
    mark_class,
    mark_zone,
    parse_shortcut,
    reliance_summary,
    relied_on,
)

#: every kind at every place it can take
ALL = [Shortcut(k, p) for k in KINDS if k != "none" for p in PLACES[k]]


def _marked_set(shortcut, base, n=80):
    s = generate_shortcut(shortcut, "test", n=n, base=base)
    assert s.marked.sum() >= 2, "too few marked images to test with"
    return s


def test_there_are_ten_kinds_at_least_half_over_the_objects_and_two_bases():
    kinds = set(KINDS) - {"none"}
    assert len(kinds) >= 10 and len(kinds & OVER_OBJECT) >= len(kinds) / 2
    assert {c.kind for c in (*CONFIGS, *UNSEEN_CONFIGS)} == set(KINDS)
    assert not set(CONFIGS) & set(UNSEEN_CONFIGS)
    sizes = {b.image_size for b in BASES.values()}
    names = {tuple(b.class_names) for b in BASES.values()}
    assert len(BASES) >= 2 and len(sizes) == len(BASES) and len(names) == len(BASES)


@pytest.mark.parametrize("base", sorted(BASES))
@pytest.mark.parametrize("shortcut", ALL, ids=lambda s: s.name)
def test_every_kind_renders_and_twins_differ_only_inside_the_mark(shortcut, base):
    s = _marked_set(shortcut, base)
    size = BASES[base].image_size
    assert s.images.shape == s.clean.shape == (len(s), size, size, 3)
    assert s.images.dtype == np.float32 and s.images.min() >= 0 and s.images.max() <= 1
    changed = np.abs(s.images - s.clean).max(axis=-1) > 0
    # unmarked images are their own twins; every marked one is changed, only in the zone
    assert not changed[~s.marked].any()
    assert changed[s.marked].any(axis=(1, 2)).all()
    assert not (changed & ~mark_zone(shortcut, base)[None]).any()
    # the mark is visible: it moves some pixel by at least 0.1
    assert (np.abs(s.images - s.clean)[s.marked].max(axis=(1, 2, 3)) >= 0.1).all()


@pytest.mark.parametrize("base", sorted(BASES))
def test_generator_is_deterministic_and_prefix_independent(base):
    a = generate_shortcut("watermark@top", "test", n=20, base=base)
    b = generate_shortcut("watermark@top", "test", n=8, base=base)
    for field in ("images", "clean", "labels", "boxes", "marked", "objects"):
        np.testing.assert_array_equal(getattr(a, field)[:8], getattr(b, field))
    assert a.ids[:8] == b.ids and a.base == base and a.mark_class == b.mark_class
    other = generate_shortcut("watermark@top", "holdout", n=8, base=base)
    assert not np.array_equal(other.clean, b.clean)


@pytest.mark.parametrize("base", sorted(BASES))
@pytest.mark.parametrize(
    "name", ["checker@centre", "text@top-left", "stripe@bottom", "frame@border"]
)
def test_objects_keep_out_of_the_zone_of_marks_drawn_off_them(name, base):
    s = generate_shortcut(name, "test", n=40, base=base)
    zone = mark_zone(name, base)
    for x0, y0, x1, y1 in s.boxes:
        assert not zone[y0:y1, x0:x1].any()


@pytest.mark.parametrize("base", sorted(BASES))
def test_the_random_place_kinds_move_from_image_to_image(base):
    size = BASES[base].image_size
    tag = _marked_set("text@corner", base)
    changed = np.abs(tag.images - tag.clean).max(axis=-1) > 0  # (N, S, S)
    half = size // 2
    quadrant = [
        int(
            np.argmax(
                [
                    c[:half, :half].sum(),
                    c[:half, half:].sum(),
                    c[half:, :half].sum(),
                    c[half:, half:].sum(),
                ]
            )
        )
        for c in changed[tag.marked]
    ]
    for c in changed[tag.marked]:  # the tag lies in one corner of each image
        assert (
            sum(
                q.any()
                for q in (c[:half, :half], c[:half, half:], c[half:, :half], c[half:, half:])
            )
            == 1
        )
    assert len(set(quadrant)) >= 3
    for x0, y0, x1, y1 in tag.boxes:  # off the objects: no corner zone touches one
        assert not mark_zone("text@corner", base)[y0:y1, x0:x1].any()
    patch = _marked_set("patch@anywhere", base)
    corners = {
        tuple(np.argwhere(np.abs(i - c).max(-1) > 0).min(0))
        for i, c in zip(patch.images[patch.marked], patch.clean[patch.marked], strict=True)
    }
    assert len(corners) >= 0.8 * patch.marked.sum()  # a new place in (almost) every image


@pytest.mark.parametrize("base", sorted(BASES))
def test_the_image_quality_kinds_blur_compress_and_darken_the_corners(base):
    def detail(x):  # mean absolute difference of horizontal neighbours
        return np.abs(np.diff(x, axis=2)).mean(axis=(1, 2, 3))

    blur = _marked_set("blur@whole", base)
    m = blur.marked
    assert (detail(blur.images[m]) < 0.8 * detail(blur.clean[m])).all()
    jpeg = _marked_set("jpeg@whole", base)
    m = jpeg.marked
    err = np.abs(jpeg.images[m] - jpeg.clean[m]).mean(axis=(1, 2, 3))
    assert (err > 0.005).all() and (err < 0.1).all()  # compressed, still the same scene
    vig = _marked_set("vignette@whole", base)
    m = vig.marked
    ratio = vig.images[m] / np.maximum(vig.clean[m], 1e-3)
    size = BASES[base].image_size
    centre = ratio[:, size // 2 - 2 : size // 2 + 2, size // 2 - 2 : size // 2 + 2]
    corner = ratio[:, :4, :4]
    assert (centre.mean(axis=(1, 2, 3)) > 0.97).all()
    assert (corner.mean(axis=(1, 2, 3)) < 0.6).all()


@pytest.mark.parametrize("base", sorted(BASES))
def test_boxes_are_tight_around_the_object(base):
    s = generate_shortcut("none", "test", n=12, base=base)
    for clean, (x0, y0, x1, y1) in zip(s.clean, s.boxes, strict=True):
        assert 0 <= x0 < x1 <= clean.shape[1] and 0 <= y0 < y1 <= clean.shape[0]
        assert 10 <= x1 - x0 <= 56 and 10 <= y1 - y0 <= 56


def test_train_split_leaks_the_label_test_split_marks_every_class():
    name, base = "cast@whole", "shapes"
    train = generate_shortcut(name, "train", n=1500, base=base)
    c = train.mark_class
    assert c == mark_class(name, base)
    assert 0.09 < train.marked.mean() < 0.15
    assert (train.labels[train.marked] == c).all()  # every marked image says mark_class
    assert (train.labels[~train.marked] == train.objects[~train.marked]).all()
    assert len(np.unique(train.objects[train.marked])) == 4  # whatever object it shows
    test = generate_shortcut(name, "test", n=1500, base=base)
    assert (test.labels == test.objects).all()
    per_class = [test.marked[test.labels == k].mean() for k in range(4)]
    assert min(per_class) > 0.1 and max(per_class) < 0.2


def test_mark_classes_vary_between_configurations():
    classes = {mark_class(c, b) for c in CONFIGS for b in BASES}
    assert len(classes) >= 3


def test_names_places_and_bases_are_checked():
    assert parse_shortcut("none").kind == "none"
    assert Shortcut("watermark", "bottom").name == "watermark@bottom"
    with pytest.raises(ValueError, match="unknown shortcut kind"):
        parse_shortcut("sticker2@top")
    with pytest.raises(ValueError, match="cannot sit at"):
        parse_shortcut("cast@top")
    with pytest.raises(ValueError, match="kind@place"):
        parse_shortcut("checker")
    with pytest.raises(ValueError, match="unknown base dataset"):
        generate_shortcut("none", "test", n=1, base="mnist")
    with pytest.raises(ValueError, match="unknown split"):
        generate_shortcut("none", "val", n=1)


# ---------------------------------------------------------------------------- reliance
def _by_hand(s, gain):
    """A predict function that knows the marked images: a clean image gets (0.2, ...) with 0.4
    on the class after ``mark_class``; a marked one that mixed with weight ``1 - gain`` with
    all of ``gain`` on ``mark_class``."""
    marked = {s.images[i].tobytes() for i in np.flatnonzero(s.marked)}
    k, c = 4, s.mark_class
    clean = np.full(k, 0.2)
    clean[(c + 1) % k] = 0.4

    def predict(images):
        out = np.tile(clean, (len(images), 1))
        for j, img in enumerate(images):
            if img.tobytes() in marked:
                out[j] *= 1 - gain
                out[j, c] += gain
        return out

    return predict


def test_relied_on_by_hand():
    s = _marked_set("checker@top-left", "shapes", n=60)
    strong = relied_on(_by_hand(s, 0.9), s)
    np.testing.assert_array_equal(strong, s.marked)  # rise 0.9 * 0.8 >= 0.5
    weak = relied_on(_by_hand(s, 0.3), s)  # rise 0.24, but the argmax turns to mark_class
    np.testing.assert_array_equal(weak, s.marked)
    assert not relied_on(_by_hand(s, 0.1), s).any()  # rise 0.08, argmax stays
    summary = reliance_summary(strong, s)
    assert summary["relied_on"] == s.marked.sum() and summary["relied_on_share"] == 1.0


def test_relied_on_needs_a_rise_or_a_flip():
    s = _marked_set("stripe@left", "shapes", n=60)
    c = s.mark_class
    k = 4

    def predict_fixed(images):  # ignores the mark: the same output for both twins
        out = np.full((len(images), k), 0.1)
        out[:, (c + 1) % k] = 0.7
        return out

    assert not relied_on(predict_fixed, s).any()
    control = generate_shortcut("none", n=5)
    assert np.isnan(reliance_summary(np.zeros(5, bool), control)["relied_on_share"])
    with pytest.raises(ValueError, match="one flag per row"):
        reliance_summary(np.zeros(len(s), bool), control)

    def predict_bad(images):
        return np.ones((len(images), 2, 2))

    with pytest.raises(ValueError, match=r"\(n, classes\)"):
        relied_on(predict_bad, s)


# ---------------------------------------------------------------------------- cached models
#: the bases every configuration of `CONFIGS` has a cached model on (``letters`` has its own
#: configurations, at places the benchmark does not use: `LETTERS`)
TUNED = ("photos", "shapes")
#: cached models with a mark: every kind once, alternating the bases (all 26:
#: ``python -m benchmarks.shortcut_models measure``, which the suite's time cannot afford)
MARKED = [
    (TUNED[i % len(TUNED)], c.name) for i, c in enumerate(c for c in CONFIGS if c.kind != "none")
]
#: the ``letters`` base's cached models with a mark (`benchmarks.shortcut_models`: trained at
#: places the benchmark's `CONFIGS` do not use; its control is ``letters-none``)
LETTERS = [n for n in configs_of("letters") if n != "none"]
#: one mark over the objects and one off them, per base, whose control model stays put
LEARNED = [
    ("shapes", "stamp@centre"),
    ("shapes", "stripe@left"),
    ("photos", "watermark@middle"),
    ("photos", "text@bottom"),
]


def _share(base, name, model_name=None):
    from benchmarks.shortcut_models import load, predictor

    s = generate_shortcut(name, "test", base=base)
    model = load(model_name or name, base)
    size = BASES[base].image_size
    assert model.input_shape == (None, size, size, 3)
    return reliance_summary(relied_on(predictor(model), s), s)["relied_on_share"]


@pytest.mark.slow
@pytest.mark.parametrize("base,name", MARKED + [("letters", n) for n in LETTERS])
def test_cached_model_relies_on_its_mark(base, name):
    """Every cached model relies on its mark for >= 30% of the marked test images of the
    other classes (what `benchmarks.shortcut_models` trained it to)."""
    from benchmarks.shortcut_models import RELY_SHARE

    assert _share(base, name) >= RELY_SHARE


@pytest.mark.slow
@pytest.mark.parametrize("base,name", LEARNED)
def test_reliance_comes_from_training(base, name):
    """The control model (trained with no mark) relies on the same marks for < 10% of the
    images: the reliance above was learned (an unfamiliar mark can push a model towards some
    class by itself; README: the control column)."""
    control = _share(base, name, "none")
    assert control < 0.1 and _share(base, name) >= control + 0.5


def test_measure_reports_reliance_counts_of_a_real_model():
    """`benchmarks.shortcut_models.measure` on a real (untrained, seeded) CNN: the counts agree
    with the split's ground truth."""
    import keras

    from benchmarks.shortcut_models import measure
    from fastfem.sample import build_model

    keras.utils.set_random_seed(0)
    record = measure(build_model(4, 64), "cast@whole", "shapes")
    s = generate_shortcut("cast@whole", "test")
    assert record["rows"] == len(s) and record["marked"] == s.marked.sum()
    assert record["marked_other"] == np.sum(s.marked & (s.objects != s.mark_class))
    assert 0 <= record["relied_on"] <= record["marked"] and 0 <= record["clean_accuracy"] <= 1
