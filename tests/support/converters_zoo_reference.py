"""TensorFlow side of the architecture-zoo parity test (run as a subprocess, Keras on TensorFlow).

Usage: ``python tests/support/converters_zoo_reference.py OUT_DIR NAME [NAME ...]``

For each keras.applications model of `zoo_models.ZOO` (same fixed weights as the pytest process
builds under JAX), writes ``OUT_DIR/NAME.npz`` (written then renamed: a reader polling for it
never sees half a file) holding:

* ``images``: the 2 images used, chosen among 6 candidates as the ones whose default-layer
  activations stay farthest (in sigma units) from their FEM k-sigma thresholds, so that
  round-off differences between backends cannot flip a mask bit;
* ``tf_default``, ``tf_inner``: TensorFlow's activations (the Keras-TF sub-model, eager);
* ``xplique``: Xplique's FEM maps at the default layer;
* ``tf2jax_default``/``_inner`` and ``call_tf_default``/``_inner``: activations through
  `fastfem.converters.from_tf` with ``method="tf2jax"`` and ``"call_tf"``, jitted;
* ``meta``: JSON (layer names, sources, margin, seconds per step).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).parent))

K = 2.0
N_CANDIDATES = 6
N_IMAGES = 2


def fem_margin(acts, k: float = K):
    """Per image: the smallest |A - T| / sigma over channels with a spread (NumPy, float64)."""
    import numpy as np

    a = acts.astype(np.float64).reshape(acts.shape[0], -1, acts.shape[-1])
    mu, sigma = a.mean(axis=1, keepdims=True), a.std(axis=1, keepdims=True)
    spread = sigma > 1e-6 * np.maximum(np.abs(mu), 1e-12)
    z = np.abs(a - (mu + k * sigma)) / np.where(spread, sigma, 1.0)
    z = np.where(spread, z, np.inf)
    return z.min(axis=(1, 2))


def main(out_dir: str, names: list[str]) -> int:
    import jax
    import keras
    import numpy as np
    from fastfem.converters import from_tf, resolve_layer
    from xplique.attributions import FEM
    from zoo_models import ZOO, build

    assert keras.backend.backend() == "tensorflow"
    out = Path(out_dir)
    for name in names:
        size, inner = ZOO[name]
        t0 = time.perf_counter()
        model = build(name)
        default_layer = resolve_layer(model, None)
        default = default_layer.name
        sub = keras.Model(
            model.inputs, [model.get_layer(default).output, model.get_layer(inner).output]
        )
        rng = np.random.default_rng(7)
        cand = rng.random((N_CANDIDATES, size, size, 3), dtype=np.float32) * 2.0 - 1.0
        tf_d, _ = (np.asarray(a) for a in sub(cand, training=False))
        margins = fem_margin(tf_d)
        pick = np.sort(np.argsort(-margins)[:N_IMAGES])
        x = cand[pick]
        tf_d, tf_i = (np.asarray(a) for a in sub(x, training=False))
        seconds = {"build+tf": time.perf_counter() - t0}
        t0 = time.perf_counter()
        xp = np.asarray(FEM(model, batch_size=N_IMAGES, k=K).explain(x), np.float32)
        seconds["xplique"] = time.perf_counter() - t0
        arrays = {"images": x, "tf_default": tf_d, "tf_inner": tf_i, "xplique": xp}
        sources = {}
        for method in ("tf2jax", "call_tf"):
            t0 = time.perf_counter()
            ext = from_tf(model, [None, inner], method=method)
            feats = jax.jit(ext.apply)(ext.params, x)
            arrays[f"{method}_default"] = np.asarray(feats.activations[0])
            arrays[f"{method}_inner"] = np.asarray(feats.activations[1])
            sources[method] = ext.source
            assert ext.layer_names == (default, inner), ext.layer_names
            seconds[method] = time.perf_counter() - t0
        meta = {
            "default": default,
            "default_index": model.layers.index(default_layer),
            "inner": inner,
            "sources": sources,
            "margin": float(margins[pick].min()),
            "seconds": {k: round(v, 2) for k, v in seconds.items()},
        }
        arrays["meta"] = np.array(json.dumps(meta))
        partial = out / f"{name}.partial.npz"
        np.savez(partial, **arrays)
        os.replace(partial, out / f"{name}.npz")
        print(name, json.dumps(meta), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
