"""Device mesh and shardings: the batch axis is split over every local device, params replicated.

One 1-D `Mesh` with axis ``'data'``; inputs and per-sample outputs use
``NamedSharding(mesh, P('data'))``; parameters ``NamedSharding(mesh, P())``. On a CPU-only
machine, several devices are simulated with ``XLA_FLAGS=--xla_force_host_platform_device_count=N``
set before JAX initialises.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"


def data_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh over ``devices`` (default: all local devices) with the axis ``'data'``."""
    devs = list(devices) if devices is not None else jax.local_devices()
    if not devs:
        raise ValueError("no devices to build a mesh on")
    return Mesh(np.asarray(devs), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over ``'data'``; other axes whole."""
    return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array (model parameters, resize matrices)."""
    return NamedSharding(mesh, P())


def round_up(n: int, multiple: int) -> int:
    """Smallest multiple of ``multiple`` that is >= ``n`` (and >= ``multiple``)."""
    return max(multiple, -(-n // multiple) * multiple)


def pad_batch(x: np.ndarray, size: int) -> np.ndarray:
    """Pad the leading axis of ``x`` with zeros up to ``size`` (the last batch; never retraced)."""
    n = x.shape[0]
    if n == size:
        return x
    if n > size:
        raise ValueError(f"batch of {n} is larger than the device batch {size}")
    pad = np.zeros((size - n, *x.shape[1:]), dtype=x.dtype)
    return np.concatenate([x, pad], axis=0)
