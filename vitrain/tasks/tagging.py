"""Token classification (named-entity tagging): BERT section 5.3, transformers' ``run_ner.py``.

The network gives a label per sub-word; the data labels the first sub-word of each word and
gives the others -100 (ignored), so the loss, the metrics and the predictions are per word.
Entities are scored as ``conlleval`` (the CoNLL-2003 scorer) scores them: an entity counts when
its type and its first and last word are both right; precision, recall and F1 are micro-averaged
over the split (``seqeval``'s default mode, which follows conlleval's chunk rules, for IOB1 and
IOB2 tags alike). Token accuracy (of the labelled words) is logged too; the entity F1 is the
monitored metric.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric, Metric

from vitrain.data.finetune import IGNORE_INDEX
from vitrain.tasks.base import OptimizerFactory, SchedulerFactory
from vitrain.tasks.finetune import FinetuneTask

OUTSIDE = "O"


def chunks(tags: Sequence[str]) -> set[tuple[str, int, int]]:
    """The entities ``(type, first, last)`` of one sentence's tags, by conlleval's rules
    (``seqeval.metrics.sequence_labeling.get_entities``)."""
    from seqeval.metrics.sequence_labeling import get_entities

    return set(get_entities(list(tags)))


class EntityScores(Metric):
    """Entity-level counts over a split: gold entities, predicted entities and correct ones, per
    entity type (``types``); summed across processes. :meth:`compute` gives micro-averaged
    ``precision``, ``recall`` and ``f1`` (0 when undefined, as conlleval prints) and ``f1_<TYPE>``."""

    full_state_update = False

    def __init__(self, types: Sequence[str]) -> None:
        super().__init__()
        self.types = list(types)
        self.add_state("counts", torch.zeros(len(self.types), 3, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str]]) -> None:
        """One list of tags per sentence, gold and predicted, of equal lengths."""
        counts = torch.zeros_like(self.counts)
        for true_tags, pred_tags in zip(gold, predicted, strict=True):
            true, pred = chunks(true_tags), chunks(pred_tags)
            for column, found in enumerate((true, pred, true & pred)):
                for kind, _, _ in found:
                    counts[self.types.index(kind), column] += 1
        self.counts += counts

    def compute(self) -> dict[str, Tensor]:
        def scores(true: Tensor, pred: Tensor, hit: Tensor) -> tuple[Tensor, Tensor, Tensor]:
            precision = hit / pred if pred > 0 else torch.tensor(0.0)
            recall = hit / true if true > 0 else torch.tensor(0.0)
            total = precision + recall
            return precision, recall, 2 * precision * recall / total if total > 0 else torch.tensor(0.0)

        counts = self.counts.double()
        precision, recall, f1 = scores(*counts.sum(dim=0))
        out = {"precision": precision, "recall": recall, "f1": f1}
        for kind, row in zip(self.types, counts, strict=True):
            out[f"f1_{kind}"] = scores(*row)[2]
        return {k: v.float() for k, v in out.items()}


def entity_types(tag_names: Sequence[str]) -> list[str]:
    """The entity types of a tag set (``B-PER``, ``I-PER``, ... -> ``PER``), in order of appearance."""
    return list(dict.fromkeys(tag[2:] for tag in tag_names if tag != OUTSIDE))


def word_tags(label_ids: Tensor, predicted_ids: Tensor, names: Sequence[str]) -> tuple[list, list]:
    """Per sentence, the gold and predicted tag names of the labelled positions (``label_ids``
    ``(B, T)`` with -100 elsewhere; ``predicted_ids (B, T)``): one entry per word."""
    gold, predicted = [], []
    for labels, preds in zip(label_ids.tolist(), predicted_ids.tolist(), strict=True):
        words = [(label, pred) for label, pred in zip(labels, preds, strict=True) if label != IGNORE_INDEX]
        gold.append([names[label] for label, _ in words])
        predicted.append([names[pred] for _, pred in words])
    return gold, predicted


class TokenClassificationTask(FinetuneTask):
    """Fine-tune a token classifier (``BertTagger``: batch -> logits ``(B, T, num_labels)``).

    Loss: cross-entropy over the labelled sub-words (the first of each word). Metrics:
    ``train/loss``; ``val/loss``, ``val/acc`` (word accuracy), ``val/precision``, ``val/recall``,
    ``val/f1`` (entity level, conlleval's rules) and ``val/f1_<TYPE>`` per entity type; ``test/*``
    the same on the test split. ``mode=predict`` tags every word of the data's predict file
    (:meth:`predict_rows`; ``data=conll`` writes the CoNLL file of predictions).

    Args:
        net: the tagger.
        optimizer, scheduler, layer_decay: see :class:`vitrain.tasks.base.Task`.
    """

    data_kind = "token_classification"
    packing = "masked"
    monitor = "val/f1"
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
        self.val_loss = MeanMetric()
        self.val_acc = MeanMetric()
        self.tag_names: list[str] = []
        self.entities: EntityScores | None = None

    def setup(self, stage: str) -> None:
        super().setup(stage)
        data = self.trainer.datamodule if self.trainer else None
        if data is not None and getattr(data, "classes", None):
            self.set_tag_names(data.classes)

    def set_tag_names(self, names: Sequence[str]) -> None:
        """The tag of each label index (the data's ``classes``); builds the entity metric."""
        self.tag_names = list(names)
        self.entities = EntityScores(entity_types(self.tag_names)).to(self.device)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        return self.net(batch["input_ids"], batch.get("attention_mask"), batch.get("token_type_ids"))

    def tokens_in_batch(self, batch: dict[str, Tensor]) -> int:
        return int(batch["attention_mask"].sum())

    def losses(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Cross-entropy of each labelled position ``(N,)`` (float32)."""
        return F.cross_entropy(
            logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX, reduction="none"
        )[labels.flatten() != IGNORE_INDEX]

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        losses = self.losses(self(batch), batch["labels"])
        loss = losses.sum() / max(losses.numel(), 1)  # a batch without labelled words: 0, not NaN
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        logits, labels = self(batch), batch["labels"]
        losses = self.losses(logits, labels)
        predicted = logits.argmax(dim=-1)
        labelled = labels != IGNORE_INDEX
        if losses.numel():
            self.val_loss.update(losses)
            self.val_acc.update((predicted[labelled] == labels[labelled]).float())
        self.log("val/loss", self.val_loss, prog_bar=True)
        self.log("val/acc", self.val_acc)
        if self.entities is not None:
            self.entities.update(*word_tags(labels, predicted, self.tag_names))

    def on_validation_epoch_end(self) -> None:
        if self.entities is None:
            return
        scores = self.entities.compute()
        self.log("val/f1", scores.pop("f1"), prog_bar=True)
        for name, value in scores.items():
            self.log(f"val/{name}", value)
        self.entities.reset()

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict:
        """``{"index": (B,), "tags": [[tag of each word with a sub-word] per sentence]}``."""
        predicted = self(batch).argmax(dim=-1)
        return {
            "index": batch["index"].tolist(),
            "tags": word_tags(batch["labels"], predicted, self.tag_names)[1],
        }

    def predict_rows(
        self, outputs: Sequence[dict], files: Sequence[Path] | None, class_names: Sequence[str]
    ) -> tuple[list[str], list[list]]:
        """``(["index", "tags"], rows)``: each sentence's index in the predict file and its words'
        predicted tags (IOB2, space-separated; ``data=conll`` writes them back as a CoNLL file)."""
        rows = [
            [index, " ".join(tags)]
            for out in outputs
            for index, tags in zip(out["index"], out["tags"], strict=True)
        ]
        return ["index", "tags"], rows
