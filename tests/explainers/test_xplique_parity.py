"""Parity of `fastfem.FEM` with `xplique.attributions.FEM` (the reference), case by case.

Xplique needs Keras on the TensorFlow backend while this process runs Keras on JAX, so the
reference maps come from `tests/support/xplique_reference.py` in a subprocess: ONE for every
model and case of the run (TensorFlow start-up costs seconds), started before the first test
and read as each model's maps are written, so it overlaps with fastfem's compilations here.
Models travel as ``.keras`` files, images as ``.npy``.

Bound: ``max |fastfem - xplique| <= 1e-4 * max |xplique|`` per case, and the reference maps
must be non-trivial (not ~zero, not ~constant, no ~zero image). Observed max relative
differences (x86-64 CPU with AVX-512, TF 2.21 with oneDNN vs XLA:CPU, jax 0.10.2):

=====================  ===============================  ============
model                  case                             max rel diff
=====================  ===============================  ============
small_cnn 32x32x3      default (conv_b, 15x15 -> 32)    2.0e-7
small_cnn 32x32x3      index 1 (conv_a, 30x30 -> 32)    1.7e-7
small_cnn 32x32x3      default, k=1.0                   1.9e-7
small_cnn 32x32x3      conv_a, k=3.0                    2.9e-7
small_cnn 28x28x1      default (conv_b, 13x13 -> 28)    2.7e-7
small_cnn 28x28x1      conv_a (26x26 -> 28)             1.9e-7
MobileNetV2 98x98x3    default (Conv_1, 4x4 -> 98)      9.6e-6
MobileNetV2 98x98x3    block_3_expand (25x25 -> 98)     1.3e-6
tf.data (small_cnn)    batched / unbatched              2.0e-7 (= the array input, bit for bit)
=====================  ===============================  ============

The 32x32 CNN's activations are bit-identical in both backends here (the 28x28 one's differ by
<= 1.5e-6 sigma); what is left is float32 round-off of the statistics and of the bicubic
resize. MobileNetV2's Conv_1 sits under 17 inverted-residual blocks and its activations differ
between backends by ~1e-5 relative, which moves the channel means (the FEM weights) by as
much. A flipped k-sigma mask bit would instead show as a whole channel mean at one pixel
(~1e-2 relative): see `MOBILENET_SAFE_MARGIN` for how the MobileNetV2 images avoid that, and
the failure message, which reports how close the activations came to a threshold.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from tiny_models import small_cnn  # noqa: E402

import fastfem  # noqa: E402

REFERENCE_SCRIPT = Path(__file__).parents[1] / "support" / "xplique_reference.py"
#: The parity bound, relative to max |xplique map|. Not to be loosened (see module docstring).
RTOL = 1e-4

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("xplique") is None or importlib.util.find_spec("tensorflow") is None,
    reason="xplique and tensorflow are needed for the reference maps",
)


class Case(NamedTuple):
    layer: str | int | None
    k: float = 2.0

    @property
    def id(self) -> str:
        return f"{'default' if self.layer is None else self.layer}-k{self.k:g}"


# The small CNN (tests/support/tiny_models.py): conv_a 'valid' -> 30x30 (26x26 for 28x28
# inputs), then pool -> conv_b 'same' at 15x15 (13x13): every resize ratio is non-integer.
# Index 1 is conv_a (layers[0] is the InputLayer), to check Xplique's int layer selection.
CNN32_CASES = [Case(None), Case(1), Case(None, 1.0), Case("conv_a", 3.0)]
CNN28_CASES = [Case(None), Case("conv_a")]
# MobileNetV2 on 98x98: Conv_1 (the default, last layer with `filters`) is 4x4 -- with k=2 a map
# needs enough positions for a value to reach mu + 2 sigma (the largest z-score over n positions
# is sqrt(n - 1)), so 3x3 or more -- and block_3_expand is 25x25; 98 / 4 and 98 / 25 are
# non-integer ratios.
MOBILENET_CASES = [Case(None), Case("block_3_expand")]
# Deep nets differ between backends: TF/oneDNN and XLA:CPU activations of this MobileNetV2
# differ by up to 1.6e-4 sigma at Conv_1 (median 1.6e-5) and 3.3e-6 sigma at block_3_expand
# (the small CNNs: 0 and 1.5e-6). With k=1.0 at Conv_1, 2 of 81920 mask bits flipped for 4
# random images (max rel diff 1.8e-2: a fail that is not a fastfem bug), and with k=2 a flip was
# ~10% likely. So the MobileNetV2 images are picked to keep every activation at least this far
# (in sigma) from its threshold: 2x (Conv_1) and 6x (block_3_expand) the largest backend
# difference measured.
MOBILENET_SAFE_MARGIN = {MOBILENET_CASES[0]: 3e-4, MOBILENET_CASES[1]: 2e-5}
#: Xplique's default layer (the last one with `filters`) of each model, as the cases assume.
DEFAULT_LAYERS = {"cnn32": "conv_b", "cnn28": "conv_b", "mobilenet": "Conv_1"}


class ReferenceRun:
    """Xplique's maps for several models from ONE `xplique_reference.py` subprocess.

    The subprocess starts at construction and is waited for on the first `maps` call, so
    TensorFlow's start-up overlaps with fastfem's compilations in this process.
    """

    def __init__(self, jobs: dict[str, tuple[keras.Model, np.ndarray, list[Case]]], tmp: Path):
        self.cases = {name: cases for name, (_, _, cases) in jobs.items()}
        self.outputs: dict[str, Path] = {}
        specs = []
        for name, (model, x, cases) in jobs.items():
            model_path, inputs_path = tmp / f"{name}.keras", tmp / f"{name}.npy"
            self.outputs[name] = tmp / f"{name}_maps.npy"
            model.save(model_path)
            np.save(inputs_path, x)
            cases_json = [{"layer": c.layer, "k": c.k} for c in cases]
            specs.append(
                {
                    "model": str(model_path),
                    "inputs": str(inputs_path),
                    "out": str(self.outputs[name]),
                    "cases": cases_json,
                }
            )
        jobs_path = tmp / "jobs.json"
        jobs_path.write_text(json.dumps(specs))
        env = {**os.environ, "KERAS_BACKEND": "tensorflow", "TF_CPP_MIN_LOG_LEVEL": "3"}
        # Output to a file, not a pipe: a full pipe would stall the subprocess while we poll.
        self.log_path = tmp / "xplique_reference.log"
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(REFERENCE_SCRIPT), "--jobs", str(jobs_path)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait(self) -> None:
        """Wait for the subprocess to end; fail with the end of its output if it failed."""
        returncode = self.proc.wait(timeout=600)
        log = self.log_path.read_text(errors="replace")
        assert returncode == 0, f"xplique_reference.py failed:\n{log[-4000:]}"

    def maps(self, name: str) -> dict[Case, np.ndarray]:
        """Xplique's maps of model ``name``, by case, as soon as its file is written (the
        subprocess writes each model's file whole, by a rename, in the order of the jobs)."""
        out = self.outputs[name]
        deadline = time.monotonic() + 600
        while not out.exists() and self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if not out.exists():
            self.wait()
        maps = np.load(out)
        return dict(zip(self.cases[name], maps, strict=True))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Reference(NamedTuple):
    key: str
    model: keras.Model
    x: np.ndarray
    run: ReferenceRun

    def maps(self, case: Case) -> np.ndarray:
        return self.run.maps(self.key)[case]


@contextlib.contextmanager
def numpy_initializers(seed: int):
    """Draw Keras' random-uniform initial weights with NumPy while building a model.

    Speed only: under JAX, Keras compiles ``jax.random.uniform`` once per weight shape (~0.3 s
    each, ~15 s for MobileNetV2's ~50 shapes on a 2-core machine). Falls back to Keras' own
    (slower, also deterministic under `keras.utils.set_random_seed`) initialisers if the
    private module moves.
    """
    keras.utils.set_random_seed(seed)
    try:
        from keras.src.backend.jax import random as jax_random
    except ImportError:  # pragma: no cover
        yield
        return
    rng = np.random.default_rng(seed)

    def uniform(shape, minval=0.0, maxval=1.0, dtype=None, seed=None):
        del seed
        values = rng.uniform(minval, maxval, size=tuple(shape)).astype(dtype or "float32")
        return jax.numpy.asarray(values)

    original = jax_random.uniform
    jax_random.uniform = uniform
    try:
        yield
    finally:
        jax_random.uniform = original


def calibrate_batchnorm(model: keras.Model, x: np.ndarray, layers: list) -> list[np.ndarray]:
    """Set the moving statistics of every BatchNormalization up to ``layers`` to its batch
    statistics on ``x``, and return the activations of ``layers`` for ``x``.

    With Keras' default init (moving mean 0, variance 1) a random-weight MobileNetV2 does not
    normalise anything, and its activations shrink block after block (to ~1e-11 at Conv_1): the
    maps would be numerically degenerate. One jitted training-mode pass with momentum 0 makes
    the inference-mode activations ~unit scale, as in a trained network. With momentum 0 the
    inference-mode activations of ``x`` are then those of this pass (up to round-off), so they
    are returned too (one compilation instead of two). Layers after ``layers`` keep Keras'
    default statistics (they do not affect FEM at ``layers``).
    """
    sub = keras.Model(model.inputs[0], [model.get_layer(n).output for n in layers])
    for layer in sub.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.0
    trainable = [v.value for v in sub.trainable_variables]
    non_trainable = [v.value for v in sub.non_trainable_variables]

    def calibrate(t, nt, images):
        return sub.stateless_call(t, nt, images, training=True)

    activations, new = jax.jit(calibrate)(trainable, non_trainable, x)
    for variable, value in zip(sub.non_trainable_variables, new, strict=True):
        variable.assign(value)
    return [np.asarray(a) for a in activations]


def z_margins(activations: np.ndarray, k: float) -> np.ndarray:
    """Per image, the smallest ``|A - (mu + k sigma)| / sigma`` over positions and channels
    (sigma > 0): how far the activations stay from flipping a k-sigma mask bit."""
    a = np.asarray(activations, dtype=np.float64)
    mu, sigma = a.mean(axis=(1, 2), keepdims=True), a.std(axis=(1, 2), keepdims=True)
    z = np.abs(a - mu - k * sigma) / np.where(sigma > 0, sigma, 1.0)
    z = np.where(sigma > 0, z, np.inf)
    return z.reshape(len(a), -1).min(axis=1)


def threshold_margin(fem: fastfem.FEM, x: np.ndarray) -> float:
    """`z_margins` of the explained layer over all of ``x`` (for failure messages)."""
    a = jax.jit(fem.extractor.apply)(fem.extractor.params, x).activations[0]
    return float(z_margins(np.asarray(a), fem.k).min())


def assert_nontrivial(maps: np.ndarray) -> None:
    """The reference maps must be able to tell a wrong result: not zero, not constant."""
    scale = np.abs(maps).max()
    assert np.isfinite(maps).all()
    assert scale > 1e-6, "reference maps are ~zero"
    assert maps.std() > 1e-3 * scale, "reference maps are ~constant"
    per_image = np.abs(maps).reshape(len(maps), -1).max(axis=1)
    assert (per_image > 1e-3 * scale).all(), "some reference map is ~zero"


def check_parity(ours: np.ndarray, ref: np.ndarray, fem: fastfem.FEM, x: np.ndarray) -> float:
    assert ours.shape == ref.shape and ours.dtype == np.float32
    assert_nontrivial(ref)
    scale = float(np.abs(ref).max())
    err = float(np.abs(ours - ref).max())
    if err > RTOL * scale:
        n, i, j, _ = np.unravel_index(np.argmax(np.abs(ours - ref)), ref.shape)
        pytest.fail(
            f"max |fastfem - xplique| = {err:.3g} = {err / scale:.3g} x max|xplique| "
            f"(bound {RTOL:g}) at image {n}, pixel ({i}, {j}); layer {fem.layer_name!r}, "
            f"k={fem.k}; closest activation to its k-sigma threshold: "
            f"{threshold_margin(fem, x):.3g} sigma"
        )
    return err / scale


def build_mobilenet(
    shape: tuple[int, int, int], n_images: int = 3, n_candidates: int = 12
) -> tuple[keras.Model, np.ndarray]:
    """MobileNetV2 (random weights, BN calibrated) and ``n_images`` images that keep every
    MobileNetV2 case's activations at least `MOBILENET_SAFE_MARGIN` from their k-sigma
    thresholds (the best ``n_images`` of ``n_candidates`` random images), so that backend
    round-off cannot flip a mask bit."""
    with numpy_initializers(seed=0):
        model = keras.applications.MobileNetV2(input_shape=shape, weights=None, classes=10)
    pool = np.random.default_rng(4).uniform(-1.0, 1.0, (n_candidates, *shape))
    pool = pool.astype(np.float32)
    layers = [c.layer or "Conv_1" for c in MOBILENET_CASES]
    activations = calibrate_batchnorm(model, pool, layers)
    score = np.full(n_candidates, np.inf)
    for case, a in zip(MOBILENET_CASES, activations, strict=True):
        score = np.minimum(score, z_margins(a, case.k) / MOBILENET_SAFE_MARGIN[case])
    best = np.sort(np.argsort(-score, kind="stable")[:n_images])
    return model, pool[best]


@pytest.fixture(scope="module")
def references(request, cnn32, images32, tmp_path_factory):
    """Every model's `Reference`, keyed "cnn32", "cnn28", "mobilenet" (the last only when a
    selected test needs it: it is the slow one to build)."""
    models = {
        "cnn32": (cnn32, images32[:10], CNN32_CASES),
        "cnn28": (
            small_cnn((28, 28, 1), seed=3),
            np.random.default_rng(2).random((6, 28, 28, 1), dtype=np.float32),
            CNN28_CASES,
        ),
    }
    if any(getattr(item, "function", None) is test_mobilenet_v2 for item in request.session.items):
        models["mobilenet"] = (*build_mobilenet((98, 98, 3)), MOBILENET_CASES)
    run = ReferenceRun(models, tmp_path_factory.mktemp("xplique"))
    try:
        yield {key: Reference(key, m, x, run) for key, (m, x, _) in models.items()}
    finally:
        run.close()


def run_parity(ref: Reference, case: Case, batch_size: int) -> float:
    fem = fastfem.FEM(ref.model, batch_size=batch_size, conv_layer=case.layer, k=case.k)
    if case.layer is None:  # the default layer must be the one the case list assumes
        assert fem.layer_name == DEFAULT_LAYERS[ref.key]
    rel = check_parity(fem.explain(ref.x), ref.maps(case), fem, ref.x)
    print(f"PARITY {ref.key} {case.id}: max rel diff {rel:.3g}")
    return rel


@pytest.mark.parametrize("case", CNN32_CASES, ids=lambda c: c.id)
def test_small_cnn_32x32x3(references, case):
    # batch_size 4 over 10 images: two full batches and a padded one (Xplique: one batch).
    run_parity(references["cnn32"], case, batch_size=4)


@pytest.mark.parametrize("case", CNN28_CASES, ids=lambda c: c.id)
def test_small_cnn_28x28x1(references, case):
    run_parity(references["cnn28"], case, batch_size=32)


@pytest.mark.slow
@pytest.mark.parametrize("case", MOBILENET_CASES, ids=lambda c: c.id)
def test_mobilenet_v2(references, case):
    run_parity(references["mobilenet"], case, batch_size=4)


@pytest.mark.parametrize("batched", [False, True], ids=["unbatched", "batched"])
def test_tf_dataset_input(references, batched):
    import tensorflow as tf

    ref = references["cnn32"]
    x = ref.x
    y = np.arange(len(x), dtype=np.int64)
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if batched:
        ds = ds.batch(3)  # 3 does not divide 10, nor match fastfem's batch of 4
    case = CNN32_CASES[0]
    fem = fastfem.FEM(ref.model, batch_size=4, conv_layer=case.layer, k=case.k)
    from_dataset = fem.explain(ds)
    np.testing.assert_array_equal(from_dataset, fem.explain(x))
    check_parity(from_dataset, ref.maps(case), fem, x)
