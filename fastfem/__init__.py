"""fastfem: FEM and FAM activation-based CNN explanations under ``jax.jit``, vmapped and sharded.

Explainers (Xplique's API): `FEM`. Kernels for JAX users: `fem_map` (per-sample formula in
`fastfem.kernels.fem`). Model front-ends: `fastfem.converters`.
"""

from . import converters  # first: makes JAX the Keras backend if Keras is not imported yet
from .explainers import FEM
from .kernels.fem import VARIANTS, fem_map, fem_sample

__version__ = "0.1.0"

__all__ = ["FEM", "VARIANTS", "converters", "fem_map", "fem_sample", "__version__"]
