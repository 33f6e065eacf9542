"""``torchvision.transforms.functional`` names pytorch-grad-cam imports; each raises when called."""

from .._unavailable import unavailable

resize = unavailable("transforms.functional.resize")
