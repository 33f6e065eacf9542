"""`MLFEM`: multi-layer FEM (Bourroux et al. 2022), one fused jitted step for all layers.

``MLFEM(model, layers=None, fusion="mean").explain(images)`` runs ONE forward pass that returns
the activations of every chosen layer (`fastfem.converters.from_keras` with several layers),
computes each layer's FEM map with the FEM kernel (`fastfem.kernels.fem`), resizes each to the
input size (the variant's resize: bicubic for ``xplique``), min-max normalises each to [0, 1],
and fuses them per sample (`fastfem.kernels.fusion`). Batch sharded over every local device.

Default layers: the last layer with ``filters`` (Xplique's notion of a conv layer) of each
resolution stage, a stage being the conv layers that share an output spatial size.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from fastfem.converters import FeatureExtractor, is_artifact, is_keras_model, load, load_keras_file
from fastfem.engine.cache import cached_step
from fastfem.engine.nonfinite import NonFiniteCheck
from fastfem.engine.step import Step, StepFn
from fastfem.explainers.base import ExplainerBase
from fastfem.explainers.fem import FEM_SETTINGS
from fastfem.explainers.method import Method, Setting
from fastfem.kernels.fem import Variant, check_k, check_variant
from fastfem.kernels.finite import input_and_activation_finite
from fastfem.kernels.fusion import FUSIONS, Fusion, check_fusion
from fastfem.kernels.mlfem import mlfem_maps
from fastfem.kernels.resize import resize_batch


def default_layers(model: Any) -> list[str]:
    """The last layer with ``filters`` of each resolution stage, in model order.

    Layers with ``filters`` are grouped by their output spatial size ``(h, w)``; each group's
    last layer (in ``model.layers`` order) is kept. A ValueError if the model has none.
    """
    last: dict[tuple[Any, ...], str] = {}
    for layer in model.layers:
        if not hasattr(layer, "filters"):
            continue
        shape = tuple(layer.output.shape)
        if len(shape) != 4:
            continue
        last.pop(shape[1:3], None)  # re-insert: dict order = order of each stage's last layer
        last[shape[1:3]] = layer.name
    if not last:
        raise ValueError(
            f"model {model.name!r} has no 2-D convolutional layer (no layer with `filters` and "
            "a 4-D output); pass layers= explicitly"
        )
    order = {layer.name: i for i, layer in enumerate(model.layers)}
    return sorted(last.values(), key=order.__getitem__)


def make_mlfem_step(
    extractor: FeatureExtractor,
    k: float,
    variant: Variant,
    fusion: Fusion,
    weights: np.ndarray | None,
    out_hw: tuple[int, int],
    return_layers: bool,
) -> StepFn:
    """``(params, {"x"}) -> {maps (B, H, W), finite[, layers (B, L, H, W)][, output]}`` in one
    forward pass of every layer (`fastfem.kernels.mlfem.mlfem_maps`)."""

    def step(params: Any, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        x = batch["x"]
        feats = extractor.apply(params, x)
        fused, stack = mlfem_maps(feats.activations, k, variant, fusion, weights, out_hw)
        out = {"maps": fused, "finite": input_and_activation_finite(x, feats.activations)}
        if return_layers:
            out["layers"] = stack
        if feats.output is not None:
            out["output"] = feats.output
        return out

    return step


def mlfem_extractor(
    model: Any, layers: Sequence[str | int] | None, include_output: bool = False
) -> FeatureExtractor:
    """The multi-layer `FeatureExtractor` of ``model`` (with its output when
    ``include_output``): its own for an extractor or a converted artifact, else ``layers``
    (default `default_layers` for Keras models)."""
    if isinstance(layers, (str, int)):
        raise TypeError(f"layers must be a list of layer names/indices; got {layers!r}")
    if layers is not None and not list(layers):
        raise ValueError("layers is empty; give at least one layer")
    if isinstance(model, FeatureExtractor):  # its own layers (a ValueError for layers=)
        return load(model, layers=layers, include_output=include_output)
    if isinstance(model, (str, os.PathLike)) and str(model).endswith((".keras", ".h5", ".hdf5")):
        model = load_keras_file(model)
    if is_keras_model(model):
        chosen = list(layers) if layers is not None else default_layers(model)
        return load(model, layers=chosen, include_output=include_output)
    # any other model fastfem.converters.load accepts (SavedModel, tf_keras, Flax, artifact...):
    # its layers must be named, there is no stage structure to read
    if layers is None and isinstance(model, (str, os.PathLike)) and is_artifact(model):
        return load(model, include_output=include_output)  # an artifact keeps its layers
    if layers is None:
        raise ValueError(
            f"MLFEM needs layers= for a {type(model).__name__} model (the default per-stage "
            "layers are read from Keras models only)"
        )
    return load(model, layers=list(layers), include_output=include_output)


class MLFEM(ExplainerBase):
    """Multi-layer FEM: FEM at several layers, each resized and normalised, then fused.

    Args:
      model: a Keras 3 model, a path to a ``.keras``/``.h5`` file, or a `FeatureExtractor`
        returning several layers (then ``layers`` must be None).
      layers: layer names/indices; None -> `default_layers` (last conv of each resolution stage).
      fusion: ``"mean"`` (default), ``"product"`` or ``"weighted"`` (with ``weights``).
      weights: one non-negative weight per layer for ``fusion="weighted"`` (normalised to sum 1).
      k: the k of FEM's k-sigma threshold, a finite number >= 0.
      variant: the FEM variant of every layer's map (`fastfem.kernels.fem`); its resize method
        (bicubic for ``xplique``) brings each map to the input size.
      batch_size: the most images per device step, a positive integer.
      devices: devices to shard the batch over; default all local devices.
    """

    def __init__(
        self,
        model: Any,
        layers: Sequence[str | int] | None = None,
        fusion: Fusion = "mean",
        weights: Sequence[float] | None = None,
        k: float = 2.0,
        variant: Variant = "xplique",
        batch_size: int = 32,
        devices: Sequence[jax.Device] | None = None,
    ):
        check_variant(variant)
        self.k = check_k(k)
        self.variant = variant
        super().__init__(mlfem_extractor(model, layers), batch_size, devices)
        #: the model as given; `fastfem.evaluate` scores it for the faithfulness metrics
        self.model = model
        if len(set(self.layer_names)) != len(self.layer_names):
            raise ValueError(f"layers repeat a layer: {self.layer_names}")
        self.fusion = fusion
        self.weights = check_fusion(fusion, weights, len(self.layer_names))

    def resize_maps(self, maps: jax.Array, out_hw: tuple[int, int]) -> jax.Array:
        """MLFEM maps are fused at the input size already; other sizes are resized bilinearly."""
        return resize_batch(maps, out_hw, "bilinear")

    def step(
        self,
        sample_shape: Sequence[int],
        *,
        resize: bool = True,
        extractor: FeatureExtractor | None = None,
        return_layers: bool = False,
    ) -> Step:
        """The fused multi-layer step for images of ``sample_shape`` (H, W, C).

        ``(params, {"x"}) -> {"maps": (B, H, W), "finite": (B, 2)}`` (+ ``"layers"`` (B, L, H,
        W) with ``return_layers``, ``"output"`` when the extractor returns the model output).
        MLFEM fuses at the input size, so ``resize`` changes nothing; it is accepted for the
        common step signature.
        """
        del resize
        ex = self.extractor if extractor is None else extractor
        out_hw = (int(sample_shape[0]), int(sample_shape[1]))
        weights = None if self.weights is None else tuple(self.weights.tolist())
        fn = cached_step(
            ex.apply,
            ("mlfem", self.k, self.variant, self.fusion, weights, out_hw, return_layers),
            lambda: make_mlfem_step(
                ex,
                self.k,
                self.variant,
                self.fusion,
                self.weights,
                out_hw,
                return_layers,  # type: ignore[arg-type]
            ),
        )
        return Step(fn, ex.params)

    def explain(
        self, inputs: Any, targets: Any = None, return_layers: bool = False, progress: bool = False
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Fused maps (N, H, W, 1) float32 in [0, 1] of ``inputs`` (arrays or a dataset).

        ``targets`` is ignored (FEM is class-agnostic). With ``return_layers=True`` also the
        per-layer maps (N, L, H, W), resized and normalised, in the order of `layer_names`.
        NaN/inf pixels or activations raise a ValueError naming the inputs.
        """
        del targets
        make_step = lambda s: self.step(s, return_layers=return_layers)  # noqa: E731
        check = NonFiniteCheck(",".join(self.layer_names))
        out, _ = self.collect_stream(inputs, make_step, check, progress, "mlfem")
        maps = out["maps"][..., None]
        return (maps, out["layers"]) if return_layers else maps

    __call__ = explain


def fusion_weights(text: str) -> list[float]:
    """``"1,2,3"`` -> [1.0, 2.0, 3.0] (MLFEM's weights on the command line)."""
    return [float(t) for t in text.split(",") if t.strip()]


METHOD = Method(
    name="mlfem",
    summary="MLFEM: FEM of several layers fused at the input size",
    build=lambda extractor, batch_size, s: MLFEM(
        extractor,
        fusion=s["fusion"],
        weights=s["fusion_weights"],
        k=s["k"],
        variant=s["variant"],
        batch_size=batch_size,
    ),
    settings=(
        *FEM_SETTINGS,
        Setting("fusion", "mean", "fusion rule of the layers' maps (mlfem)", choices=FUSIONS),
        Setting(
            "fusion_weights",
            None,
            "comma-separated weights, one per layer, for --fusion weighted (mlfem)",
            parse=fusion_weights,
        ),
    ),
    load=mlfem_extractor,
    multi_layer=True,
)
