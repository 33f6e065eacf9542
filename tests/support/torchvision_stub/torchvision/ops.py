"""``torchvision.ops`` names pytorch-grad-cam refers to; each raises when called."""

from ._unavailable import unavailable

box_iou = unavailable("ops.box_iou")
