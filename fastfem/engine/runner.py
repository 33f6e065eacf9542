"""Run steps over a stream of host batches: the one runner and the one collector.

`Runner` jits a step (or a chain of stages, `fastfem.engine.step`) once with the batch axis sharded
over a 1-D device mesh and the params replicated. Every batch is padded to the same device
batch (the last one too), so each input shape is traced once. One batch is in flight: batch
i+1 is put on the devices and dispatched before the (small) results of batch i are fetched, so
the host copy overlaps the device work. Params are an argument of every `Runner.run` call;
the runner keeps no model state.

`collect` concatenates the per-batch dicts into one dict of arrays (written in place when the
count is known, so the results are never held twice), calling an optional per-batch check
(non-finite handling, `fastfem.engine.nonfinite`) and advancing a progress bar.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh

from fastfem.engine.parallel import batch_sharding, data_mesh, pad_batch, replicated, round_up
from fastfem.engine.progress import progress_bar
from fastfem.engine.step import CARRY, StepFn

HostBatch = dict[str, np.ndarray]
Check = Callable[[dict[str, np.ndarray], int], dict[str, np.ndarray]]


class Runner:
    """Jitted stages sharded over a mesh, applied batch by batch.

    Args:
      stages: one step function ``(params, batch) -> dict``, or a chain of them (each but the
        last hands its successor's batch under `fastfem.engine.step.CARRY`).
      batch_size: the most examples per device step (a memory bound); rounded up to a multiple
        of the number of devices.
      mesh: the device mesh; default all local devices.
    """

    def __init__(
        self, stages: StepFn | Sequence[StepFn], batch_size: int, mesh: Mesh | None = None
    ):
        self.mesh = mesh if mesh is not None else data_mesh()
        self.n_devices = self.mesh.devices.size
        self.batch_size = round_up(int(batch_size), self.n_devices)
        self._sharding = batch_sharding(self.mesh)
        chain = [stages] if callable(stages) else list(stages)
        self._stages = [jax.jit(s, out_shardings=self._sharding) for s in chain]
        #: id(leaf) -> (leaf, the leaf on the mesh), for the leaves of the last params placed
        self._placed: dict[int, tuple[Any, Any]] = {}
        self._sizes: set[int] = set()  # device batches already compiled
        #: wall time of the calls that traced and compiled the stages (one per device batch
        #: size); the rest of a run's time is the steady state
        self.compile_seconds = 0.0

    def device_batch(self, count: int | None) -> int:
        """The padded batch used for ``count`` examples (fewer examples: a smaller batch)."""
        if count is None:
            return self.batch_size
        return min(self.batch_size, round_up(count, self.n_devices))

    def replicate(self, params: Any) -> Any:
        """``params`` on every device of the mesh. Each leaf is placed once: a leaf (the same
        object) that was in the last params placed is reused, so a params tree rebuilt around
        the same model weights (e.g. ``(model, head, prototypes)``) copies only what is new."""
        leaves, tree = jax.tree.flatten(params)
        new = [x for x in leaves if self._placed.get(id(x), (None,))[0] is not x]
        placed = dict(zip(map(id, new), jax.device_put(new, replicated(self.mesh)), strict=True))
        out = []
        for x in leaves:
            hit = self._placed.get(id(x))
            out.append(hit[1] if hit is not None and hit[0] is x else placed[id(x)])
        self._placed = {id(x): (x, y) for x, y in zip(leaves, out, strict=True)}
        return jax.tree.unflatten(tree, out)

    def dispatch(
        self, params: Any, batch: HostBatch, size: int | None = None
    ) -> dict[str, jax.Array]:
        """Run the stages on one host batch (padded to ``size``, default the device batch) and
        return the results as sharded device arrays, padding rows included: nothing is copied
        back to the host (``params`` must already be placed, e.g. by `replicate`)."""
        size = self.batch_size if size is None else size
        carry = jax.device_put({k: pad_batch(v, size) for k, v in batch.items()}, self._sharding)
        first = size not in self._sizes
        start = time.perf_counter()
        results: dict[str, jax.Array] = {}
        for stage in self._stages:
            out = stage(params, carry)
            carry = out.pop(CARRY, None)
            results.update(out)
        if first:  # the call traced and compiled the stages (execution is asynchronous)
            self._sizes.add(size)
            self.compile_seconds += time.perf_counter() - start
        return results

    def run(
        self, params: Any, batches: Iterable[HostBatch], count: int | None = None
    ) -> Iterator[dict[str, np.ndarray]]:
        """Yield each host batch's results as NumPy arrays, padding rows removed.

        A host batch is a dict of arrays sharing their leading axis; one larger than the device
        batch is split. ``count`` (the number of examples, when known) picks a smaller device
        batch for small inputs.
        """
        params = self.replicate(params)
        size = self.device_batch(count)
        pending: tuple[dict[str, jax.Array], int] | None = None
        for batch in batches:
            n = batch_rows(batch)
            for start in range(0, n, size):
                chunk = {k: v[start : start + size] for k, v in batch.items()}
                out = self.dispatch(params, chunk, size)
                if pending is not None:
                    yield fetch(*pending)
                pending = (out, min(size, n - start))
        if pending is not None:
            yield fetch(*pending)


def batch_rows(batch: HostBatch) -> int:
    """The common leading size of a host batch's arrays (a ValueError if they differ)."""
    sizes = {np.shape(a)[0] for a in batch.values()}
    if len(sizes) != 1:
        raise ValueError(f"arrays of one batch have different lengths {sorted(sizes)}")
    return sizes.pop()


def fetch(out: dict[str, jax.Array], n_valid: int) -> dict[str, np.ndarray]:
    """Copy a step's results to the host, dropping the padding rows."""
    return {k: np.asarray(v)[:n_valid] for k, v in out.items()}


def collect(
    results: Iterable[dict[str, np.ndarray]],
    count: int | None = None,
    check: Check | None = None,
    progress: bool = False,
    desc: str = "explain",
) -> dict[str, np.ndarray]:
    """Concatenate per-batch result dicts along the leading axis.

    ``check(batch, offset)`` sees each batch first (``offset`` = its first example's index) and
    returns the batch to keep (it may raise, or replace values). With ``count`` known, every
    array is written into a preallocated result and the batch dropped, so the results are never
    held twice at the peak; otherwise the batches are concatenated at the end.
    """
    bar = progress_bar(count, enabled=progress, desc=desc)
    out: dict[str, np.ndarray] = {}
    parts: dict[str, list[np.ndarray]] = {}
    seen = 0
    for batch in results:
        if check is not None:
            batch = check(batch, seen)
        n = batch_rows(batch) if batch else 0
        for key, value in batch.items():
            if count is None:
                parts.setdefault(key, []).append(value)
                continue
            if key not in out:
                out[key] = np.empty((count, *value.shape[1:]), value.dtype)
            out[key][seen : seen + n] = value
        seen += n
        bar.update(n)
    bar.close()
    if count is None:
        out = {k: np.concatenate(v, axis=0) for k, v in parts.items()}
    elif seen != count:
        out = {k: v[:seen] for k, v in out.items()}
    return out
