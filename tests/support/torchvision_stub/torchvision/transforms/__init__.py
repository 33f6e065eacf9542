"""``torchvision.transforms`` names pytorch-grad-cam imports; each raises when called."""

from .._unavailable import unavailable
from . import functional

Compose = unavailable("transforms.Compose")
Normalize = unavailable("transforms.Normalize")
ToTensor = unavailable("transforms.ToTensor")

__all__ = ["Compose", "Normalize", "ToTensor", "functional"]
