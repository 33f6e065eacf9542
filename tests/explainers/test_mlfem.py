"""`fastfem.MLFEM` against a NumPy composition: tests/support/fem_reference.py per layer, TF-exact
bicubic resize, min-max to [0, 1], then the fusion rule; default layers; bad fusion/weights."""

import cv2
import keras
import numpy as np
import pytest
from fem_reference import numpy_fem, scale_cam

import fastfem
from fastfem.explainers.mlfem import default_layers
from fastfem.kernels.fusion import check_fusion, fuse_maps, unit_normalize
from fastfem.kernels.resize import resize_matrices


def np_unit(m):
    span = m.max() - m.min()
    return (m - m.min()) / span if span > 1e-6 * np.abs(m).max() else np.zeros_like(m)


def np_layer_maps(acts, variant, out_hw, k=2.0):
    """One layer's maps as the fusion takes them: xplique: TF-exact bicubic then min-max to
    [0, 1]; gradcam: cv2 bilinear of the gradcam map, then max(., 0) (pytorch-grad-cam)."""
    if variant == "gradcam":
        low = [numpy_fem(a, k, "gradcam").astype(np.float32) for a in acts]
        big = [cv2.resize(m, out_hw[::-1], interpolation=cv2.INTER_LINEAR) for m in low]
        return np.maximum(np.stack(big).astype(np.float64), 0)
    rh, rw = resize_matrices(acts.shape[1:3], out_hw, "bicubic")
    return np.stack([np_unit(rh @ numpy_fem(a, k, "xplique") @ rw.T) for a in acts])


def np_mlfem(model, layers, x, fusion, weights=None, k=2.0, variant="xplique"):
    outs = keras.Model(model.inputs, [model.get_layer(n).output for n in layers])(x)
    per_layer = [np_layer_maps(np.asarray(acts), variant, x.shape[1:3], k) for acts in outs]
    stack = np.stack(per_layer, axis=1)  # (N, L, H, W)
    if fusion == "mean":
        fused = stack.mean(1)
    elif fusion == "product":
        fused = stack.prod(1)
    else:
        a = np.asarray(weights, np.float64) / np.sum(weights)
        fused = np.einsum("l,nlhw->nhw", a, stack)
    if variant == "gradcam":  # pytorch-grad-cam's final min-max of the aggregate
        fused = np.stack([scale_cam(m) for m in fused])
    return fused, stack


class _Layer:
    """Just what `default_layers` reads of a Keras layer (building real ones takes seconds)."""

    def __init__(self, name, hw, filters=True, rank=4):
        self.name = name
        self.output = type("T", (), {"shape": (None, *hw, 4)[:rank]})()
        if filters:
            self.filters = 4


def test_default_layers_last_conv_of_each_resolution_stage(cnn32):
    assert default_layers(cnn32) == ["conv_a", "conv_b"]  # 30x30 then 15x15
    layers = [
        _Layer("input", (16, 16), filters=False),
        _Layer("s1a", (16, 16)),
        _Layer("s1b", (16, 16)),
        _Layer("pool", (8, 8), filters=False),
        _Layer("s2a", (8, 8)),
        _Layer("dw", (8, 8), filters=False),  # DepthwiseConv2D: no `filters`
        _Layer("s2b", (8, 8)),
        _Layer("act", (8, 8), filters=False),
        _Layer("conv1d", (8,), rank=3),  # not 2-D: ignored
    ]
    model = type("M", (), {"name": "fake", "layers": layers})()
    assert default_layers(model) == ["s1b", "s2b"]
    flat = type("M", (), {"name": "flat", "layers": layers[:1] + layers[-1:]})()
    with pytest.raises(ValueError, match="no 2-D convolutional layer"):
        default_layers(flat)


@pytest.mark.parametrize(
    "fusion,weights", [("mean", None), ("product", None), ("weighted", [3.0, 1.0])]
)
def test_matches_numpy_composition(cnn32, images32, fusion, weights):
    x = images32[:5]
    ml = fastfem.MLFEM(cnn32, fusion=fusion, weights=weights, batch_size=4)
    assert ml.layer_names == ("conv_a", "conv_b")
    maps, layers = ml.explain(x, return_layers=True)
    assert maps.shape == (5, 32, 32, 1) and layers.shape == (5, 2, 32, 32)
    want, want_layers = np_mlfem(cnn32, ml.layer_names, x, fusion, weights)
    np.testing.assert_allclose(layers, want_layers, atol=1e-5)
    np.testing.assert_allclose(maps[..., 0], want, atol=1e-5)
    assert layers.min() >= 0 and layers.max() <= 1 + 1e-6
    assert np.allclose(layers.max(axis=(2, 3)), 1.0)  # each layer's map normalised
    assert np.ptp(want) > 0.1


@pytest.mark.parametrize(
    "fusion,weights", [("mean", None), ("product", None), ("weighted", [3.0, 1.0])]
)
def test_gradcam_variant_follows_pytorch_grad_cam_pipeline(cnn32, images32, fusion, weights):
    # per layer: gradcam map (ReLU, min-max at (h, w)), bilinear resize, max(., 0) -- no
    # per-layer min-max after the resize; then the fusion and ONE final min-max (for "mean"
    # this is pytorch-grad-cam's multi-layer FEM; tests/explainers/test_gradcam_parity.py
    # compares with grad-cam itself)
    x = images32[:5]
    layers = ["relu_a", "relu_b"]
    ml = fastfem.MLFEM(cnn32, layers=layers, fusion=fusion, weights=weights, variant="gradcam")
    maps, stack = ml.explain(x, return_layers=True)
    want, want_stack = np_mlfem(cnn32, layers, x, fusion, weights, variant="gradcam")
    np.testing.assert_allclose(stack, want_stack, atol=1e-5)
    np.testing.assert_allclose(maps[..., 0], want, atol=1e-5)
    assert np.ptp(want) > 0.5
    assert stack.max(axis=(2, 3)).min() < 0.999  # resized layer maps are not re-normalised
    np.testing.assert_allclose(maps.max(axis=(1, 2, 3)), 1, atol=1e-6)


def test_explicit_layers_and_bundled_model(images32, cnn32):
    ml = fastfem.MLFEM(cnn32, layers=["relu_a", 4])  # by name and by index (conv_b)
    assert ml.layer_names == ("relu_a", "conv_b")
    assert ml.explain(images32[:3]).shape == (3, 32, 32, 1)
    sample = pytest.importorskip("fastfem.sample")
    if not sample.MODEL_PATH.exists():
        pytest.skip("the bundled sample model is not built")
    bundled = fastfem.MLFEM(str(sample.MODEL_PATH))
    assert bundled.layer_names == ("conv1", "conv2", "last_conv")


def test_fusion_kernel_rules():
    m = np.stack([np.full((2, 2), 0.5), np.array([[0.0, 1.0], [0.2, 0.4]])]).astype(np.float32)
    np.testing.assert_allclose(fuse_maps(m, "mean"), [[0.25, 0.75], [0.35, 0.45]], atol=1e-7)
    np.testing.assert_allclose(fuse_maps(m, "product"), [[0.0, 0.5], [0.1, 0.2]], atol=1e-7)
    w = check_fusion("weighted", [1, 3], 2)
    np.testing.assert_allclose(fuse_maps(m, "weighted", w), 0.25 * m[0] + 0.75 * m[1], atol=1e-7)
    np.testing.assert_array_equal(unit_normalize(np.full((3, 3), 7.0)), np.zeros((3, 3)))
    tiny = np.array([[0, 1e-20], [2e-20, 4e-20]], np.float32)  # scale-invariant, not eps-bound
    np.testing.assert_allclose(unit_normalize(tiny), [[0, 0.25], [0.5, 1]], rtol=1e-6, atol=1e-7)


def test_bad_fusion_and_weights(cnn32):
    with pytest.raises(ValueError, match=r"unknown fusion 'max'; expected one of"):
        fastfem.MLFEM(cnn32, fusion="max")
    with pytest.raises(ValueError, match="needs weights=, one per layer"):
        fastfem.MLFEM(cnn32, fusion="weighted")
    with pytest.raises(ValueError, match=r"2 layers, got weights of shape \(3,\)"):
        fastfem.MLFEM(cnn32, fusion="weighted", weights=[1, 2, 3])
    with pytest.raises(ValueError, match="finite and >= 0"):
        fastfem.MLFEM(cnn32, fusion="weighted", weights=[1, -1])
    with pytest.raises(ValueError, match="sum to 0"):
        fastfem.MLFEM(cnn32, fusion="weighted", weights=[0, 0])
    with pytest.raises(ValueError, match="only used with fusion='weighted'"):
        fastfem.MLFEM(cnn32, fusion="mean", weights=[1, 1])
    with pytest.raises(TypeError, match="list of layer names"):
        fastfem.MLFEM(cnn32, layers="conv_a")
    with pytest.raises(ValueError, match="no layer named 'nope'"):
        fastfem.MLFEM(cnn32, layers=["conv_a", "nope"])
    with pytest.raises(ValueError, match="repeat a layer"):
        fastfem.MLFEM(cnn32, layers=["conv_a", "conv_a"])
    with pytest.raises(ValueError, match="unknown FEM variant"):
        fastfem.MLFEM(cnn32, variant="nope")
    ext = fastfem.converters.from_keras(cnn32, layers=["conv_a", "conv_b"])
    with pytest.raises(ValueError, match="cannot re-select layers"):
        fastfem.MLFEM(ext, layers=["conv_a"])
    assert fastfem.MLFEM(ext).layer_names == ("conv_a", "conv_b")


def test_cli_explain_method_mlfem(tmp_path, capsys):
    sample = pytest.importorskip("fastfem.sample")
    if not sample.MODEL_PATH.exists():
        pytest.skip("the bundled sample model is not built")
    import json

    from fastfem.cli import main

    np.save(tmp_path / "x.npy", sample.generate("test", 6).images)
    out = tmp_path / "ml"
    args = ["explain", str(tmp_path / "x.npy"), "--method", "mlfem", "--quiet"]
    assert main([*args, "--fusion", "product", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["layer"] == ["conv1", "conv2", "last_conv"] and summary["fusion"] == "product"
    assert np.load(out / "maps.npy").shape == (6, 64, 64, 1)
    assert main([*args, "--layer", "conv2,last_conv", "--out", str(tmp_path / "b")]) == 0
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["layer"] == [
        "conv2",
        "last_conv",
    ]
    capsys.readouterr()
    assert main([*args, "--similarity", "dot", "--out", str(tmp_path / "c")]) == 2
    assert "--similarity is only used by method='fam'" in capsys.readouterr().err
