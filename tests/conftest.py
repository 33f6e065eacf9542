"""Test set-up: Keras runs the JAX backend in the pytest process (set before anything imports it).

Tests that need Keras on the TensorFlow backend (Xplique, the call_tf bridge) run it in a
subprocess. Small fixed-seed models come from tiny_models.py.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from tiny_models import small_cnn  # noqa: E402


@pytest.fixture(scope="session")
def cnn32():
    return small_cnn((32, 32, 3))


@pytest.fixture(scope="session")
def images32():
    return np.random.default_rng(1).random((70, 32, 32, 3), dtype=np.float32)


@pytest.fixture(autouse=True)
def no_reliance_sweep_unless_asked(request, monkeypatch):
    """Audits in tests skip the reliance test unless they ask for it (its default sweep, 320+
    rows, costs ~27,000 forward passes and a compilation per audit; on a Keras application at
    224 px, minutes on CPU): the reliance tests pass their own sample, tests marked
    ``reliance_default`` (the shortcut benchmark's) keep the default, CLI subprocesses pass
    ``--reliance-sample``."""
    if request.node.get_closest_marker("reliance_default") is None:
        import fastfem.audit.reliance as reliance

        monkeypatch.setattr(reliance, "SAMPLE", 0)
