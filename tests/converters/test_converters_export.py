"""Portable artifacts, both ways.

* ``fastfem convert`` / `save_extractor`: a `jax.export` artifact loaded in a fresh process where
  TensorFlow, Keras, tf2jax and Flax cannot be imported gives the same FEM maps as the original
  extractor: from a Keras-JAX model (via the CLI), a tf_keras model converted by tf2jax, and one
  wrapped by call_tf (exported with a fixed batch, padded/split on load).
* `fastfem.export_savedmodel` / ``fastfem convert --tf-savedmodel``: the jitted FEM, MLFEM and
  FAM explainers as TF SavedModels, called from TensorFlow, give the explainers' maps.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from fastfem.converters import load, save_extractor
from tiny_models import small_cnn

import fastfem
from fastfem.cli import main as cli_main

HAS_TF = all(importlib.util.find_spec(m) for m in ("tensorflow", "tf_keras", "tf2jax"))

NO_TF = """
import sys
for name in ("tensorflow", "tf_keras", "tf2jax", "keras", "flax"):
    sys.modules[name] = None  # importing any of them now raises ImportError
import json, numpy as np
import fastfem
x = np.load(sys.argv[2])
out = {}
for name in json.loads(sys.argv[3]):
    fem = fastfem.FEM(sys.argv[1] + "/" + name, batch_size=4)
    np.save(sys.argv[1] + "/" + name + "_maps.npy", fem.explain(x))
    out[name] = fem.extractor.source
assert not any(m in sys.modules and sys.modules[m] is not None for m in ("tensorflow", "keras"))
print(json.dumps(out))
"""


def run_without_tf(root: Path, x: np.ndarray, names: list[str]) -> dict:
    np.save(root / "x.npy", x)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("KERAS_BACKEND", None)
    proc = subprocess.run(
        [sys.executable, "-c", NO_TF, str(root), str(root / "x.npy"), json.dumps(names)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def close(a, ref, rtol=1e-5):
    np.testing.assert_allclose(np.asarray(a), ref, rtol=0, atol=rtol * np.abs(ref).max())


@pytest.mark.slow
def test_jax_export_artifacts_run_without_tensorflow(tmp_path, capsys):
    x = np.random.default_rng(2).random((5, 28, 28, 3), dtype=np.float32)
    model = small_cnn((28, 28, 3))
    model.save(tmp_path / "cnn.keras")
    assert (
        cli_main(
            [
                "convert",
                str(tmp_path / "cnn.keras"),
                "--layer",
                "relu_b",
                "--out",
                str(tmp_path / "keras_art"),
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["path"].startswith("keras-jax") and summary["layers"] == ["relu_b"]
    expected = {"keras_art": fastfem.FEM(model, conv_layer="relu_b").explain(x)}
    meta = json.loads((tmp_path / "keras_art" / "extractor.json").read_text())
    assert meta["batch"] is None and "cpu" in meta["platforms"]  # symbolic batch, portable
    if HAS_TF:
        from tf_models import tf_keras_cnn

        for name, activation in (("tf2jax_art", "relu"), ("call_tf_art", "softsign")):
            ext = fastfem.converters.from_tf(tf_keras_cnn(activation), "act_b")
            assert name.split("_art")[0] in ext.source.replace("call_tf", "call_tf")
            save_extractor(ext, tmp_path / name, batch_size=4)
            expected[name] = fastfem.FEM(ext, batch_size=4).explain(x)
        meta = json.loads((tmp_path / "call_tf_art" / "extractor.json").read_text())
        assert meta["batch"] == 4  # call_tf cannot export a symbolic batch: fixed, padded on load
    sources = run_without_tf(tmp_path, x, list(expected))
    for name, maps in expected.items():
        assert "jax.export artifact" in sources[name]
        assert np.ptp(maps) > 0
        close(np.load(tmp_path / f"{name}_maps.npy"), maps)


@pytest.mark.skipif(not HAS_TF, reason="needs tensorflow")
def test_explainers_as_tf_savedmodels(tmp_path, capsys):
    import tensorflow as tf

    x = np.random.default_rng(4).random((3, 32, 32, 3), dtype=np.float32)
    model = small_cnn((32, 32, 3))
    model.save(tmp_path / "cnn.keras")
    out = tmp_path / "fem_tf"
    assert (
        cli_main(["convert", str(tmp_path / "cnn.keras"), "--out", str(out), "--tf-savedmodel"])
        == 0
    )
    assert "SavedModel" in json.loads(capsys.readouterr().out)["format"]
    restored = tf.saved_model.load(str(out))
    maps = restored.explain(tf.constant(x))["maps"].numpy()
    close(maps, fastfem.FEM(model).explain(x))
    served = restored.signatures["serving_default"](images=tf.constant(x[:1]))["maps"]
    close(served.numpy(), maps[:1])

    fam = fastfem.FAM(model, conv_layer="relu_b")
    fastfem.export_savedmodel(fam, tmp_path / "fam_tf")
    restored = tf.saved_model.load(str(tmp_path / "fam_tf"))
    got = restored.explain(tf.constant(x), tf.constant(x[::-1]))
    close(got["maps"].numpy(), fam.explain(x, x[::-1]))
    close(got["similarity"].numpy(), fam.last_similarities)

    mlfem = fastfem.MLFEM(model, layers=["relu_a", "relu_b"])
    fastfem.export_savedmodel(mlfem, tmp_path / "mlfem_tf")
    restored = tf.saved_model.load(str(tmp_path / "mlfem_tf"))
    close(restored.explain(tf.constant(x))["maps"].numpy(), mlfem.explain(x))


def test_artifact_layers_cannot_be_reselected(tmp_path):
    ext = load(small_cnn((16, 16, 3)))
    save_extractor(ext, tmp_path / "art")
    assert load(tmp_path / "art").layer_names == ("conv_b",)
    with pytest.raises(ValueError, match="cannot re-select"):
        load(tmp_path / "art", "conv_a")
    with pytest.raises(ValueError, match="input shape must be fully known"):
        save_extractor(
            fastfem.converters.from_fn(lambda p, x: x, None, (None, None, 3)), tmp_path / "b"
        )
