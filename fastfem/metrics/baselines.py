"""`UniformMap`, the chance-level reference of the metrics: the constant map. Its localisation
scores are the chance levels (box area over image area on both pointing games and IoU@t);
masking by it leaves the image unchanged, so average drop and increase in confidence are 0, and
its deletion/insertion curves follow the raster order.

It has the explainers' interface: ``explain(inputs, targets=None) -> (N, H, W, 1)`` float32.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fastfem.engine.step import Step, StepFn


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
