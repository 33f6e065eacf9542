"""Architecture zoo: keras.applications models with fixed random weights at small inputs.

For ResNet50, MobileNetV2, EfficientNetB0, DenseNet121, VGG16, InceptionV3 and ConvNeXtTiny
(`zoo_models.ZOO`), the activations at Xplique's default layer and at one inner layer match
TensorFlow's (the Keras-TF model itself) to ``1e-4 * max |TF|`` through every path:

* Keras-JAX native (`from_keras`, this process),
* tf2jax and call_tf (`from_tf` in a process whose Keras runs TensorFlow),

and the FEM maps computed from each path's activations (the explainers' kernel and bicubic
resize, `FEM.step`) match Xplique's to ``1e-4 * max |Xplique|``. The TensorFlow side runs in
ONE subprocess (`converters_zoo_reference.py`) started before the first test, so its work
overlaps this process's compilations. Images are chosen there so that no activation is within
round-off of its k-sigma threshold (see `fem_margin`).

Observed max relative differences vs TensorFlow (activations) and Xplique (FEM maps), the same
for the three paths unless noted (x86-64 AVX-512, TF 2.21 oneDNN vs XLA:CPU, jax 0.10.2):

    model           input  default layer (size)          inner layer        default  inner   FEM
    ResNet50        96     conv5_block3_3_conv (3x3)     conv4_block1_0     1.5e-6   1.4e-6  3.0e-7
    MobileNetV2     96     Conv_1 (3x3)                  block_8_project    1.1e-6   1.0e-6  6.8e-7
    EfficientNetB0  96     top_conv (3x3)                block5a_expand     7.5e-7   4.6e-7  3.1e-7
    DenseNet121     96     conv5_block16_2_conv (3x3)    conv4_block11_2    6.7e-7   1.1e-6  4.5e-7
    VGG16           48     block5_conv3 (3x3)            block3_conv3       1.8e-6   1.4e-6  5.8e-7
    InceptionV3     139    last conv2d (3x3)             mixed5             1.4e-6   1.7e-6  8.3e-7
    ConvNeXtTiny    96     stage_3_block_2_depthwise     stage_2_block_0    7.0e-7   9.8e-7  5.1e-7
                           (call_tf: 7.3e-7, 9.8e-7, 6.3e-7)
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from fastfem.converters import FeatureExtractor, Features, from_keras, resolve_layer
from zoo_models import ZOO, build

from fastfem.explainers.fem import FEM

RTOL = 1e-4
SCRIPT = Path(__file__).parents[1] / "support" / "converters_zoo_reference.py"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        any(importlib.util.find_spec(m) is None for m in ("tensorflow", "xplique", "tf2jax")),
        reason="tensorflow, xplique and tf2jax are needed for the TensorFlow side",
    ),
]


class Reference:
    """The TF subprocess: started once, its per-model files read as they appear."""

    def __init__(self, out: Path):
        self.out = out
        env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"}
        self.log = open(out / "reference.log", "w")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), str(out), *ZOO],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def get(self, name: str, timeout: float = 900) -> dict:
        path = self.out / f"{name}.npz"
        end = time.monotonic() + timeout
        while not path.exists():
            if self.proc.poll() is not None and not path.exists():
                self.log.flush()
                tail = (self.out / "reference.log").read_text()[-4000:]
                pytest.fail(f"the TF reference process exited ({self.proc.returncode}):\n{tail}")
            if time.monotonic() > end:
                pytest.fail(f"no TF reference for {name} after {timeout} s")
            time.sleep(0.2)
        with np.load(path, allow_pickle=False) as data:
            out = {k: data[k] for k in data.files}
        out["meta"] = json.loads(str(out["meta"]))
        return out

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    ref = Reference(tmp_path_factory.mktemp("zoo"))
    yield ref
    ref.close()


def fem_maps(activations: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """FEM maps (N, H, W, 1) of given activations with the explainer's own step (k = 2)."""
    h, w = activations.shape[1:3]
    fixed = FeatureExtractor(
        apply=lambda p, x: Features(activations=(p,)),
        params=None,
        input_shape=(h, w, 1),
        layer_names=("given",),
    )
    step = FEM(fixed, k=2.0, variant="xplique").step((*out_hw, 1), resize=True)
    x = np.zeros((activations.shape[0], 1, 1, 1), np.float32)
    return np.asarray(jax.jit(step.fn)(activations, {"x": x})["maps"])[..., None]


def rel(a: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(np.asarray(a) - ref).max() / np.abs(ref).max())


@pytest.mark.parametrize("name", list(ZOO))
def test_zoo_activations_and_fem_match_tensorflow(name, reference):
    size, inner = ZOO[name]
    model = build(name)
    default = resolve_layer(model, None)
    ext = from_keras(model, [None, inner])
    apply = jax.jit(ext.apply)
    # Compile while the TF side works (same shapes as the reference images).
    apply.lower(ext.params, jax.ShapeDtypeStruct((2, size, size, 3), np.float32)).compile()
    ref = reference.get(name)
    meta = ref["meta"]
    assert model.layers.index(default) == meta["default_index"]
    assert ext.layer_names[1] == meta["inner"] == inner
    x = ref["images"]
    native = apply(ext.params, x)
    paths = {
        "native": [np.asarray(a) for a in native.activations],
        "tf2jax": [ref["tf2jax_default"], ref["tf2jax_inner"]],
        "call_tf": [ref["call_tf_default"], ref["call_tf_inner"]],
    }
    assert "tf2jax" in meta["sources"]["tf2jax"] and "call_tf" in meta["sources"]["call_tf"]
    xp = ref["xplique"]
    assert np.ptp(xp) > 0.05 * np.abs(xp).max(), "Xplique's maps are trivial: pick other images"
    report = {}
    for path, (act_d, act_i) in paths.items():
        r_d, r_i = rel(act_d, ref["tf_default"]), rel(act_i, ref["tf_inner"])
        maps = fem_maps(act_d, (size, size))
        r_fem = rel(maps, xp)
        report[path] = (r_d, r_i, r_fem)
        assert r_d <= RTOL, f"{name} {path} default layer: {r_d:.2e}"
        assert r_i <= RTOL, f"{name} {path} inner layer {inner}: {r_i:.2e}"
        assert r_fem <= RTOL, f"{name} {path} FEM vs Xplique: {r_fem:.2e} (margin {meta['margin']})"
    print(name, {k: [f"{v:.1e}" for v in vals] for k, vals in report.items()}, meta["seconds"])
