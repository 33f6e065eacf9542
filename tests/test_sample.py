"""Tests for the bundled sample data set and model (fastfem.sample)."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import numpy as np
import pytest

from fastfem import sample
from fastfem.sample import dataset


@pytest.fixture(scope="module")
def test_set() -> sample.SampleSet:
    return sample.generate("test")


def test_determinism(test_set):
    again = sample.generate("test")
    np.testing.assert_array_equal(again.images, test_set.images)
    np.testing.assert_array_equal(again.labels, test_set.labels)
    np.testing.assert_array_equal(again.boxes, test_set.boxes)
    np.testing.assert_array_equal(again.watermark, test_set.watermark)
    assert again.ids == test_set.ids


def test_prefix_independent_of_n(test_set):
    head = sample.generate("test", n=10)
    np.testing.assert_array_equal(head.images, test_set.images[:10])
    np.testing.assert_array_equal(head.labels, test_set.labels[:10])
    np.testing.assert_array_equal(head.boxes, test_set.boxes[:10])
    np.testing.assert_array_equal(head.watermark, test_set.watermark[:10])
    assert head.ids == test_set.ids[:10]


def test_splits_differ_and_validate():
    a = sample.generate("train", n=4)
    b = sample.generate("test", n=4)
    assert not np.array_equal(a.images, b.images)
    assert a.ids[0] == "train-00000" and b.ids[3] == "test-00003"
    assert len(sample.generate("test", n=0)) == 0
    with pytest.raises(ValueError):
        sample.generate("valid")


def test_shapes_dtypes_range(test_set):
    s = sample.IMAGE_SIZE
    n = len(test_set)
    assert n == 512
    assert test_set.images.shape == (n, s, s, 3) and test_set.images.dtype == np.float32
    assert test_set.images.min() >= 0.0 and test_set.images.max() <= 1.0
    assert test_set.labels.shape == (n,) and np.issubdtype(test_set.labels.dtype, np.integer)
    assert set(np.unique(test_set.labels)) == set(range(len(sample.CLASS_NAMES)))
    assert test_set.boxes.shape == (n, 4) and np.issubdtype(test_set.boxes.dtype, np.integer)
    assert test_set.watermark.shape == (n,) and test_set.watermark.dtype == bool
    assert len(test_set.ids) == n and len(set(test_set.ids)) == n
    assert sample.CLASS_NAMES == ("circle", "square", "triangle", "cross")


def test_boxes_inside_and_tight(test_set):
    b = test_set.boxes
    s = sample.IMAGE_SIZE
    assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all()
    assert (b[:, 2] <= s).all() and (b[:, 3] <= s).all()
    w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
    assert (w >= 10).all() and (h >= 10).all() and (w <= 31).all() and (h <= 31).all()
    masks = sample.generate_masks("test", n=64)
    for mask, (x0, y0, x1, y1) in zip(masks, b[:64], strict=True):
        inside = np.zeros_like(mask)
        inside[y0:y1, x0:x1] = True
        assert mask.any() and not (mask & ~inside).any()  # box contains the shape
        # tight: every border row/column of the box touches the shape
        assert mask[y0].any() and mask[y1 - 1].any()
        assert mask[:, x0].any() and mask[:, x1 - 1].any()


def test_shape_pixels_differ_from_background(test_set):
    masks = sample.generate_masks("test", n=32)
    for img, mask in zip(test_set.images[:32], masks, strict=True):
        fg = img[mask].mean(axis=0)
        bg = img[~mask].mean(axis=0)
        assert np.abs(fg - bg).max() > 0.2


def test_watermark_fraction_and_corner(test_set):
    wm = test_set.watermark
    assert 0.05 <= wm.mean() <= 0.15
    x0, y0, x1, y1 = sample.WATERMARK_BOX
    corners = test_set.images[:, y0:y1, x0:x1, :]
    patch = dataset.watermark_patch()[:, :, None]
    np.testing.assert_array_equal(corners[wm], np.broadcast_to(patch, corners[wm].shape))
    # clean corners are low-contrast background, far from the checker
    dist = np.abs(corners - patch).mean(axis=(1, 2, 3))
    assert dist[~wm].min() > 0.25
    assert corners[~wm].std(axis=(1, 2)).max() < 0.15
    # test split: independent of class (every class gets watermarked images)
    assert len(np.unique(test_set.labels[wm])) == len(sample.CLASS_NAMES)


def test_train_watermark_is_a_shortcut():
    train = sample.generate("train", n=1000)
    wm = train.watermark
    assert 0.05 <= wm.mean() <= 0.15
    assert np.mean(train.labels[wm] == 0) >= 0.65


def test_write_png_folder(tmp_path, test_set):
    from PIL import Image

    small = sample.generate("test", n=6)
    paths = sample.write_png_folder(small, tmp_path)
    assert len(paths) == 6
    for p, label, id_, img in zip(paths, small.labels, small.ids, small.images, strict=True):
        assert p == tmp_path / sample.CLASS_NAMES[label] / f"{id_}.png"
        arr = np.asarray(Image.open(p))
        assert arr.shape == (64, 64, 3) and arr.dtype == np.uint8
        assert np.abs(arr / 255.0 - img).max() <= 0.5 / 255 + 1e-6


def test_build_model_architecture():
    model = sample.build_model()
    assert model.input_shape == (None, 64, 64, 3)
    assert model.output_shape == (None, 4)
    convs = [layer for layer in model.layers if layer.__class__.__name__ == "Conv2D"]
    assert len(convs) == 3 and convs[-1].name == "last_conv"
    assert model.get_layer("embedding").__class__.__name__ == "GlobalAveragePooling2D"
    assert model.get_layer("predictions").__class__.__name__ == "Dense"
    assert model.count_params() < 100_000


def test_bundled_model_accuracy(test_set):
    assert sample.MODEL_PATH.is_file()
    assert sample.MODEL_PATH.stat().st_size < 2 * 1024 * 1024
    model = sample.load_model()
    assert model.get_layer("last_conv").output.shape[1:3] == (16, 16)
    probs = np.asarray(model.predict(test_set.images, batch_size=256, verbose=0))
    acc = float(np.mean(probs.argmax(-1) == test_set.labels))
    assert acc >= 0.95, acc


def test_the_training_recipe_takes_another_architecture():
    # benchmarks.shortcut_resnet trains a ResNet (batch norm, residual blocks: not a chain of
    # layers) with the sample's recipe: centred training, the centring folded into conv1, and a
    # fresh copy of the same architecture holding the folded model's weights.
    from benchmarks.shortcut_resnet import build_resnet
    from fastfem.sample.train import fit_sample_cnn

    rng = np.random.default_rng(0)
    x = rng.uniform(size=(32, 32, 32, 3)).astype(np.float32)
    y = rng.integers(0, 3, 32)
    seen = {}

    def evaluate(model, tag):
        seen[tag] = np.asarray(model.predict(x, verbose=0))

    model = fit_sample_cnn(
        x,
        y,
        epochs=1,
        finetune_epochs=0,
        batch_size=16,
        verbose=0,
        evaluate=evaluate,
        num_classes=3,
        build=build_resnet,
    )
    assert model.name == "shortcut_resnet" and model.get_layer("b3_a") is not None
    assert getattr(model, "optimizer", None) is None  # uncompiled
    np.testing.assert_allclose(model.predict(x, verbose=0), seen["folded model"], atol=1e-6)
    assert set(seen) == {"centred model", "folded model"}
