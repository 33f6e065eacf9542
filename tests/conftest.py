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
def small_reliance_sweep(request, monkeypatch):
    """Audits in fast tests sweep 48 rows in the reliance test (its default, 320, costs ~27,000
    forward passes per audit); the reliance tests pass their own sample, and slow tests keep
    the default."""
    if request.node.get_closest_marker("slow") is None:
        import fastfem.audit.reliance as reliance

        monkeypatch.setattr(reliance, "SAMPLE", 48)
