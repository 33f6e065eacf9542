"""`FEM`: the Xplique-compatible explainer, fused and jitted.

``FEM(model, batch_size=32, conv_layer=None, k=2.0).explain(inputs)`` returns (N, H, W, 1)
float32 maps like ``xplique.attributions.FEM``, but the whole step — activations up to the layer,
the FEM kernel (`fastfem.kernels.fem`), and the resize to the input size — is one ``jax.jit``
with the batch sharded over every local device.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import jax
import numpy as np

from fastfem.converters import FeatureExtractor, load
from fastfem.engine.nonfinite import NAN_MAPS_HINT, NonFiniteCheck, OnNonFinite, check_policy
from fastfem.engine.step import Step
from fastfem.explainers.base import ExplainerBase
from fastfem.explainers.method import Method, Setting
from fastfem.kernels.fem import VARIANTS, Variant, check_k, check_variant, fem_map, fem_resize


class FEM(ExplainerBase):
    """Feature Explanation Method (Fuad et al. 2020), Xplique-compatible, under ``jax.jit``.

    Args:
      model: a Keras 3 model, a path to a ``.keras``/``.h5`` file, or a
        `fastfem.converters.FeatureExtractor`.
      batch_size: the most images per device step (a memory bound, as in Xplique), a positive
        integer; rounded up to a multiple of the number of devices.
      conv_layer: the explained layer, as Xplique: None -> last layer with ``filters``, int ->
        ``model.layers[i]``, str -> by name.
      k: the k of the k-sigma threshold, a finite number >= 0.
      variant: ``"xplique"`` (default, Xplique's numbers), ``"original"`` or ``"gradcam"``; see
        `fastfem.kernels.fem`.
      on_nonfinite: ``"raise"`` (default) raises a ValueError naming the inputs whose pixels or
        activations are NaN/inf; ``"nan"`` returns all-NaN maps for exactly those inputs (the
        others are unaffected; `last_nonfinite` lists their indices).
      devices: devices to shard the batch over; default all local devices.
    """

    def __init__(
        self,
        model: Any,
        batch_size: int = 32,
        conv_layer: str | int | None = None,
        k: float = 2.0,
        variant: Variant = "xplique",
        on_nonfinite: OnNonFinite = "raise",
        devices: Sequence[jax.Device] | None = None,
    ):
        check_variant(variant)
        self.k = check_k(k)
        self.variant = variant
        self.on_nonfinite = check_policy(on_nonfinite)
        super().__init__(load(model, layers=conv_layer), batch_size, devices)
        _ = self.layer_name  # a single-layer method: a ValueError for several layers
        #: the model as given; `fastfem.evaluate` scores it for the faithfulness metrics
        self.model = model
        self.last_nonfinite: np.ndarray = np.zeros(0, dtype=np.int64)

    def resize_maps(self, maps: jax.Array, out_hw: tuple[int, int]) -> jax.Array:
        """Feature-resolution FEM maps -> ``out_hw``, with the variant's resize."""
        return fem_resize(maps, out_hw, self.variant)

    def step(
        self,
        sample_shape: Sequence[int],
        *,
        resize: bool = True,
        extractor: FeatureExtractor | None = None,
    ) -> Step:
        """The fused step for images of ``sample_shape`` (H, W, C).

        ``(params, {"x": (B, H, W, C)}) -> {"maps": (B, H, W) | (B, h, w), "finite": (B, 2)}``
        (+ ``"output"`` when the extractor returns the model's output). ``extractor``: compute
        on another extractor's activations of the same layer (e.g. one that also returns the
        model output, for metrics in the same forward pass).
        """
        return self.layer_step(
            ("fem", self.k, self.variant),
            partial(fem_map, k=self.k, variant=self.variant),
            sample_shape,
            resize,
            extractor,
        )

    def explain(
        self, inputs: Any, targets: Any = None, resize: bool = True, progress: bool = False
    ) -> np.ndarray:
        """FEM maps of ``inputs``.

        Args:
          inputs: (N, H, W, C) NumPy array, ``tf.Tensor``, ``jax.Array``, or a
            ``tf.data.Dataset`` of images / ``(image, label)`` pairs, batched or not.
          targets: ignored (FEM is class-agnostic); accepted for API symmetry with Xplique.
          resize: True -> (N, H, W, 1) at the input size; False -> (N, h, w) at the layer's
            resolution.
          progress: show a progress bar (images/s, ETA) on stderr.

        Returns:
          float32 NumPy array of maps.
        """
        del targets
        check = NonFiniteCheck(self.layer_name, self.on_nonfinite, hint=NAN_MAPS_HINT)
        out, _ = self.collect_stream(inputs, lambda s: self.step(s, resize=resize), check, progress)
        self.last_nonfinite = check.indices
        maps = out["maps"]
        return maps[..., None] if resize else maps

    __call__ = explain


#: FEM's k and variant, shared with the methods built on it (`fastfem.explainers.mlfem`).
FEM_SETTINGS = (
    Setting("k", 2.0, "k of the k-sigma threshold (fem, mlfem)", parse=lambda t: check_k(float(t))),
    Setting("variant", "xplique", "FEM variant (fem, mlfem)", choices=VARIANTS),
)

METHOD = Method(
    name="fem",
    summary="FEM: the k-sigma map of one layer (default)",
    build=lambda extractor, batch_size, s: FEM(
        extractor, batch_size, k=s["k"], variant=s["variant"]
    ),
    settings=FEM_SETTINGS,
)
