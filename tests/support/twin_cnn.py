"""One small CNN built twice from ONE set of weights: in PyTorch (what pytorch-grad-cam explains)
and in Keras (what fastfem explains), so the two libraries' public outputs can be compared.

Architecture (layer names are the same in both; PyTorch modules are attributes of that name)::

    conv1  3 -> 8,  3x3 valid      relu1    pool1  2x2 max (floor)
    conv2  8 -> 16, 3x3 same       relu2
    conv3 16 -> 16, 3x3 same       relu3    global average pool    fc  16 -> 3

Weights are drawn once in PyTorch's layouts (conv ``(O, I, kh, kw)``, linear ``(out, in)``) and
transposed for Keras (conv ``(kh, kw, I, O)``, dense ``(in, out)``). For 32x32 inputs conv1 is
30x30 and conv2/conv3 15x15; for 24x40, 22x38 and 11x19: every resize ratio is non-integer.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np

TORCHVISION_STUB = Path(__file__).parent / "torchvision_stub"
CONVS = {"conv1": (3, 8, 0), "conv2": (8, 16, 1), "conv3": (16, 16, 1)}  # in, out, padding
N_CLASSES = 3
# zero initial weights (replaced by `twin_weights`): Keras-JAX would otherwise compile a random
# initialiser per weight shape, ~10 s for this model on 2 cores
ZEROS = {"kernel_initializer": "zeros", "bias_initializer": "zeros"}


def twin_weights(seed: int = 0) -> dict[str, np.ndarray]:
    """He-scaled normal weights in PyTorch layouts; conv2's biases are positive so that the
    pre-ReLU conv2 maps (``sum_c w_c A_c``) are not all negative."""
    rng = np.random.default_rng(seed)
    weights: dict[str, np.ndarray] = {}
    for name, (c_in, c_out, _) in CONVS.items():
        scale = np.sqrt(2.0 / (9 * c_in))
        weights[f"{name}.weight"] = (rng.normal(size=(c_out, c_in, 3, 3)) * scale).astype("f4")
        weights[f"{name}.bias"] = (rng.normal(size=c_out) * 0.1).astype("f4")
    weights["conv2.bias"] = np.abs(weights["conv2.bias"]) + np.float32(0.1)
    weights["fc.weight"] = (rng.normal(size=(N_CLASSES, 16)) * 0.25).astype("f4")
    weights["fc.bias"] = np.zeros(N_CLASSES, "f4")
    return weights


def torch_cnn(weights: dict[str, np.ndarray]):
    """The CNN as a ``torch.nn.Module`` (eval mode) with ``weights``."""
    import torch
    from torch import nn

    class TwinCNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            for name, (c_in, c_out, pad) in CONVS.items():
                setattr(self, name, nn.Conv2d(c_in, c_out, 3, padding=pad))
                setattr(self, "relu" + name[-1], nn.ReLU())
            self.pool1 = nn.MaxPool2d(2)
            self.fc = nn.Linear(16, N_CLASSES)

        def forward(self, x):
            x = self.pool1(self.relu1(self.conv1(x)))
            x = self.relu3(self.conv3(self.relu2(self.conv2(x))))
            return self.fc(x.mean(dim=(2, 3)))

    model = TwinCNN()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
    return model.eval()


def keras_cnn(weights: dict[str, np.ndarray], input_hw: tuple[int, int]):
    """The CNN as a Keras model on ``input_hw`` images (channels last) with ``weights``."""
    import keras

    layers = keras.layers
    inputs = keras.Input((*input_hw, 3))
    x = inputs
    for name, (_, c_out, pad) in CONVS.items():
        padding = "same" if pad else "valid"
        x = layers.Conv2D(c_out, 3, padding=padding, name=name, **ZEROS)(x)
        x = layers.Activation("relu", name="relu" + name[-1])(x)
        if name == "conv1":
            x = layers.MaxPooling2D(2, name="pool1")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(N_CLASSES, name="fc", **ZEROS)(x)
    model = keras.Model(inputs, outputs, name="twin_cnn")
    for name in CONVS:
        kernel = weights[f"{name}.weight"].transpose(2, 3, 1, 0)  # (O, I, kh, kw) -> (kh, kw, I, O)
        model.get_layer(name).set_weights([kernel, weights[f"{name}.bias"]])
    model.get_layer("fc").set_weights([weights["fc.weight"].T, weights["fc.bias"]])
    return model


def import_pytorch_grad_cam() -> ModuleType:
    """``import pytorch_grad_cam``, with the torchvision stand-in on ``sys.path`` if no
    torchvision is installed (`tests/support/torchvision_stub`)."""
    if importlib.util.find_spec("torchvision") is None and str(TORCHVISION_STUB) not in sys.path:
        sys.path.insert(0, str(TORCHVISION_STUB))
    import pytorch_grad_cam

    return pytorch_grad_cam
