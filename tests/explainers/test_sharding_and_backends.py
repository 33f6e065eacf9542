"""Runs that need a fresh process: 4 simulated CPU devices, and Keras on the TensorFlow backend.

XLA_FLAGS and KERAS_BACKEND are read once per process, so each case runs a subprocess that
writes its maps to disk; the pytest process (1 device, Keras-JAX) computes the reference.
"""

from pathlib import Path

import jax
import numpy as np
import pytest
from subprocess_runs import run_json, simulated_devices
from tiny_models import small_cnn

import fastfem

TESTS_DIR = Path(__file__).parents[1] / "support"

PRELUDE = """
import json, os, sys
sys.path.insert(0, sys.argv[1])
OUT = sys.argv[2]
import numpy as np
"""

SHARDED = """
import jax
import fastfem
import fastfem.engine.runner
from tiny_models import small_cnn
assert jax.device_count() == 4, jax.devices()
model = small_cnn((32, 32, 3))
x = np.random.default_rng(1).random((70, 32, 32, 3), dtype=np.float32)
result = {}
for variant in ("xplique", "gradcam"):
    fem = fastfem.FEM(model, batch_size=30, conv_layer="relu_b", variant=variant)
    maps = fem.explain(x)
    step = fem.step(x.shape[1:])
    runner = fastfem.engine.runner.Runner(step.fn, fem.batch_size, fem.mesh)
    out = runner.dispatch(runner.replicate(step.params), {"x": x[: runner.batch_size]})["maps"]
    one = fastfem.FEM(model, batch_size=30, conv_layer="relu_b", variant=variant,
                      devices=jax.devices()[:1]).explain(x)
    np.save(os.path.join(OUT, variant + ".npy"), maps)
    result[variant] = dict(
        batch=runner.batch_size, n_devices=runner.n_devices,
        out_devices=len(out.sharding.device_set),
        max_diff_vs_one_device=float(np.abs(maps - one).max()),
    )
print(json.dumps(result))
"""

TF_BACKEND = """
import keras
assert keras.backend.backend() == "tensorflow"
import fastfem
from tiny_models import small_cnn
model = small_cnn((32, 32, 3))
x = np.random.default_rng(1).random((70, 32, 32, 3), dtype=np.float32)
fem = fastfem.FEM(model, batch_size=32)
np.save(os.path.join(OUT, "tf.npy"), fem.explain(x))
print(json.dumps(dict(source=fem.extractor.source, layer=fem.layer_name)))
"""


def run_script(body: str, out: Path, env: dict) -> dict:
    return run_json(PRELUDE + body, str(TESTS_DIR), str(out), env=env)


def test_four_devices_equal_one_device(tmp_path):
    result = run_script(SHARDED, tmp_path, simulated_devices(4))
    model = small_cnn((32, 32, 3))
    x = np.random.default_rng(1).random((70, 32, 32, 3), dtype=np.float32)
    assert jax.device_count() == 1
    for variant, r in result.items():
        assert r["n_devices"] == 4 and r["out_devices"] == 4
        assert r["batch"] == 32  # 30 rounded up to a multiple of 4 devices
        assert r["max_diff_vs_one_device"] <= 1e-6
        here = fastfem.FEM(model, conv_layer="relu_b", variant=variant).explain(x)
        sharded = np.load(tmp_path / f"{variant}.npy")
        assert np.ptp(here) > 0
        np.testing.assert_allclose(sharded, here, rtol=0, atol=1e-5 * np.abs(here).max())


@pytest.mark.slow
def test_keras_already_on_tensorflow_backend(tmp_path):
    pytest.importorskip("tensorflow")
    result = run_script(TF_BACKEND, tmp_path, {"KERAS_BACKEND": "tensorflow"})
    # tf2jax converts the Keras-TF sub-model when installed; call_tf wraps it otherwise
    assert "tf2jax" in result["source"] or "call_tf" in result["source"]
    assert result["layer"] == "conv_b"
    x = np.random.default_rng(1).random((70, 32, 32, 3), dtype=np.float32)
    here = fastfem.FEM(small_cnn((32, 32, 3)), batch_size=32).explain(x)
    np.testing.assert_allclose(np.load(tmp_path / "tf.npy"), here, atol=1e-5 * np.abs(here).max())
