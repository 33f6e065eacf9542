"""Parity of fastfem's ``gradcam`` variant with pytorch-grad-cam itself (grad-cam 1.5.7).

The same small CNN is built in PyTorch and in Keras from ONE set of weights
(tests/support/twin_cnn.py); ``pytorch_grad_cam.FEM(model, target_layers)(x, targets=None)`` on
the PyTorch one is compared with ``fastfem.FEM(..., variant="gradcam").explain`` and
``fastfem.MLFEM(..., fusion="mean", variant="gradcam").explain`` on the Keras one: the public
outputs, end to end (grad-cam's per-layer ReLU, min-max, ``cv2.resize``, mean over layers and
final min-max). Bound: ``max |fastfem - grad-cam| <= 1e-5`` of grad-cam's range; measured
<= 1.7e-6 (x86-64 CPU, torch 2.13.0+cpu vs XLA:CPU; the models' logits differ by <= 5e-8).

pytorch-grad-cam imports torchvision at module level for paths FEM does not take; without an
installed torchvision, a stand-in that raises on any call is used (tests/support/torchvision_stub).
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from twin_cnn import import_pytorch_grad_cam, keras_cnn, torch_cnn, twin_weights

import fastfem

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("torch") is None
    or importlib.util.find_spec("pytorch_grad_cam") is None,
    reason="torch and grad-cam are needed (tests/run.sh installs them)",
)

#: The parity bound, relative to the range of grad-cam's map.
RTOL = 1e-5
SHAPES = [(32, 32), (24, 40)]
# before and after a ReLU, at the two resolutions (conv2 has positive biases, so its pre-ReLU
# map is not all negative; conv3's is, and gives grad-cam's all-zero map)
LAYERS = ["relu1", "conv2", "relu2", "conv3"]
MLFEM_LAYERS = ["relu1", "conv2", "relu3"]


@pytest.fixture(scope="module")
def twins():
    """PyTorch model, Keras model per input shape, and images per input shape."""
    weights = twin_weights(0)
    rng = np.random.default_rng(1)
    images = {hw: rng.random((4, *hw, 3), dtype=np.float32) for hw in SHAPES}
    return torch_cnn(weights), {hw: keras_cnn(weights, hw) for hw in SHAPES}, images


def grad_cam_maps(torch_model, layer_names, x_nhwc: np.ndarray) -> np.ndarray:
    """pytorch-grad-cam's FEM of ``x`` (N, H, W, C) at ``layer_names`` -> (N, H, W)."""
    import torch

    gc = import_pytorch_grad_cam()
    target_layers = [getattr(torch_model, name) for name in layer_names]
    x = torch.from_numpy(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2)))
    with gc.FEM(torch_model, target_layers) as cam:
        return np.asarray(cam(input_tensor=x, targets=None))


def assert_parity(got: np.ndarray, want: np.ndarray, what: str) -> float:
    assert got.shape == want.shape, (got.shape, want.shape)
    span = float(np.ptp(want))
    err = float(np.abs(got - want).max())
    assert err <= RTOL * max(span, 1e-6), f"{what}: max |fastfem - grad-cam| = {err:.3g}"
    return span


@pytest.mark.parametrize("hw", SHAPES, ids=lambda hw: f"{hw[0]}x{hw[1]}")
@pytest.mark.parametrize("layer", LAYERS)
def test_fem_equals_pytorch_grad_cam(twins, hw, layer):
    torch_model, keras_models, images = twins
    x = images[hw]
    want = grad_cam_maps(torch_model, [layer], x)
    got = fastfem.FEM(keras_models[hw], conv_layer=layer, variant="gradcam").explain(x)
    span = assert_parity(got[..., 0], want, f"FEM at {layer}, {hw}")
    if layer == "conv3":  # all-negative weighted sum: grad-cam gives 0, so must fastfem
        assert span == 0 and np.all(got == 0)
    else:  # a map with structure, in [0, 1], min-maxed after the resize
        np.testing.assert_allclose(want.min(axis=(1, 2)), 0, atol=1e-6)
        np.testing.assert_allclose(want.max(axis=(1, 2)), 1, atol=1e-6)


@pytest.mark.parametrize("hw", SHAPES, ids=lambda hw: f"{hw[0]}x{hw[1]}")
def test_final_min_max_is_needed(twins, hw):
    """Without the min-max after the resize fastfem would differ from grad-cam by far more than
    the bound: the test above can fail."""
    import cv2

    torch_model, keras_models, images = twins
    x = images[hw]
    want = grad_cam_maps(torch_model, ["relu2"], x)
    low = fastfem.FEM(keras_models[hw], conv_layer="relu2", variant="gradcam").explain(
        x, resize=False
    )
    no_final = np.stack([cv2.resize(m, hw[::-1], interpolation=cv2.INTER_LINEAR) for m in low])
    assert np.abs(no_final - want).max() > 0.05


@pytest.mark.parametrize("hw", SHAPES, ids=lambda hw: f"{hw[0]}x{hw[1]}")
def test_mlfem_mean_equals_pytorch_grad_cam_multi_layer(twins, hw):
    torch_model, keras_models, images = twins
    x = images[hw]
    want = grad_cam_maps(torch_model, MLFEM_LAYERS, x)
    ml = fastfem.MLFEM(keras_models[hw], layers=MLFEM_LAYERS, fusion="mean", variant="gradcam")
    got = ml.explain(x)
    assert_parity(got[..., 0], want, f"MLFEM at {MLFEM_LAYERS}, {hw}")
    assert np.ptp(want) > 0.9
    # the fused map is not the mean of the single-layer maps (those are min-maxed after the
    # resize one by one): grad-cam's aggregation, not a re-use of FEM's output
    singles = np.mean([grad_cam_maps(torch_model, [n], x) for n in MLFEM_LAYERS], axis=0)
    assert np.abs(singles - want).max() > 1e-3
