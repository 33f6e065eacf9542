"""Keras 2 models (``tf_keras``, or ``tf.keras`` of TensorFlow < 2.16): recognise them, and read
legacy model files safely.

``tf_keras`` is Keras 2 and independent of Keras 3's backend: it runs on TensorFlow beside a
Keras 3 on JAX in the same process. Its models are converted by
`fastfem.converters.tf_models.from_tf`.

Safety: ``tf_keras`` deserializes a Lambda layer's Python bytecode from an ``.h5`` file even in
its own safe mode, so `check_h5_safe` reads the file's JSON ``model_config`` with h5py first
and refuses Lambda layers before anything is deserialized. This module imports no other
converters module.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def is_tf_keras_model(obj: Any) -> bool:
    """A Keras 2 model (``tf_keras`` or ``tf.keras`` of TF < 2.16)."""
    return any(
        c.__module__.startswith(("tf_keras.", "keras.engine.", "tensorflow.python.keras."))
        for c in type(obj).__mro__
    ) and hasattr(obj, "layers")


def _config_has_lambda(config: Any) -> bool:
    """Whether a Keras model config (nested dicts/lists) holds a Lambda layer with code."""
    if isinstance(config, dict):
        if config.get("class_name") in ("Lambda", "TFOpLambda") and "function" in json.dumps(
            config.get("config", {})
        ):
            return config.get("class_name") == "Lambda"
        return any(_config_has_lambda(v) for v in config.values())
    if isinstance(config, list):
        return any(_config_has_lambda(v) for v in config)
    return False


def check_h5_safe(path: str | os.PathLike) -> None:
    """Refuse a legacy .h5 model whose config has a Lambda layer (its code would be executed).

    Reads only the file's JSON ``model_config`` attribute with h5py; nothing is deserialized.
    """
    import h5py

    with h5py.File(path, "r") as f:
        raw = f.attrs.get("model_config")
    if raw is None:
        return
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8")
    if _config_has_lambda(json.loads(raw)):
        raise ValueError(
            f"{Path(path).name} contains a Lambda layer: loading it would execute the Python "
            "code stored in the file. If you trust the file, pass safe_mode=False "
            "(command line: fastfem convert --unsafe, then --model the converted folder)"
        )


def load_tf_keras_file(path: str | os.PathLike, safe_mode: bool = True) -> Any:
    """Load a legacy Keras 2 ``.h5`` (or ``tf_keras`` ``.keras``) file with ``tf_keras``.

    ``safe_mode=True`` refuses Lambda layers before anything is deserialized (``tf_keras`` would
    run their bytecode from an .h5 file even in its own safe mode).
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"model file not found: {p}")
    try:
        import tf_keras
    except ImportError as err:
        raise ImportError(
            "reading a Keras 2 model file with tf_keras needs `pip install tf-keras`; or load "
            "it with Keras 3 (fastfem.converters.from_keras)"
        ) from err
    if p.suffix in (".h5", ".hdf5"):
        if safe_mode:
            check_h5_safe(p)
        return tf_keras.models.load_model(p, compile=False)
    if p.suffix == ".keras":
        try:
            return tf_keras.models.load_model(p, compile=False, safe_mode=safe_mode)
        except ValueError as err:
            if "safe_mode" in str(err) or "Lambda" in str(err):
                raise ValueError(
                    f"{p.name} contains code (e.g. a Lambda layer) that will not be deserialized "
                    "with safe_mode=True; if you trust the file, pass safe_mode=False "
                    "(command line: fastfem convert --unsafe, then --model the converted folder)"
                ) from err
            raise
    raise ValueError(f"unsupported Keras 2 model file {p.name!r}: expected .h5 or .keras")
