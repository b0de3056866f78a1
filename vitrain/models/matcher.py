"""Hungarian matching of DETR's predictions to the ground-truth boxes (Carion et al. 2020)."""

from __future__ import annotations

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn
from torchvision.ops import box_convert

from vitrain.errors import UserError
from vitrain.models.box_ops import generalized_box_iou

NON_FINITE_HINT = (
    "the predictions hold NaN or inf: training diverged. Lower optimizer.lr, keep gradient "
    "clipping (trainer.gradient_clip_val=0.1) and use trainer.precision=bf16-mixed or 32-true "
    "instead of 16-mixed."
)


class HungarianMatcher(nn.Module):
    """One-to-one assignment of predictions to targets with the lowest total cost.

    The cost of matching prediction ``q`` to target box ``t`` is
    ``cost_class * -p_q(class_t) + cost_bbox * |box_q - box_t|_1 + cost_giou * -GIoU(box_q, box_t)``
    (boxes normalised cxcywh; the L1 distance on that format, GIoU on xyxy), in float32 with
    autocast off. Each image is solved with ``scipy.optimize.linear_sum_assignment``.

    Args:
        cost_class, cost_bbox, cost_giou: weights of the three costs (DETR: 1, 5, 2).
    """

    def __init__(self, cost_class: float = 1.0, cost_bbox: float = 5.0, cost_giou: float = 2.0) -> None:
        super().__init__()
        if cost_class == 0 and cost_bbox == 0 and cost_giou == 0:
            raise UserError("model.matcher costs are all 0: give at least one a positive weight.")
        self.cost_class, self.cost_bbox, self.cost_giou = cost_class, cost_bbox, cost_giou

    @torch.no_grad()
    def forward(
        self, logits: Tensor, boxes: Tensor, targets: list[dict[str, Tensor]]
    ) -> list[tuple[Tensor, Tensor]]:
        """Match a batch.

        Args:
            logits: ``(B, Q, num_classes + 1)`` class logits (no-object last).
            boxes: ``(B, Q, 4)`` predicted boxes, normalised cxcywh.
            targets: ``B`` dicts with ``labels (T_b,)`` int64 and ``boxes (T_b, 4)`` normalised
                cxcywh (``T_b`` may be 0).

        Returns:
            ``B`` pairs ``(query_indices, target_indices)``, int64 tensors of length
            ``min(Q, T_b)`` each: query ``query_indices[i]`` predicts target ``target_indices[i]``.

        As the reference (facebookresearch/detr ``models/matcher.py``), the costs of every query
        against every target of the batch are computed at once and copied to the CPU once, then
        split per image (each entry is the value a per-image cost matrix would hold, so the
        assignments are the same): one device round trip per call instead of one per image.
        """
        sizes = [len(target["labels"]) for target in targets]
        batch, queries = logits.shape[:2]
        with torch.autocast(device_type=logits.device.type, enabled=False):
            probs = logits.float().flatten(0, 1).softmax(-1)  # (B * Q, C + 1)
            labels = torch.cat([target["labels"] for target in targets])
            tgt_boxes = torch.cat([target["boxes"] for target in targets]).float()
            cost = self.cost_matrix(probs, boxes.float().flatten(0, 1), labels, tgt_boxes)
            costs = cost.view(batch, queries, cost.shape[-1]).cpu().split(sizes, -1)  # blocks (B, Q, T_b)
        out = []
        for b, block in enumerate(costs):
            rows, cols = linear_sum_assignment(block[b].numpy())
            out.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
        return out

    def cost_matrix(self, probs: Tensor, boxes: Tensor, labels: Tensor, tgt_boxes: Tensor) -> Tensor:
        """``probs (N, C + 1)``, ``boxes (N, 4)``, ``labels (T,)``, ``tgt_boxes (T, 4)`` -> ``(N, T)``
        (``N``: one image's queries, or every query of a batch)."""
        if len(labels) == 0:
            return probs.new_zeros(probs.shape[0], 0)
        if not (torch.isfinite(probs).all() & torch.isfinite(boxes).all()):  # one device sync
            raise UserError(f"Hungarian matching: {NON_FINITE_HINT}")
        cost = -self.cost_class * probs[:, labels]
        cost = cost + self.cost_bbox * torch.cdist(boxes, tgt_boxes, p=1)
        giou = generalized_box_iou(
            box_convert(boxes, "cxcywh", "xyxy"), box_convert(tgt_boxes, "cxcywh", "xyxy")
        )
        cost = cost - self.cost_giou * giou
        if not torch.isfinite(cost).all():
            raise UserError(f"Hungarian matching: the cost matrix is not finite; {NON_FINITE_HINT}")
        return cost
