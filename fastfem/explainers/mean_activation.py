"""`MeanActivation`: the plain mean over channels of the layer's activations,
``L = mean_c A_c``, resized (bilinear) to the input size — the reference method any
activation-based method should beat."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fastfem.converters import FeatureExtractor, load
from fastfem.engine.step import Step
from fastfem.explainers.base import ExplainerBase
from fastfem.explainers.method import Method
from fastfem.kernels.resize import resize_batch


def mean_over_channels(activations: jax.Array) -> jax.Array:
    """``mean_c A_c``: (B, h, w, C) -> (B, h, w), in float32."""
    return jnp.mean(activations.astype(jnp.float32), axis=-1)


class MeanActivation(ExplainerBase):
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
        return self.layer_step(("mean",), mean_over_channels, sample_shape, resize, extractor)

    def explain(self, inputs: Any, targets: Any = None, progress: bool = False) -> np.ndarray:
        """(N, H, W, 1) float32 maps; ``targets`` is ignored (class-agnostic); ``progress``:
        a progress bar on stderr."""
        del targets
        return self.collect_stream(inputs, self.step, progress=progress)[0]["maps"][..., None]

    __call__ = explain


METHOD = Method(
    name="mean",
    summary="the mean of the layer's activations over channels (a reference method)",
    build=lambda extractor, batch_size, s: MeanActivation(extractor, batch_size),
)
