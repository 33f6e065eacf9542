"""fastfem: FEM and FAM activation-based CNN explanations under ``jax.jit``, vmapped and sharded.

Explainers (Xplique's API): `FEM`, `MLFEM` (multi-layer FEM), `FAM` (similarity models: pairs,
retrieval, few-shot episodes). Kernels for JAX users: `fem_map` (per-sample formula in
`fastfem.kernels.fem`), `fam_map` and `fam_contributions` (`fastfem.kernels.fam`). Model
front-ends: `fastfem.converters`.

Importing fastfem changes nothing in the process: Keras keeps the backend the process chose
(``KERAS_BACKEND``, read when Keras is first imported). Keras models run natively under the JAX
backend and through tf2jax under TensorFlow.
"""

from . import converters, metrics
from .evaluation import evaluate
from .explainers import FAM, FEM, MLFEM
from .kernels.fam import fam_contributions, fam_map
from .kernels.fem import VARIANTS, fem_map, fem_sample
from .step import Step
from .tf_savedmodel import export_savedmodel

__version__ = "0.1.0"

__all__ = [
    "FAM",
    "FEM",
    "MLFEM",
    "VARIANTS",
    "Step",
    "converters",
    "evaluate",
    "export_savedmodel",
    "fam_contributions",
    "fam_map",
    "fem_map",
    "fem_sample",
    "metrics",
    "__version__",
]
