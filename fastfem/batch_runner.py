"""Run one jitted, sharded step over a stream of host batches.

``step(params, x) -> pytree of per-sample arrays`` is jitted once with the batch axis sharded
over a 1-D device mesh and the params replicated. Every batch is padded to the same device
batch (the last one too), so the step is traced once per input shape. The loop keeps one batch
in flight: batch i+1 is put on the devices and dispatched before the (small) results of batch i
are fetched, so the host copy overlaps the device work.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from .parallel import batch_sharding, data_mesh, pad_batch, replicated, round_up


class BatchRunner:
    """A jitted ``step(params, x)`` sharded over a mesh, applied batch by batch.

    Args:
      step: pure function of (params, x) returning a pytree of arrays with a leading batch axis.
      params: the step's parameters (put on every device once).
      batch_size: the most images per device step (a memory bound); rounded up to a multiple of
        the number of devices.
      mesh: the device mesh; default all local devices.
    """

    def __init__(
        self,
        step: Callable[[Any, jax.Array], Any],
        params: Any,
        batch_size: int,
        mesh: Mesh | None = None,
    ):
        self.mesh = mesh if mesh is not None else data_mesh()
        self.n_devices = self.mesh.devices.size
        self.batch_size = round_up(batch_size, self.n_devices)
        self._x_sharding = batch_sharding(self.mesh)
        self.params = jax.device_put(params, replicated(self.mesh))
        self.step = jax.jit(step, out_shardings=self._x_sharding)

    def device_batch(self, count: int | None) -> int:
        """The padded batch used for ``count`` images (smaller inputs get a smaller batch)."""
        if count is None:
            return self.batch_size
        return min(self.batch_size, round_up(count, self.n_devices))

    def put(self, x: Any, size: int) -> Any:
        """Pad every array of the pytree ``x`` to ``size`` rows and shard it over the mesh."""
        return jax.device_put(jax.tree.map(lambda a: pad_batch(a, size), x), self._x_sharding)

    def run(self, batches: Iterator[Any], count: int | None = None) -> Iterator[Any]:
        """Yield the step's outputs for each host batch as NumPy, padding rows removed.

        A batch is an array or a pytree of arrays (e.g. (queries, references)) sharing their
        leading axis; a host batch larger than the device batch is split.
        """
        size = self.device_batch(count)
        pending: tuple[Any, int] | None = None
        for x in batches:
            n = _rows(x)
            for start in range(0, n, size):
                chunk = jax.tree.map(lambda a, s=start: a[s : s + size], x)
                out = self.step(self.params, self.put(chunk, size))
                if pending is not None:
                    yield _fetch(*pending)
                pending = (out, min(size, n - start))
        if pending is not None:
            yield _fetch(*pending)


def _rows(x: Any) -> int:
    sizes = {a.shape[0] for a in jax.tree.leaves(x)}
    if len(sizes) != 1:
        raise ValueError(f"arrays of one batch have different lengths {sorted(sizes)}")
    return sizes.pop()


def _fetch(out: Any, n_valid: int) -> Any:
    return jax.tree.map(lambda a: np.asarray(a)[:n_valid], out)
