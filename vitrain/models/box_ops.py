"""Box format conversions and (generalised) IoU for detection.

Formats: ``cxcywh`` is (centre x, centre y, width, height); ``xyxy`` is (left, top, right,
bottom). Every function works on ``(..., 4)`` tensors; pairwise functions take ``(N, 4)`` and
``(M, 4)`` boxes in ``xyxy`` and return ``(N, M)``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def box_cxcywh_to_xyxy(boxes: Tensor) -> Tensor:
    """``(..., 4)`` centre/size -> corners."""
    cx, cy, w, h = boxes.unbind(-1)
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)


def box_xyxy_to_cxcywh(boxes: Tensor) -> Tensor:
    """``(..., 4)`` corners -> centre/size."""
    x0, y0, x1, y1 = boxes.unbind(-1)
    return torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], dim=-1)


def box_xywh_to_xyxy(boxes: Tensor) -> Tensor:
    """``(..., 4)`` COCO (left, top, width, height) -> corners."""
    x, y, w, h = boxes.unbind(-1)
    return torch.stack([x, y, x + w, y + h], dim=-1)


def box_area(boxes: Tensor) -> Tensor:
    """``(..., 4)`` xyxy -> ``(...)`` areas."""
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def box_iou(boxes1: Tensor, boxes2: Tensor) -> tuple[Tensor, Tensor]:
    """Pairwise IoU and union of ``(N, 4)`` and ``(M, 4)`` xyxy boxes: two ``(N, M)`` tensors."""
    area1, area2 = box_area(boxes1), box_area(boxes2)
    top_left = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])  # (N, M, 2)
    bottom_right = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])
    inter = (bottom_right - top_left).clamp(min=0).prod(dim=-1)
    union = area1[:, None] + area2[None, :] - inter
    return inter / union, union


def generalized_box_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise generalised IoU (Rezatofighi et al. 2019) of xyxy boxes: ``(N, M)`` in [-1, 1].

    ``IoU - (hull - union) / hull`` with ``hull`` the smallest box enclosing both. Boxes must
    have ``x1 >= x0`` and ``y1 >= y0`` (degenerate boxes are allowed, not inverted ones).
    """
    if not ((boxes1[:, 2:] >= boxes1[:, :2]).all() and (boxes2[:, 2:] >= boxes2[:, :2]).all()):
        raise ValueError("generalized_box_iou: boxes must be xyxy with x1 >= x0 and y1 >= y0 (NaN boxes?)")
    iou, union = box_iou(boxes1, boxes2)
    top_left = torch.min(boxes1[:, None, :2], boxes2[None, :, :2])
    bottom_right = torch.max(boxes1[:, None, 2:], boxes2[None, :, 2:])
    hull = (bottom_right - top_left).clamp(min=0).prod(dim=-1)
    return iou - (hull - union) / hull


def to_original_xyxy(boxes: Tensor, orig_size: Tensor) -> Tensor:
    """Normalised cxcywh ``(N, 4)`` -> absolute xyxy ``(N, 4)`` float32 in an image of
    ``orig_size`` = (height, width) pixels (the format COCO evaluation wants)."""
    height, width = orig_size.float().unbind(-1)
    return box_cxcywh_to_xyxy(boxes.float()) * torch.stack([width, height, width, height])
