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

from fastfem.converters import FeatureExtractor, load
from fastfem.engine.runner import collect
from fastfem.engine.step import Step, StepFn
from fastfem.explainers.base import Explainer, image_batches
from fastfem.kernels.resize import resize_batch


def mean_over_channels(activations: jax.Array) -> jax.Array:
    """``mean_c A_c``: (B, h, w, C) -> (B, h, w), in float32."""
    return jnp.mean(activations.astype(jnp.float32), axis=-1)


class MeanActivation(Explainer):
    """``mean_c A_c`` at a layer (Xplique's layer choice), bilinearly resized; jitted, sharded.

    Args mirror `fastfem.FEM`: ``model`` (Keras model, path or FeatureExtractor),
    ``batch_size``, ``conv_layer``, ``devices``.
    """

    def __init__(
        self,
        model: Any,
        batch_size: int = 32,
        conv_layer: str | int | None = None,
        devices: Sequence[jax.Device] | None = None,
    ):
        super().__init__(load(model, layers=conv_layer), batch_size, devices)
        _ = self.layer_name  # a single-layer method: a ValueError for several layers
        #: the model as given; `fastfem.evaluate` scores it for the faithfulness metrics
        self.model = model

    def resize_maps(self, maps: jax.Array, out_hw: tuple[int, int]) -> jax.Array:
        """Bilinear resize to ``out_hw``."""
        return resize_batch(maps, out_hw, "bilinear")

    def step(
        self,
        sample_shape: Sequence[int],
        *,
        resize: bool = True,
        extractor: FeatureExtractor | None = None,
    ) -> Step:
        """``(params, {"x"}) -> {"maps", "finite"[, "output"]}``, as `fastfem.FEM.step`."""
        return self.layer_step("mean", mean_over_channels, sample_shape, resize, extractor)

    def explain(self, inputs: Any, targets: Any = None) -> np.ndarray:
        """(N, H, W, 1) float32 maps; ``targets`` is ignored (class-agnostic)."""
        del targets
        stream = self.stream(inputs)
        step = self.step(stream.sample_shape)
        out = collect(self.run(step, image_batches(stream), stream.count), stream.count)
        return out["maps"][..., None]

    __call__ = explain


def make_uniform_step(out_hw: tuple[int, int]) -> StepFn:
    """``(params, {"x"}) -> {maps: ones (B, H, W)}`` (the map ignores the image)."""

    def step(params: Any, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        del params
        return {"maps": jnp.ones((batch["x"].shape[0], *out_hw), jnp.float32)}

    return step


class UniformMap:
    """The constant map (all ones): the chance-level reference of every metric."""

    def step(self, sample_shape: Sequence[int], *, resize: bool = True) -> Step:
        """``(params, {"x"}) -> {"maps": ones (B, H, W)}`` (resize changes nothing)."""
        del resize
        return Step(make_uniform_step((int(sample_shape[0]), int(sample_shape[1]))), ())

    def explain(self, inputs: Any, targets: Any = None) -> np.ndarray:
        """(N, H, W, 1) float32 ones for images (N, H, W, C)."""
        del targets
        shape = tuple(np.shape(inputs))
        if len(shape) != 4:
            raise ValueError(f"inputs: expected images (N, H, W, C); got shape {shape}")
        return np.ones((*shape[:3], 1), np.float32)

    __call__ = explain
