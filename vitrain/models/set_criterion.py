"""DETR's set loss: classification, L1 and GIoU losses on Hungarian-matched pairs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import box_convert

from vitrain.models.box_ops import generalized_box_iou
from vitrain.models.matcher import HungarianMatcher


def num_boxes_across_ranks(
    targets: list[dict[str, Tensor]], device: torch.device, sync: bool = True
) -> float:
    """Mean number of target boxes per process (at least 1): the loss normaliser of every rank.

    ``sync=False`` counts this process's boxes only (no collective call: validation ranks may
    run different numbers of batches)."""
    count = torch.tensor(float(sum(len(t["labels"]) for t in targets)), device=device)
    if sync and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(count)
        count = count / torch.distributed.get_world_size()
    return max(count.item(), 1.0)


class SetCriterion(nn.Module):
    """The DETR loss of one batch, summed over the final and every auxiliary decoder output.

    For each output the matcher pairs queries with targets; then

    * ``loss_ce``: cross-entropy of every query against its matched class or "no object"
      (the last class, weighted ``eos_coef`` to balance the many unmatched queries);
    * ``loss_bbox``: L1 distance of matched boxes (normalised cxcywh), summed / number of boxes;
    * ``loss_giou``: ``1 - GIoU`` of matched boxes, summed / number of boxes.

    The number of boxes is averaged across ranks, so every rank's gradient has the same scale.
    Everything runs in float32 with autocast off. ``loss = ce * weight_ce + bbox * weight_bbox +
    giou * weight_giou`` over all decoder outputs.

    Args:
        num_classes: object classes (the logits have ``num_classes + 1``).
        matcher: the :class:`HungarianMatcher`.
        eos_coef: relative weight of the no-object class in the cross-entropy (DETR: 0.1).
        weight_ce, weight_bbox, weight_giou: loss weights (DETR: 1, 5, 2).
    """

    def __init__(
        self,
        num_classes: int,
        matcher: HungarianMatcher,
        eos_coef: float = 0.1,
        weight_ce: float = 1.0,
        weight_bbox: float = 5.0,
        weight_giou: float = 2.0,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.matcher = matcher
        self.weights = {"loss_ce": weight_ce, "loss_bbox": weight_bbox, "loss_giou": weight_giou}
        class_weight = torch.ones(num_classes + 1)
        class_weight[-1] = eos_coef
        self.register_buffer("class_weight", class_weight, persistent=False)

    def forward(
        self, outputs: dict, targets: list[dict[str, Tensor]], sync: bool = True
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """``outputs``: the network's dict (``pred_logits (B, Q, C + 1)``, ``pred_boxes (B, Q, 4)``,
        optional ``aux_outputs``); ``targets``: ``B`` dicts with ``labels (T_b,)`` and ``boxes
        (T_b, 4)`` normalised cxcywh.

        Returns ``(loss, components)``: the weighted total (a scalar) and the unweighted losses
        of the final decoder layer (``loss_ce``, ``loss_bbox``, ``loss_giou``), detached.
        ``sync=False`` normalises by this process's boxes alone (validation).
        """
        device = outputs["pred_logits"].device
        num_boxes = num_boxes_across_ranks(targets, device, sync)
        with torch.autocast(device_type=device.type, enabled=False):
            final = self.layer_losses(outputs, targets, num_boxes)
            total = sum(self.weights[k] * v for k, v in final.items())
            for aux in outputs.get("aux_outputs", []):
                losses = self.layer_losses(aux, targets, num_boxes)
                total = total + sum(self.weights[k] * v for k, v in losses.items())
        return total, {k: v.detach() for k, v in final.items()}

    def layer_losses(
        self, outputs: dict, targets: list[dict[str, Tensor]], num_boxes: float
    ) -> dict[str, Tensor]:
        """The three unweighted losses of one decoder output."""
        logits, boxes = outputs["pred_logits"].float(), outputs["pred_boxes"].float()
        indices = self.matcher(logits, boxes, targets)
        batch_idx = torch.cat([torch.full_like(q, b) for b, (q, _) in enumerate(indices)]).to(logits.device)
        query_idx = torch.cat([q for q, _ in indices]).to(logits.device)
        classes = torch.full(logits.shape[:2], self.num_classes, dtype=torch.int64, device=logits.device)
        classes[batch_idx, query_idx] = torch.cat(
            [t["labels"][j] for t, (_, j) in zip(targets, indices, strict=True)]
        )
        loss_ce = F.cross_entropy(logits.transpose(1, 2), classes, self.class_weight)

        matched = boxes[batch_idx, query_idx]  # (N, 4)
        tgt_boxes = torch.cat([t["boxes"][j] for t, (_, j) in zip(targets, indices, strict=True)]).float()
        loss_bbox = F.l1_loss(matched, tgt_boxes, reduction="sum") / num_boxes
        giou = generalized_box_iou(
            box_convert(matched, "cxcywh", "xyxy"), box_convert(tgt_boxes, "cxcywh", "xyxy")
        )
        loss_giou = (1 - torch.diag(giou)).sum() / num_boxes
        return {"loss_ce": loss_ce, "loss_bbox": loss_bbox, "loss_giou": loss_giou}
