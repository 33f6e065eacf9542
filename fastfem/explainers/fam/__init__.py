"""FAM (Feature Activation Maps) for similarity models: the explainer, its steps, its host
planning and result types, and its audit hooks."""

from fastfem.explainers.fam.explainer import FAM
from fastfem.explainers.fam.method import METHOD
from fastfem.explainers.fam.results import EpisodeResult, RetrievalResult

__all__ = ["FAM", "METHOD", "EpisodeResult", "RetrievalResult"]
