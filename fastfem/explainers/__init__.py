"""User-facing explainers, one module per method (Xplique's API), listed in
`fastfem.explainers.registry`."""

from fastfem.explainers.fam import FAM, EpisodeResult, RetrievalResult
from fastfem.explainers.fem import FEM
from fastfem.explainers.mean_activation import MeanActivation
from fastfem.explainers.mlfem import MLFEM

__all__ = ["FAM", "FEM", "MLFEM", "EpisodeResult", "MeanActivation", "RetrievalResult"]
