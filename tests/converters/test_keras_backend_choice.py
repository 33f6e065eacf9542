"""fastfem leaves Keras's backend to the process; the CLI, an application, picks JAX for itself.

Keras reads ``KERAS_BACKEND`` once per process, so each case runs in a fresh interpreter with the
variable UNSET (and ``KERAS_HOME`` an empty folder, so no ``keras.json`` decides either: Keras's
own default, TensorFlow, applies).

* ``import fastfem`` first, then a Keras CNN: Keras runs TensorFlow, ``KERAS_BACKEND`` is still
  unset, Xplique's `Saliency` works on the model (it failed with "Cannot convert a symbolic
  tf.Tensor to a numpy array" when importing fastfem selected JAX), and `fastfem.FEM` on the same
  model (through tf2jax) gives Xplique's own FEM maps; the native front-end alone refuses the
  model with an error naming ``KERAS_BACKEND=jax``.
* ``import fastfem.cli`` imports no Keras; ``python -m fastfem.cli`` and the ``fastfem`` console
  script run Keras models natively on JAX (the converted extractor's source says
  ``keras-jax``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SUPPORT = Path(__file__).resolve().parents[1] / "support"

FASTFEM_FIRST = """
import json, os, sys
import fastfem  # first, before Keras: it must not choose Keras's backend
unset_after_import = "KERAS_BACKEND" not in os.environ
import keras
import numpy as np
from tiny_models import small_cnn
from xplique.attributions import FEM as XpliqueFEM, Saliency

out = sys.argv[1]
model = small_cnn((32, 32, 3))
x = np.random.default_rng(0).random((4, 32, 32, 3), dtype=np.float32)
y = np.eye(3, dtype=np.float32)[[0, 1, 2, 0]]
np.save(out + "/saliency.npy", np.asarray(Saliency(model).explain(x, y)))
fem = fastfem.FEM(model)
np.save(out + "/fastfem.npy", np.asarray(fem.explain(x)))
np.save(out + "/xplique.npy", np.asarray(XpliqueFEM(model).explain(x)))
from fastfem.converters.keras_jax import from_keras_jax
try:
    from_keras_jax(model)
    native_error = None
except RuntimeError as err:
    native_error = str(err)
print(json.dumps({
    "native_error": native_error,
    "backend": keras.backend.backend(),
    "unset_after_import": unset_after_import,
    "unset_at_end": "KERAS_BACKEND" not in os.environ,
    "source": fem.extractor.source,
    "layer": fem.extractor.layer_name,
}))
"""

CLI_IMPORTS = """
import json, sys
import fastfem.cli
print(json.dumps(sorted(m for m in ("keras", "tensorflow") if m in sys.modules)))
"""


def env_without_backend(home: Path) -> dict[str, str]:
    """This process's environment without KERAS_BACKEND, Keras's config folder empty."""
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    env.update({"KERAS_HOME": str(home), "TF_CPP_MIN_LOG_LEVEL": "3"})
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SUPPORT), env.get("PYTHONPATH")) if p)
    return env


def run(cmd: list[str], env: dict[str, str], cwd: Path) -> str:
    """The stdout of ``cmd``, which must succeed."""
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def last_line_json(stdout: str):
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_import_fastfem_first_leaves_keras_on_tensorflow(tmp_path):
    pytest.importorskip("xplique")
    home = tmp_path / "keras_home"
    home.mkdir()
    facts = last_line_json(
        run(
            [sys.executable, "-c", FASTFEM_FIRST, str(tmp_path)],
            env_without_backend(home),
            tmp_path,
        )
    )
    assert facts["backend"] == "tensorflow"
    assert facts["unset_after_import"] and facts["unset_at_end"]
    assert "tf2jax" in facts["source"] and facts["layer"] == "conv_b"
    # the native front-end alone refuses, naming the fix; from_keras / load hand over instead
    assert "KERAS_BACKEND=jax" in (facts["native_error"] or "")
    saliency = np.load(tmp_path / "saliency.npy")
    assert saliency.shape[0] == 4 and np.all(np.isfinite(saliency)) and np.ptp(saliency) > 0
    ours, ref = np.load(tmp_path / "fastfem.npy"), np.load(tmp_path / "xplique.npy")
    assert ours.shape == ref.shape == (4, 32, 32, 1) and np.ptp(ref) > 0
    assert np.max(np.abs(ours - ref)) <= 1e-4 * np.ptp(ref)


@pytest.mark.slow
def test_cli_runs_keras_on_jax_for_itself(tmp_path):
    from tiny_models import small_cnn

    home = tmp_path / "keras_home"
    home.mkdir()
    env = env_without_backend(home)
    assert last_line_json(run([sys.executable, "-c", CLI_IMPORTS], env, tmp_path)) == []
    model = tmp_path / "cnn.keras"
    small_cnn((16, 16, 3)).save(model)
    script = Path(sys.executable).parent / "fastfem"
    assert script.is_file(), f"the fastfem console script is not installed next to {sys.executable}"
    # `python -m fastfem` imports what the console script imports (fastfem, then fastfem.cli)
    commands = {
        "python -m fastfem.cli": [sys.executable, "-m", "fastfem.cli"],
        "fastfem": [str(script)],
    }
    procs = {  # both at once: each spends most of its time importing and exporting
        name: subprocess.Popen(
            [*command, "convert", str(model), "--out", str(tmp_path / f"art{i}")],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, (name, command) in enumerate(commands.items())
    }
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, (name, stderr[-3000:])
        summary = json.loads(stdout[stdout.index("{") :])  # the command's JSON summary
        assert summary["path"].startswith("keras-jax"), (name, summary["path"])
