"""Box helpers torchvision does not have; everything else comes from ``torchvision.ops``
(``box_convert``, ``box_iou``, ``generalized_box_iou``).

Formats (torchvision's names): ``cxcywh`` is (centre x, centre y, width, height); ``xyxy`` is
(left, top, right, bottom); ``xywh`` is COCO's (left, top, width, height).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import box_convert
from torchvision.ops import generalized_box_iou as _generalized_box_iou


def generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise generalised IoU (Rezatofighi et al. 2019) of ``(N, 4)`` and ``(M, 4)`` xyxy boxes:
    ``(N, M)`` in [-1, 1] (``torchvision.ops.generalized_box_iou``).

    Unlike torchvision's, it refuses inverted or NaN boxes (``x1 < x0``, ``y1 < y0``): DETR's
    reference asserts the same, which catches NaN predictions (fp16 overflow, detr #101) before
    they turn into a silently wrong matching.
    """
    if not ((boxes1[:, 2:] >= boxes1[:, :2]).all() and (boxes2[:, 2:] >= boxes2[:, :2]).all()):
        raise ValueError("generalized_box_iou: boxes must be xyxy with x1 >= x0 and y1 >= y0 (NaN boxes?)")
    return _generalized_box_iou(boxes1, boxes2)


def to_original_xyxy(boxes: Tensor, orig_size: Tensor) -> Tensor:
    """Normalised cxcywh ``(N, 4)`` -> absolute xyxy ``(N, 4)`` float32 in an image of
    ``orig_size`` = (height, width) pixels (the format COCO evaluation wants)."""
    height, width = orig_size.float().unbind(-1)
    return box_convert(boxes.float(), "cxcywh", "xyxy") * torch.stack([width, height, width, height])
