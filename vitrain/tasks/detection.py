"""Object detection with DETR: Hungarian-matched set loss, COCO mAP on original-size boxes."""

from __future__ import annotations

import logging

import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric
from torchmetrics.detection import MeanAveragePrecision

from vitrain.errors import UserError
from vitrain.models.box_ops import to_original_xyxy
from vitrain.models.matcher import HungarianMatcher
from vitrain.models.set_criterion import SetCriterion
from vitrain.tasks.base import OptimizerFactory, SchedulerFactory, Task
from vitrain.tasks.optim import param_groups

Targets = list[dict[str, Tensor]]
# faster_coco_eval logs its whole summary table at INFO after every validation
logging.getLogger("faster_coco_eval").setLevel(logging.WARNING)
MAP_KEYS = {
    "map": "val/map",
    "map_50": "val/map50",
    "map_75": "val/map75",
    "map_small": "val/map_small",
    "map_medium": "val/map_medium",
    "map_large": "val/map_large",
}


class DetectionTask(Task):
    """Train a DETR ``net`` on batches ``(images (B, 3, H, W), mask (B, H, W), targets)``.

    Targets are dicts with normalised cxcywh ``boxes``, ``labels``, ``iscrowd`` and
    ``orig_size`` (see ``vitrain.data.detection``); crowd boxes are left out of the loss.

    Metrics: ``train/loss`` (the weighted total over all decoder layers) with the final
    layer's ``train/loss_ce``, ``train/loss_bbox`` and ``train/loss_giou``; ``val/loss``; and
    COCO box mAP (torchmetrics ``MeanAveragePrecision``, faster_coco_eval backend) as
    ``val/map`` (IoU 0.5:0.95, monitored for checkpoints), ``val/map50``, ``val/map75``,
    ``val/map_small``, ``val/map_medium`` and ``val/map_large`` (not logged, so n/a in tables, where a
    size has no ground-truth boxes; COCO reports -1 there).
    Predictions and ground truth are compared as absolute xyxy boxes in the coordinates of the
    original images; crowd boxes are passed as such (matches to them are ignored).

    Args:
        net: the DETR network (``vitrain.models.create_detr``).
        optimizer: partial optimizer, called with the parameter groups: the backbone at
            ``backbone_lr``, the rest at the optimizer's lr; every parameter decayed (see
            ``decay_1d``).
        scheduler: partial schedule, called with the optimizer, the total optimizer steps and
            the steps per epoch; stepped every step.
        backbone_lr: learning rate of the backbone (DETR: 1e-5, a tenth of the rest); null: the
            optimizer's lr.
        eos_coef: weight of the no-object class in the cross-entropy (DETR: 0.1).
        cost_class, cost_bbox, cost_giou: matching costs (DETR: 1, 5, 2).
        loss_ce, loss_bbox, loss_giou: loss weights (DETR: 1, 5, 2).
        decay_1d: weight-decay biases and norm weights too (DETR's reference decays every
            parameter); False: the usual rule (no decay on parameters with fewer than 2 dims).
    """

    data_kind = "detection"
    monitor = "val/map"
    monitor_mode = "max"

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        backbone_lr: float | None = 1e-5,
        eos_coef: float = 0.1,
        cost_class: float = 1.0,
        cost_bbox: float = 5.0,
        cost_giou: float = 2.0,
        loss_ce: float = 1.0,
        loss_bbox: float = 5.0,
        loss_giou: float = 2.0,
        decay_1d: bool = True,
    ) -> None:
        super().__init__(net, optimizer, scheduler)
        if not 0 < eos_coef <= 1:
            raise UserError(f"model.eos_coef={eos_coef}: must be in (0, 1] (DETR: 0.1).")
        if backbone_lr is not None and backbone_lr < 0:
            raise UserError(f"model.backbone_lr={backbone_lr}: must be >= 0, or null for the optimizer's lr.")
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"])
        self.backbone_lr = backbone_lr
        self.decay_1d = decay_1d
        matcher = HungarianMatcher(cost_class, cost_bbox, cost_giou)
        self.criterion = SetCriterion(net.num_classes, matcher, eos_coef, loss_ce, loss_bbox, loss_giou)
        self.val_loss = MeanMetric()
        self.val_map = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend="faster_coco_eval")

    def forward(self, images: Tensor, mask: Tensor | None = None) -> dict:
        """``images (B, 3, H, W)``, ``mask (B, H, W)`` -> the network's output dict."""
        return self.net(images, mask)

    def training_step(self, batch: tuple[Tensor, Tensor, Targets], batch_idx: int) -> Tensor:
        images, mask, targets = batch
        loss, parts = self.criterion(self(images, mask), without_crowd(targets))
        batch_size = images.shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=batch_size)
        self.log_written_steps(
            {f"train/{name}": value for name, value in parts.items()}, batch_size=batch_size
        )
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor, Targets], batch_idx: int) -> None:
        images, mask, targets = batch
        outputs = self(images, mask)
        # no collective call in validation: ranks may run different numbers of batches
        loss, _ = self.criterion(outputs, without_crowd(targets), sync=False)
        self.val_loss.update(loss, weight=images.shape[0])
        self.log("val/loss", self.val_loss, batch_size=images.shape[0])
        self.val_map.update(postprocess(outputs, targets), ground_truth(targets))

    def on_validation_epoch_end(self) -> None:
        results = self.val_map.compute()  # synced across ranks: each image counted once
        for key, name in MAP_KEYS.items():
            if results[key] < 0:  # COCO's -1: no ground-truth boxes of that size (n/a), not a score
                continue
            self.log(name, results[key].float(), prog_bar=key == "map_50", sync_dist=False)
        self.val_map.reset()

    @torch.no_grad()
    def detect(self, images: Tensor, mask: Tensor, targets: Targets) -> list[dict[str, Tensor]]:
        """Predictions of a batch in original image coordinates (see :func:`postprocess`)."""
        return postprocess(self(images, mask), targets)

    def param_groups(self) -> list[dict]:
        """``param_groups(net)`` split into the rest and the backbone (at ``backbone_lr``);
        frozen parameters are left out (see :func:`detection_param_groups`)."""
        return detection_param_groups(self.net, self.backbone_lr, self.decay_1d)


def detection_param_groups(net: nn.Module, backbone_lr: float | None, decay_1d: bool = False) -> list[dict]:
    """``[decay, no_decay, backbone, backbone_no_decay]``: :func:`param_groups` with the
    backbone's parameters in their own groups at ``backbone_lr`` (None: the optimizer's lr);
    empty groups are left out (with ``decay_1d`` both no-decay groups are empty)."""
    in_backbone = {id(p) for p in net.backbone.parameters()}
    groups = []
    for group, name in zip(param_groups(net, decay_1d=decay_1d), ("decay", "no_decay"), strict=True):
        rest = [p for p in group["params"] if id(p) not in in_backbone]
        backbone = [p for p in group["params"] if id(p) in in_backbone]
        extra = {k: v for k, v in group.items() if k != "params"}
        groups.append({"params": rest, "name": name, **extra})
        lr = {} if backbone_lr is None else {"lr": backbone_lr}
        groups.append({"params": backbone, "name": f"backbone_{name}", **extra, **lr})
    return [g for g in groups if g["params"]]


def without_crowd(targets: Targets) -> Targets:
    """The targets the loss sees: crowd boxes removed."""
    out = []
    for target in targets:
        keep = ~target["iscrowd"] if "iscrowd" in target else slice(None)
        out.append({"boxes": target["boxes"][keep], "labels": target["labels"][keep]})
    return out


@torch.no_grad()
def postprocess(outputs: dict, targets: Targets) -> list[dict[str, Tensor]]:
    """Every query as a detection: its most likely object class (no-object excluded), that
    class's probability as the score, and its box in the original image's coordinates.

    Returns ``B`` dicts with ``boxes (Q, 4)`` absolute xyxy, ``scores (Q,)`` and ``labels (Q,)``.
    """
    probs = outputs["pred_logits"].float().softmax(-1)[..., :-1]
    scores, labels = probs.max(-1)
    return [
        {"boxes": to_original_xyxy(boxes, target["orig_size"]), "scores": s, "labels": lab}
        for boxes, s, lab, target in zip(outputs["pred_boxes"], scores, labels, targets, strict=True)
    ]


def ground_truth(targets: Targets) -> list[dict[str, Tensor]]:
    """The targets as the COCO evaluation wants them: absolute xyxy boxes in original image
    coordinates, labels, crowd flags and, when the data gives it, each object's annotated
    ``area`` (COCO: the segment's area, which the official evaluator uses for the small /
    medium / large split; without it the box area is used)."""
    out = []
    for target in targets:
        iscrowd = target.get("iscrowd", torch.zeros_like(target["labels"], dtype=torch.bool))
        boxes = to_original_xyxy(target["boxes"], target["orig_size"])
        gt = {"boxes": boxes, "labels": target["labels"], "iscrowd": iscrowd.long()}
        if "area" in target:
            gt["area"] = target["area"].float()
        out.append(gt)
    return out
