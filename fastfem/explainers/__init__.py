"""User-facing explainers, one module per method (Xplique's API)."""

from .fem import FEM

__all__ = ["FEM"]
