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
import jax.numpy as jnp
import numpy as np

from ..batch_runner import BatchRunner
from ..converters import FeatureExtractor, from_keras, is_artifact, load, load_keras_file
from ..converters.load import _is_keras_model as _is_keras
from ..inputs import image_stream
from ..kernels.fem import RESIZE_METHOD, Variant, check_variant, fem_map
from ..kernels.fusion import Fusion, check_fusion, fuse_maps, unit_normalize
from ..kernels.resize import resize_maps
from ..parallel import data_mesh
from ..progress import progress_bar


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


def mlfem_maps(
    activations: Sequence[jax.Array],
    k: float,
    variant: Variant,
    fusion: Fusion,
    weights: np.ndarray | None,
    out_hw: tuple[int, int],
) -> tuple[jax.Array, jax.Array]:
    """MLFEM of a batch from each layer's activations ``A_l`` (N, h_l, w_l, C_l).

    ``m_l = unit_normalize(resize(fem_map(A_l), (H, W)))`` (the variant's resize) and
    ``F = fuse(m_1..m_L)`` per sample. Returns ``(F (N, H, W), stack (N, L, H, W))``. The one
    place MLFEM's per-layer logic lives (`MLFEM` and the dataset audit use it).
    """
    method = RESIZE_METHOD[variant]
    per_layer = [
        jax.vmap(unit_normalize)(resize_maps(fem_map(a, k=k, variant=variant), out_hw, method))
        for a in activations
    ]
    stack = jnp.stack(per_layer, axis=1)  # (N, L, H, W)
    fused = jax.vmap(lambda m: fuse_maps(m, fusion, weights))(stack)
    return fused, stack


def make_mlfem_step(
    extractor: FeatureExtractor,
    k: float,
    variant: Variant,
    fusion: Fusion,
    weights: np.ndarray | None,
    out_hw: tuple[int, int],
    return_layers: bool,
):
    """``(params, x) -> {fused (N, H, W), layers (N, L, H, W)?}`` in one forward pass."""

    def step(params: Any, x: jax.Array) -> dict[str, jax.Array]:
        acts = extractor.apply(params, x).activations
        fused, stack = mlfem_maps(acts, k, variant, fusion, weights, out_hw)
        out = {"fused": fused}
        if return_layers:
            out["layers"] = stack
        return out

    return step


class MLFEM:
    """Multi-layer FEM: FEM at several layers, each resized and normalised, then fused.

    Args:
      model: a Keras 3 model, a path to a ``.keras``/``.h5`` file, or a `FeatureExtractor`
        returning several layers (then ``layers`` must be None).
      layers: layer names/indices; None -> `default_layers` (last conv of each resolution stage).
      fusion: ``"mean"`` (default), ``"product"`` or ``"weighted"`` (with ``weights``).
      weights: one non-negative weight per layer for ``fusion="weighted"`` (normalised to sum 1).
      k: the k of FEM's k-sigma threshold.
      variant: the FEM variant of every layer's map (`fastfem.kernels.fem`); its resize method
        (bicubic for ``xplique``) brings each map to the input size.
      batch_size: the most images per device step.
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
        batch_size: int | None = 32,
        devices: Sequence[jax.Device] | None = None,
    ):
        check_variant(variant)
        #: the model as given; `fastfem.evaluate` scores it for the faithfulness metrics
        self.model = model
        if isinstance(layers, (str, int)):
            raise TypeError(f"layers must be a list of layer names/indices; got {layers!r}")
        if isinstance(model, FeatureExtractor):
            if layers is not None:
                raise ValueError(
                    "layers= cannot re-select layers of an existing FeatureExtractor "
                    f"(it returns {model.layer_names}); build it with the layers you need"
                )
            self.extractor = model
        else:
            if isinstance(model, (str, os.PathLike)) and str(model).endswith(
                (".keras", ".h5", ".hdf5")
            ):
                model = load_keras_file(model)
            if layers is not None and not list(layers):
                raise ValueError("layers is empty; give at least one layer")
            if _is_keras(model):
                chosen = list(layers) if layers is not None else default_layers(model)
                if not chosen:
                    raise ValueError("layers is empty; give at least one layer")
                self.extractor = from_keras(model, layers=chosen)
            else:
                # any other model fastfem.converters.load accepts (SavedModel, tf_keras, Flax,
                # artifact...): its layers must be named, there is no stage structure to read
                if layers is None and isinstance(model, (str, os.PathLike)) and is_artifact(model):
                    self.extractor = load(model)  # a converted artifact keeps its layers
                elif layers is None:
                    raise ValueError(
                        f"MLFEM needs layers= for a {type(model).__name__} model (the default "
                        "per-stage layers are read from Keras models only)"
                    )
                else:
                    self.extractor = load(model, layers=list(layers))
        self.layer_names = self.extractor.layer_names
        if len(set(self.layer_names)) != len(self.layer_names):
            raise ValueError(f"layers repeat a layer: {self.layer_names}")
        self.fusion = fusion
        self.weights = check_fusion(fusion, weights, len(self.layer_names))
        self.k = float(k)
        self.variant = variant
        self.batch_size = 256 if batch_size is None else int(batch_size)
        self.devices = devices
        self._runners: dict[tuple[Any, ...], BatchRunner] = {}

    def _runner(self, sample_shape: tuple[int, int, int], return_layers: bool) -> BatchRunner:
        key = (sample_shape, return_layers)
        if key not in self._runners:
            step = make_mlfem_step(
                self.extractor,
                self.k,
                self.variant,
                self.fusion,  # type: ignore[arg-type]
                self.weights,
                tuple(sample_shape[:2]),  # type: ignore[arg-type]
                return_layers,
            )
            mesh = data_mesh(self.devices) if self.devices is not None else None
            self._runners[key] = BatchRunner(step, self.extractor.params, self.batch_size, mesh)
        return self._runners[key]

    def explain(
        self, inputs: Any, targets: Any = None, return_layers: bool = False, progress: bool = False
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Fused maps (N, H, W, 1) float32 in [0, 1] of ``inputs`` (arrays or a dataset).

        ``targets`` is ignored (FEM is class-agnostic). With ``return_layers=True`` also the
        per-layer maps (N, L, H, W), resized and normalised, in the order of `layer_names`.
        """
        del targets
        stream = image_stream(inputs, self.batch_size, self.extractor.input_shape)
        runner = self._runner(stream.sample_shape, return_layers)
        fused, layers = [], []
        bar = progress_bar(stream.count, enabled=progress, desc="mlfem")
        for out in runner.run(stream.batches, stream.count):
            fused.append(out["fused"])
            if return_layers:
                layers.append(out["layers"])
            bar.update(out["fused"].shape[0])
        bar.close()
        maps = np.concatenate(fused).astype(np.float32, copy=False)[..., None]
        if return_layers:
            return maps, np.concatenate(layers).astype(np.float32, copy=False)
        return maps

    __call__ = explain
