"""Bundled sample: a deterministic synthetic image set and a small trained CNN.

Lets fastfem run its main job (explain a CNN, audit a set of images) with no
download.  See :mod:`fastfem.sample.dataset` for what is generated (coloured
shapes on textured backgrounds, with a planted corner-watermark shortcut for
audits) and :mod:`fastfem.sample.model` for the network; the trained weights
ship as ``sample_cnn.keras`` (:data:`MODEL_PATH`, rebuilt by
``python -m fastfem.sample.train``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from fastfem.sample.dataset import (
    CLASS_NAMES,
    IMAGE_SIZE,
    WATERMARK_BOX,
    SampleSet,
    generate,
    generate_masks,
    write_png_folder,
)
from fastfem.sample.model import LAST_CONV, build_model

if TYPE_CHECKING:  # pragma: no cover
    import keras

__all__ = [
    "CLASS_NAMES",
    "IMAGE_SIZE",
    "LAST_CONV",
    "MODEL_PATH",
    "WATERMARK_BOX",
    "SampleSet",
    "build_model",
    "generate",
    "generate_masks",
    "load_model",
    "write_png_folder",
]

#: The bundled trained model (Keras 3 ``.keras`` archive).
MODEL_PATH: Path = Path(__file__).with_name("sample_cnn.keras")


def load_model() -> keras.Model:
    """Load the bundled trained sample CNN (``safe_mode=True``, no compile state needed).

    Keras is imported here, so the backend is whatever the process chose
    (``KERAS_BACKEND`` at Keras's first import); the ``.keras`` file loads on any
    backend, and fastfem explains it on JAX (native) or TensorFlow (tf2jax).
    """
    import keras

    if not MODEL_PATH.is_file():
        raise FileNotFoundError(
            f"bundled model missing: {MODEL_PATH}; rebuild it with `python -m fastfem.sample.train`"
        )
    return keras.saving.load_model(MODEL_PATH, safe_mode=True)
