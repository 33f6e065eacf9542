"""User-facing explainers, one module per method (Xplique's API)."""

from .fam import FAM, EpisodeResult, RetrievalResult
from .fem import FEM
from .mlfem import MLFEM

__all__ = ["FAM", "FEM", "MLFEM", "EpisodeResult", "RetrievalResult"]
