"""A stand-in for ``torchvision``, only for importing pytorch-grad-cam in the tests.

pytorch-grad-cam imports torchvision at module level (``torchvision.transforms``' ``Compose``,
``Normalize``, ``ToTensor``; ``transforms.functional.resize``; ``torchvision.ops.box_iou``), for
code paths its ``FEM`` never takes. PyPI's torchvision wheels do not load beside the CPU build of
torch the tests install, so the tests put this package on ``sys.path`` instead (only when no
torchvision is installed). Every name here raises `TorchvisionStubError` when called, so a test
that reached torchvision code would fail loudly instead of running something else.
"""

from . import ops, transforms
from ._unavailable import TorchvisionStubError

__version__ = "0.0.0+stub"
__all__ = ["TorchvisionStubError", "ops", "transforms"]
