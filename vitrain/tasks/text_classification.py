"""Sequence classification and regression on a pretrained BERT or GPT (GLUE and the like).

:class:`SequenceClassificationTask` (BERT) and :class:`GPTSequenceClassificationTask` (GPT, with
GPT-1's auxiliary language-model loss) train a classifier of ``vitrain.models.text_classifier``
on batches of ``vitrain.data.finetune`` (``input_ids``, ``attention_mask``, ``token_type_ids``,
``labels``): cross-entropy over the classes, or the mean squared error when the network has one
output (``num_labels: 1``, regression as STS-B).

Metrics (torchmetrics, synchronised across processes) are the data's (``data.metrics``: the
GLUE task's): ``acc`` (accuracy), ``f1`` (F1 of the positive class, MRPC / QQP), ``mcc``
(Matthews correlation, CoLA), ``pearson`` / ``spearman`` (STS-B). ``val/score``, the monitored
value, is their mean: GLUE's score of the task (the leaderboard averages a task's two metrics).
A test split with named parts (MNLI's matched and mismatched dev sets) also logs each metric per
part (``test/acc_matched``, ``test/acc_mismatched``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric, Metric
from torchmetrics.classification import BinaryF1Score, MulticlassAccuracy, MulticlassMatthewsCorrCoef
from torchmetrics.regression import PearsonCorrCoef, SpearmanCorrCoef

from vitrain.data.finetune import IGNORE_INDEX
from vitrain.errors import UserError
from vitrain.tasks.base import OptimizerFactory, SchedulerFactory
from vitrain.tasks.finetune import FinetuneTask

CLASSIFICATION_METRICS = ("acc", "f1", "mcc")
REGRESSION_METRICS = ("pearson", "spearman")


def make_metric(name: str, num_labels: int) -> Metric:
    """A torchmetrics metric by its short name (see the module docstring)."""
    if name == "acc":
        return MulticlassAccuracy(num_classes=max(num_labels, 2), average="micro")
    if name == "f1":
        if num_labels != 2:
            raise UserError(
                f"data.metrics: f1 is the F1 of the positive class of 2 labels, not {num_labels}."
            )
        return BinaryF1Score()
    if name == "mcc":
        return MulticlassMatthewsCorrCoef(num_classes=max(num_labels, 2))
    if name == "pearson":
        return PearsonCorrCoef()
    if name == "spearman":
        return SpearmanCorrCoef()
    raise UserError(f"data.metrics: unknown metric {name!r}; choose from acc, f1, mcc, pearson, spearman.")


class SequenceClassificationTask(FinetuneTask):
    """Fine-tune a BERT classifier (``vitrain.models.create_bert_classifier``).

    Metrics: ``train/loss``, ``val/loss``, ``val/<metric>`` for the data's metrics and
    ``val/score`` (their mean; monitored). ``mode=predict`` labels the data's predict split
    (GLUE: the test files) and writes its prediction files.

    Args:
        net: the classifier: ``(input_ids, attention_mask, token_type_ids)`` -> ``(B, num_labels)``.
        optimizer, scheduler: partial optimizer and schedule.
        layer_decay: layer-wise learning-rate decay (None: one rate).
    """

    data_kind = "text_classification"
    packing = "masked"
    monitor = "val/score"
    monitor_mode = "max"

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        layer_decay: float | None = None,
    ) -> None:
        super().__init__(net, optimizer, scheduler, layer_decay)
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"])
        self.regression = net.num_labels == 1
        self.val_loss = MeanMetric()
        self.metric_names: list[str] = list(REGRESSION_METRICS if self.regression else ("acc",))
        self.subsets: list[str] = []
        self.metrics = nn.ModuleDict(self._metrics(self.metric_names, []))
        self.class_names: list[str] = []

    def _metrics(self, names: Sequence[str], subsets: Sequence[str]) -> dict[str, Metric]:
        allowed = REGRESSION_METRICS if self.regression else CLASSIFICATION_METRICS
        wrong = [n for n in names if n not in allowed]
        if wrong:
            kind = "regression" if self.regression else "classification"
            raise UserError(
                f"data.metrics: {', '.join(wrong)} cannot score {kind}; use {', '.join(allowed)}."
            )
        keys = [*names, *(f"{n}_{s}" for s in subsets for n in names)]
        return {key: make_metric(key.split("_")[0], self.net.num_labels) for key in keys}

    def setup(self, stage: str) -> None:
        """The data's metrics (and test parts) replace the defaults."""
        super().setup(stage)
        data = self.trainer.datamodule if self.trainer else None
        if data is None or not hasattr(data, "tokenizer_source"):
            return
        names = list(getattr(data, "metrics", None) or self.metric_names)
        self.metric_names, self.subsets = names, data.subsets
        self.metrics = nn.ModuleDict(self._metrics(names, self.subsets))
        self.class_names = data.classes

    # -------------------------------------------------------------- steps
    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        """A batch -> logits ``(B, num_labels)``."""
        return self.net(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))

    def tokens_in_batch(self, batch: dict[str, Tensor]) -> int:
        return int(batch["input_ids"].numel())

    def loss(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Per-example losses ``(B,)``: cross-entropy, or squared error for regression."""
        if self.regression:
            return F.mse_loss(logits.float().squeeze(-1), labels.float(), reduction="none")
        return F.cross_entropy(logits.float(), labels, reduction="none", ignore_index=IGNORE_INDEX)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = self.loss(self(batch), batch["labels"]).mean()
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        logits = self(batch).float()
        labels = batch["labels"]
        self.val_loss.update(self.loss(logits, labels))
        self.log("val/loss", self.val_loss)
        outputs = logits.squeeze(-1) if self.regression else logits.argmax(dim=-1)
        for name in self.metric_names:
            self.metrics[name].update(outputs, labels)
        if "subset" in batch:
            for index, subset in enumerate(self.subsets):
                chosen = batch["subset"] == index
                if not chosen.any():
                    continue
                for name in self.metric_names:
                    self.metrics[f"{name}_{subset}"].update(outputs[chosen], labels[chosen])

    def on_validation_epoch_end(self) -> None:
        """Log every metric and ``val/score`` (the mean of the data's metrics), then reset them."""
        values = {}
        for key, metric in self.metrics.items():
            if metric.update_called:
                values[key] = metric.compute().float()
                self.log(f"val/{key}", values[key])
            metric.reset()
        if all(name in values for name in self.metric_names):
            self.log("val/score", torch.stack([values[n] for n in self.metric_names]).mean(), prog_bar=True)

    # -------------------------------------------------------------- predictions
    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        """``{"index", "subset", "output"}`` of a batch: the class index, or the regression value."""
        logits = self(batch).float()
        output = logits.squeeze(-1) if self.regression else logits.argmax(dim=-1)
        subset = batch.get("subset", torch.zeros_like(batch["index"]))
        return {"index": batch["index"].cpu(), "subset": subset.cpu(), "output": output.cpu()}

    def predict_rows(
        self, outputs: Sequence[Any], files: Sequence[Path] | None, class_names: Sequence[str]
    ) -> tuple[list[str], list[list]]:
        """``(["index", "subset", "prediction"], rows)``: each example's index in its source, the part
        of the predict split it belongs to, and the predicted label name (regression: the value)."""
        names = list(class_names) or self.class_names
        rows = []
        for batch in outputs:
            for index, subset, output in zip(
                *(batch[k].tolist() for k in ("index", "subset", "output")), strict=True
            ):
                if self.regression:
                    prediction = f"{output:.3f}"
                else:
                    prediction = names[output] if output < len(names) else str(output)
                rows.append([index, subset, prediction])
        return ["index", "subset", "prediction"], rows


class GPTSequenceClassificationTask(SequenceClassificationTask):
    """Fine-tune a GPT classifier (``vitrain.models.create_gpt_classifier``) with GPT-1's objective
    ``L3 = L2 + lm_weight * L1`` (Radford et al. 2018, section 3.2): the classification loss plus
    the language-model loss of the same inputs (next-token cross-entropy over their real tokens).

    Extra metrics: ``train/cls_loss`` (L2) and ``train/lm_loss`` (L1).

    Args:
        lm_weight: lambda (GPT-1: 0.5); 0 turns the auxiliary loss off.
    """

    packing = "causal"

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        layer_decay: float | None = None,
        lm_weight: float = 0.5,
    ) -> None:
        super().__init__(net, optimizer, scheduler, layer_decay)
        if lm_weight < 0:
            raise UserError(f"model.lm_weight={lm_weight}: must be >= 0 (GPT-1: 0.5; 0: off).")
        self.lm_weight = lm_weight

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        ids, mask = batch["input_ids"], batch["attention_mask"]
        hidden = self.net.hidden(ids)
        cls_loss = self.loss(self.net.classify(hidden, mask), batch["labels"]).mean()
        loss = cls_loss
        if self.lm_weight > 0:
            lm_loss = language_model_loss(self.net.lm_logits(hidden[:, :-1]), ids[:, 1:], mask[:, 1:])
            loss = cls_loss + self.lm_weight * lm_loss
            self.log("train/lm_loss", lm_loss)
        self.log("train/cls_loss", cls_loss)
        self.log("train/loss", loss, prog_bar=True)
        return loss


def language_model_loss(logits: Tensor, targets: Tensor, mask: Tensor) -> Tensor:
    """Mean next-token cross-entropy over the real targets: ``logits (B, T, V)``, ``targets (B, T)``,
    ``mask (B, T)`` (1: a real token)."""
    losses = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none")
    weights = mask.flatten().float()
    return (losses * weights).sum() / weights.sum().clamp(min=1)
