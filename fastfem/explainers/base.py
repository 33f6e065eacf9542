"""What every explainer shares: its extractor, batch size, device mesh and input stream.

An explainer is a method (a kernel of the activations, `fastfem.kernels`) bound to a
`fastfem.converters.FeatureExtractor`. Its public ``step(sample_shape, *, resize=...)`` returns
a `fastfem.engine.step.Step` (its function cached by the extractor and hashable settings,
`fastfem.engine.cache`); ``explain`` streams the inputs (`fastfem.data.sources.stream_images`),
runs the step with `fastfem.engine.runner.Runner` and gathers the results with
`fastfem.engine.runner.collect`. This base holds the plumbing once: validated batch size, the
mesh, the runner of a step, the feature shape, and the input stream with the model's expected
shape.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from fastfem.converters import FeatureExtractor
from fastfem.data.sources import ImageStream, stream_images
from fastfem.engine.cache import cached_step, runner_for
from fastfem.engine.parallel import data_mesh, round_up
from fastfem.engine.runner import Check, HostBatch, Runner, collect
from fastfem.engine.step import Step, StepFn
from fastfem.kernels.finite import input_and_activation_finite


def check_positive_int(value: Any, name: str = "batch_size") -> int:
    """``value`` as an int; a ValueError naming ``name`` unless it is a positive integer (not
    a bool, a float such as 2.5, a string or None)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer; got {value!r}")
    return int(value)


class ExplainerBase:
    """Base of the explainers (see the module docstring); the `fastfem.explainers.method.Explainer`
    protocol is what callers use.

    Args:
      extractor: the model as a `FeatureExtractor`.
      batch_size: the most images per device step (a memory bound); rounded up to a multiple
        of the number of devices by the runner.
      devices: devices to shard the batch over; default all local devices.
    """

    #: True for a method that explains pairs of images (`fastfem.explainers.method.Explainer`)
    explains_pairs: bool = False

    def __init__(
        self,
        extractor: FeatureExtractor,
        batch_size: int = 32,
        devices: Sequence[jax.Device] | None = None,
    ):
        self.extractor = extractor
        self.batch_size = check_positive_int(batch_size)
        self.devices = devices
        self.mesh = data_mesh(devices)

    @property
    def layer_names(self) -> tuple[str, ...]:
        """The explained layer(s)."""
        return self.extractor.layer_names

    @property
    def layer_name(self) -> str:
        """The explained layer of a single-layer method."""
        return self.extractor.layer_name

    def feature_shape(self, sample_shape: Sequence[int], layer: int = 0) -> tuple[int, int, int]:
        """(h, w, C) of the ``layer``-th explained activations for images of ``sample_shape``."""
        spec = jax.ShapeDtypeStruct((1, *sample_shape), jnp.float32)
        feats = jax.eval_shape(self.extractor.apply, self.extractor.params, spec)
        return tuple(feats.activations[layer].shape[1:])  # type: ignore[return-value]

    def stream(self, inputs: Any, what: str | None = None) -> ImageStream:
        """``inputs`` as float32 host batches of at most ``batch_size`` images (`fastfem.data.
        sources.stream_images`); errors prefixed with ``what`` (e.g. ``"queries"``) if given."""
        try:
            return stream_images(inputs, self.batch_size, self.extractor.input_shape)
        except ValueError as err:
            if what is None:
                raise
            raise ValueError(f"{what}: {err}") from err

    def collect_stream(
        self,
        inputs: Any,
        make_step: Callable[[tuple[int, int, int]], Step],
        check: Check | None = None,
        progress: bool = False,
        desc: str = "explain",
        what: str | None = None,
    ) -> tuple[dict[str, np.ndarray], tuple[int, int, int]]:
        """Stream ``inputs`` once (`stream`) through ``make_step(sample_shape)``: the results
        gathered by `fastfem.engine.runner.collect` (``check``, ``progress``, ``desc``) and the
        inputs' sample shape."""
        stream = self.stream(inputs, what)
        results = self.run(
            make_step(stream.sample_shape), ({"x": b} for b in stream.batches), stream.count
        )
        out = collect(results, stream.count, check, progress, desc)
        return out, stream.sample_shape

    def runner(self, step: Step) -> Runner:
        """The runner of ``step``'s function on this explainer's mesh (`runner_for`: made and
        compiled once per function, batch size and mesh)."""
        return runner_for(step.fn, self.batch_size, self.mesh)

    def run(
        self, step: Step, batches: Iterable[HostBatch], count: int | None = None
    ) -> Iterator[dict[str, np.ndarray]]:
        """Run ``step`` over host batches (dicts of arrays) on this explainer's mesh."""
        return self.runner(step).run(step.params, batches, count)

    def device_batch(self) -> int:
        """The full device batch (``batch_size`` rounded up to the number of devices)."""
        return round_up(self.batch_size, self.mesh.devices.size)

    def resize_maps(self, maps: jax.Array, out_hw: tuple[int, int]) -> jax.Array:
        """Maps at the method's resolution (N, h, w) -> (N, H, W), resized the way this method
        resizes its own (a pure function; jittable)."""
        raise NotImplementedError

    def layer_step(
        self,
        settings: Hashable,
        layer_map: LayerMap,
        sample_shape: Sequence[int],
        resize: bool,
        extractor: FeatureExtractor | None,
    ) -> Step:
        """The `Step` of a one-layer method whose map is ``layer_map(A)`` (`make_layer_step`),
        resized with `resize_maps` to the input size when ``resize``; built once per
        ``(extractor, settings, size)`` (`fastfem.engine.cache.cached_step`: ``settings`` names
        the method and every value ``layer_map`` and `resize_maps` depend on). ``extractor``:
        compute on another extractor's activations of the same layer (e.g. one that also
        returns the model output)."""
        ex = self.extractor if extractor is None else extractor
        out_hw = (int(sample_shape[0]), int(sample_shape[1])) if resize else None
        fn = cached_step(
            ex.apply,
            (settings, out_hw),
            lambda: make_layer_step(ex, layer_map, self.resize_maps, out_hw),
        )
        return Step(fn, ex.params)


#: A per-batch map of one layer's activations: (B, h, w, C) -> (B, h, w).
LayerMap = Callable[[jax.Array], jax.Array]


def make_layer_step(
    extractor: FeatureExtractor,
    layer_map: LayerMap,
    resize_maps: Callable[[jax.Array, tuple[int, int]], jax.Array],
    out_hw: tuple[int, int] | None,
) -> StepFn:
    """``(params, {"x"}) -> {maps, finite[, output]}``: one forward pass, ``layer_map`` of the
    layer's activations, ``resize_maps`` to ``out_hw`` (None: the layer's resolution), the
    finiteness flags of pixels and activations, and the model output when the extractor
    returns it."""

    def step(params: Any, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        x = batch["x"]
        feats = extractor.apply(params, x)
        activations = feats.activations[0]
        maps = layer_map(activations)
        if out_hw is not None:
            maps = resize_maps(maps, out_hw)
        out = {"maps": maps, "finite": input_and_activation_finite(x, activations)}
        if feats.output is not None:
            out["output"] = feats.output
        return out

    return step
