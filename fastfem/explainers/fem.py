"""`FEM`: the Xplique-compatible explainer, fused and jitted.

``FEM(model, batch_size=32, conv_layer=None, k=2.0).explain(inputs)`` returns (N, H, W, 1)
float32 maps like ``xplique.attributions.FEM``, but the whole step — activations up to the layer,
the FEM kernel (`fastfem.kernels.fem`), and the resize to the input size — is one ``jax.jit``
with the batch sharded over every local device.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from ..batch_runner import BatchRunner
from ..converters import FeatureExtractor, load
from ..inputs import image_stream
from ..kernels.fem import RESIZE_METHOD, Variant, check_variant, fem_map
from ..kernels.finite import input_and_activation_finite, raise_on_nonfinite
from ..kernels.resize import resize_map, resize_matrices
from ..parallel import data_mesh
from ..progress import progress_bar

OnNonFinite = Literal["raise", "nan"]
NAN_MAPS_HINT = ", or pass on_nonfinite='nan' to get NaN maps for them instead of an error"


def make_fem_step(
    extractor: FeatureExtractor,
    k: float,
    variant: Variant,
    resize: tuple[np.ndarray, np.ndarray] | None,
):
    """The fused per-batch step: ``x -> (maps (N, H, W) or (N, h, w), finite (N, 2))``.

    ``finite[:, 0]``: every input pixel is finite; ``finite[:, 1]``: every activation is.
    """

    def step(params: Any, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        activations = extractor.apply(params, x).activations[0]
        finite = input_and_activation_finite(x, activations)
        maps = fem_map(activations, k=k, variant=variant)
        if resize is not None:
            rh, rw = (jnp.asarray(m) for m in resize)
            maps = jax.vmap(resize_map, in_axes=(0, None, None))(maps, rh, rw)
        return maps, finite

    return step


class FEM:
    """Feature Explanation Method (Fuad et al. 2020), Xplique-compatible, under ``jax.jit``.

    Args:
      model: a Keras 3 model, a path to a ``.keras``/``.h5`` file, or a
        `fastfem.converters.FeatureExtractor`.
      batch_size: the most images per device step (a memory bound, as in Xplique); rounded up to
        a multiple of the number of devices. None: 256.
      conv_layer: the explained layer, as Xplique: None -> last layer with ``filters``, int ->
        ``model.layers[i]``, str -> by name.
      k: the k of the k-sigma threshold.
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
        batch_size: int | None = 32,
        conv_layer: str | int | None = None,
        k: float = 2.0,
        variant: Variant = "xplique",
        on_nonfinite: OnNonFinite = "raise",
        devices: Sequence[jax.Device] | None = None,
    ):
        check_variant(variant)
        if on_nonfinite not in ("raise", "nan"):
            raise ValueError(f"on_nonfinite must be 'raise' or 'nan'; got {on_nonfinite!r}")
        #: the model as given; `fastfem.evaluate` scores it for the faithfulness metrics
        self.model = model
        self.extractor = load(model, layers=conv_layer)
        self.layer_name = self.extractor.layer_name
        self.batch_size = 256 if batch_size is None else int(batch_size)
        self.k = float(k)
        self.variant = variant
        self.on_nonfinite = on_nonfinite
        self.devices = devices
        self.last_nonfinite: np.ndarray = np.zeros(0, dtype=np.int64)
        self._runners: dict[tuple[Any, ...], BatchRunner] = {}

    def feature_shape(self, sample_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """(h, w, C) of the explained layer's activations for images of ``sample_shape``."""
        spec = jax.ShapeDtypeStruct((1, *sample_shape), jnp.float32)
        feats = jax.eval_shape(self.extractor.apply, self.extractor.params, spec)
        return tuple(feats.activations[0].shape[1:])  # type: ignore[return-value]

    def _runner(self, sample_shape: tuple[int, int, int], resize: bool) -> BatchRunner:
        key = (sample_shape, resize)
        if key not in self._runners:
            matrices = None
            if resize:
                h, w, _ = self.feature_shape(sample_shape)
                matrices = resize_matrices((h, w), sample_shape[:2], RESIZE_METHOD[self.variant])
            step = make_fem_step(self.extractor, self.k, self.variant, matrices)
            mesh = data_mesh(self.devices) if self.devices is not None else None
            self._runners[key] = BatchRunner(step, self.extractor.params, self.batch_size, mesh)
        return self._runners[key]

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
        stream = image_stream(inputs, self.batch_size, self.extractor.input_shape)
        runner = self._runner(stream.sample_shape, resize)
        # With a known count (arrays) each batch is copied straight into the result and its
        # device buffer freed; collecting the batches and concatenating at the end would hold
        # every map twice (the batches + the result) at the peak.
        out: np.ndarray | None = None
        maps: list[np.ndarray] = []
        nonfinite: list[np.ndarray] = []
        seen = 0
        bar = progress_bar(stream.count, enabled=progress)
        for batch_maps, finite in runner.run(stream.batches, stream.count):
            n = finite.shape[0]
            if self.on_nonfinite == "raise":
                raise_on_nonfinite(finite, seen, self.layer_name, hint=NAN_MAPS_HINT)
            else:
                ok = finite.all(axis=1)
                nonfinite.append(seen + np.flatnonzero(~ok))
                batch_maps = np.where(
                    ok.reshape(-1, *[1] * (batch_maps.ndim - 1)), batch_maps, np.nan
                )
            if stream.count is None:
                maps.append(batch_maps)
            else:
                if out is None:
                    out = np.empty((stream.count, *batch_maps.shape[1:]), np.float32)
                out[seen : seen + n] = batch_maps
            seen += n
            bar.update(n)
        bar.close()
        self.last_nonfinite = np.concatenate(nonfinite) if nonfinite else np.zeros(0, np.int64)
        if out is None:
            out = np.concatenate(maps, axis=0).astype(np.float32, copy=False)
        return out[..., None] if resize else out

    __call__ = explain
