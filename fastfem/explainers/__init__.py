"""User-facing explainers, one module per method (Xplique's API)."""

from fastfem.explainers.fam import FAM, EpisodeResult, RetrievalResult
from fastfem.explainers.fem import FEM
from fastfem.explainers.mlfem import MLFEM

__all__ = ["FAM", "FEM", "MLFEM", "EpisodeResult", "RetrievalResult"]
