"""fastfem: FEM and FAM activation-based CNN explanations under ``jax.jit``, vmapped and sharded.

Explainers (Xplique's API): `FEM`, `MLFEM` (multi-layer FEM), `FAM` (similarity models: pairs,
retrieval, few-shot episodes). Kernels for JAX users: `fem_map` (per-sample formula in
`fastfem.kernels.fem`), `fam_map` and `fam_contributions` (`fastfem.kernels.fam`). Model
front-ends: `fastfem.converters`.

Importing fastfem changes nothing in the process: Keras keeps the backend the process chose
(``KERAS_BACKEND``, read when Keras is first imported). Keras models run natively under the JAX
backend and through tf2jax under TensorFlow.
"""

from fastfem import converters, metrics
from fastfem.engine.step import Step
from fastfem.evaluation import evaluate
from fastfem.explainers import FAM, FEM, MLFEM
from fastfem.integrations.tf_savedmodel import export_savedmodel
from fastfem.kernels.fam import fam_contributions, fam_map
from fastfem.kernels.fem import VARIANTS, fem_map, fem_sample

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
