"""Two reference explainers for the metrics: what a metric gives without a real method.

* `MeanActivation`: the plain mean over channels of the layer's activations,
  ``L = mean_c A_c``, resized (bilinear) to the input size. Any activation-based method should
  beat it.
* `UniformMap`: the constant map. Its localisation scores are the chance levels (box area over
  image area on both pointing games and IoU@t); masking by it leaves the image unchanged, so
  average drop and increase in confidence are 0, and its deletion/insertion curves follow the
  raster order.

Both have the explainers' interface: ``explain(inputs, targets=None) -> (N, H, W, 1)`` float32.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..batch_runner import BatchRunner
from ..converters import load
from ..inputs import image_stream
from ..kernels.resize import resize_map, resize_matrices
from ..parallel import data_mesh


class MeanActivation:
    """``mean_c A_c`` at a layer (Xplique's layer choice), bilinearly resized; jitted, sharded.

    Args mirror `fastfem.FEM`: ``model`` (Keras model, path or FeatureExtractor),
    ``batch_size``, ``conv_layer``, ``devices``.
    """

    def __init__(
        self,
        model: Any,
        batch_size: int | None = 32,
        conv_layer: str | int | None = None,
        devices: Sequence[jax.Device] | None = None,
    ):
        self.extractor = load(model, layers=conv_layer)
        self.layer_name = self.extractor.layer_name
        self.batch_size = 256 if batch_size is None else int(batch_size)
        self.devices = devices
        self._runners: dict[tuple[int, ...], BatchRunner] = {}

    def _runner(self, sample_shape: tuple[int, int, int]) -> BatchRunner:
        if sample_shape not in self._runners:
            spec = jax.ShapeDtypeStruct((1, *sample_shape), jnp.float32)
            feats = jax.eval_shape(self.extractor.apply, self.extractor.params, spec)
            h, w = feats.activations[0].shape[1:3]
            rh, rw = resize_matrices((h, w), sample_shape[:2], "bilinear")
            extractor = self.extractor

            def step(params: Any, x: jax.Array) -> jax.Array:
                a = extractor.apply(params, x).activations[0].astype(jnp.float32)
                maps = jnp.mean(a, axis=-1)
                return jax.vmap(resize_map, in_axes=(0, None, None))(
                    maps, jnp.asarray(rh), jnp.asarray(rw)
                )

            mesh = data_mesh(self.devices) if self.devices is not None else None
            self._runners[sample_shape] = BatchRunner(
                step, self.extractor.params, self.batch_size, mesh
            )
        return self._runners[sample_shape]

    def explain(self, inputs: Any, targets: Any = None) -> np.ndarray:
        """(N, H, W, 1) float32 maps; ``targets`` is ignored (class-agnostic)."""
        del targets
        stream = image_stream(inputs, self.batch_size, self.extractor.input_shape)
        runner = self._runner(stream.sample_shape)
        maps = [m for m in runner.run(stream.batches, stream.count)]
        return np.concatenate(maps, axis=0).astype(np.float32, copy=False)[..., None]

    __call__ = explain


class UniformMap:
    """The constant map (all ones): the chance-level reference of every metric."""

    def explain(self, inputs: Any, targets: Any = None) -> np.ndarray:
        """(N, H, W, 1) float32 ones for images (N, H, W, C)."""
        del targets
        shape = tuple(np.shape(inputs))
        if len(shape) != 4:
            raise ValueError(f"inputs: expected images (N, H, W, C); got shape {shape}")
        return np.ones((*shape[:3], 1), np.float32)

    __call__ = explain
