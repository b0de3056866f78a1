"""Image classification: cross-entropy (or soft-target CE under mixup/cutmix), top-1/top-5."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from torch import nn
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from vitrain.errors import UserError
from vitrain.models.vit import prepare_linear_probe
from vitrain.tasks.base import OptimizerFactory, SchedulerFactory, Task

# the checkpoint entry holding the running training-accuracy counts of the epoch in progress
TRAIN_ACC_KEY = "vitrain_train_acc1"


class ClassificationTask(Task):
    """Train ``net`` (images ``(B, C, H, W)`` -> logits ``(B, num_classes)``) on labels ``(B,)``.

    Args:
        net: the network; its ``num_classes`` attribute gives the class count.
        optimizer: partial optimizer, called with the parameter groups.
        scheduler: partial schedule (``vitrain.tasks.optim.warmup_cosine``), called with the
            optimizer, the total optimizer steps and the steps per epoch; stepped every step.
        label_smoothing: applied once: inside timm's Mixup when mixup/cutmix is on, else in
            the training cross-entropy. Validation uses plain cross-entropy.
        mixup_alpha, cutmix_alpha: timm Mixup/CutMix strengths (0 disables each).
        layer_decay: layer-wise learning-rate decay (MAE / BEiT fine-tuning): block ``i`` trains
            at ``lr * layer_decay ** (depth - i)``, the embeddings at ``layer_decay ** (depth + 1)``,
            the head at ``lr`` (see ``vitrain.tasks.optim.param_groups``). None: one rate.
        linear_probe: train only a new head on frozen features: the head becomes
            ``BatchNorm1d(affine=False) -> Linear`` (MAE's linear probing), everything else is
            frozen (``model.freeze=['*','!head']``) and kept in eval mode (no dropout / drop
            path in the features).
    """

    data_kind = "image_classification"
    monitor = "val/acc1"
    monitor_mode = "max"

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        label_smoothing: float = 0.0,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        layer_decay: float | None = None,
        linear_probe: bool = False,
    ) -> None:
        super().__init__(net, optimizer, scheduler, layer_decay)
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"])
        if linear_probe:
            prepare_linear_probe(net)
            self.freeze(["*", "!head"], frozen_eval=True, what="model.linear_probe=true")
        num_classes = net.num_classes
        self.mixup = None
        if mixup_alpha > 0 or cutmix_alpha > 0:
            self.mixup = Mixup(
                mixup_alpha=mixup_alpha,
                cutmix_alpha=cutmix_alpha,
                label_smoothing=label_smoothing,
                num_classes=num_classes,
            )
            self.train_criterion: nn.Module = SoftTargetCrossEntropy()
        else:
            self.train_criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        accuracy = partial(MulticlassAccuracy, num_classes=num_classes, average="micro")
        # training accuracy skips torchmetrics' argument checks: their torch.unique(labels) is a
        # device-host sync every step (the cross-entropy already rejects bad labels)
        self.train_acc1 = accuracy(top_k=1, validate_args=False)
        self.val_acc1 = accuracy(top_k=1)
        self.val_acc5 = accuracy(top_k=min(5, num_classes))
        self.val_loss = MeanMetric()  # sum and count synced across ranks: an exact global mean
        self._resumed_train_acc: dict | None = None  # from a checkpoint, until its epoch starts

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> logits ``(B, num_classes)``."""
        return self.net(images)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        images, labels = batch
        targets: torch.Tensor = labels
        if self.mixup is not None:
            if images.shape[0] % 2:
                raise UserError(
                    f"mixup/cutmix needs an even batch size, got {images.shape[0]}: set "
                    "data.batch_size to an even number."
                )
            images, targets = self.mixup(images, labels)
        logits = self(images)
        loss = self.train_criterion(logits, targets)
        # accuracy on the original labels; update() only: the epoch value is logged at the end
        # of the epoch (on_train_epoch_end), so no per-batch value is computed
        self.train_acc1.update(logits, labels)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def on_train_epoch_end(self) -> None:
        """Log the epoch's ``train/acc1`` (summed over ranks by torchmetrics) and start the next
        epoch's counts. Logged once here rather than as a Metric from every ``training_step``:
        Lightning's ``self.log`` costs 0.5-1.5 ms of CPU time per call and step."""
        if self.train_acc1.update_called:
            self.log("train/acc1", self.train_acc1.compute())
        self.train_acc1.reset()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Keep the epoch's running training-accuracy counts (summed over ranks): a run resumed in
        the middle of this epoch then reports ``train/acc1`` over the whole epoch, not only over
        the batches after the resume. Every rank takes part (checkpoints are saved by all)."""
        strategy = self.trainer.strategy
        state = {
            name: strategy.reduce(getattr(self.train_acc1, name).detach().clone(), reduce_op="sum").cpu()
            for name in self.train_acc1._defaults
        }
        checkpoint[TRAIN_ACC_KEY] = {"epoch": self.current_epoch, "state": state}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._resumed_train_acc = checkpoint.get(TRAIN_ACC_KEY)

    def on_train_start(self) -> None:
        """After a resume: continue the saved counts when training goes on inside the epoch they
        belong to (Lightning does not call ``on_train_epoch_start`` for an epoch it resumes), on
        rank zero only since they are already the sum over ranks; a later epoch starts from zero."""
        saved, self._resumed_train_acc = self._resumed_train_acc, None
        if saved is None or saved["epoch"] != self.current_epoch or self.global_rank != 0:
            return
        for name, value in saved["state"].items():
            setattr(self.train_acc1, name, value.to(self.device))
        self.train_acc1._update_count += 1  # counts were added (torchmetrics warns on compute otherwise)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        images, labels = batch
        logits = self(images)
        self.val_acc1(logits, labels)
        self.val_acc5(logits, labels)
        self.val_loss.update(F.cross_entropy(logits, labels, reduction="none"))
        self.log("val/loss", self.val_loss)
        self.log("val/acc1", self.val_acc1, prog_bar=True)
        self.log(f"val/acc{self.val_acc5.top_k}", self.val_acc5)

    def predict_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """Class probabilities ``(B, num_classes)`` of a batch ``(images, indices)``."""
        images, _ = batch
        return self(images).float().softmax(dim=-1)

    def predict_rows(
        self, outputs: Sequence[Any], files: Sequence[Path], class_names: Sequence[str]
    ) -> tuple[list[str], list[list[str]]]:
        """Each file's top-5 classes and probabilities, from the ``predict_step`` probabilities
        ``(B, num_classes)`` of every batch; classes are named by ``class_names`` (else by index)."""
        probs = torch.cat(list(outputs)).float()
        k = min(5, probs.shape[1])
        top_p, top_i = probs.topk(k, dim=1)
        names = list(class_names) or [str(i) for i in range(probs.shape[1])]
        header = ["file"] + [f"{field}_{r}" for r in range(1, k + 1) for field in ("class", "prob")]
        rows = []
        for path, ps, idx in zip(files, top_p.tolist(), top_i.tolist(), strict=True):
            row = [str(path)]
            for p, i in zip(ps, idx, strict=True):
                row += [names[i], f"{p:.6f}"]
            rows.append(row)
        return header, rows
