"""Instruction tuning (supervised fine-tuning) of a GPT on prompt + response records.

As tatsu-lab/stanford_alpaca ``train.py``: the model reads the prompt (the record formatted by a
prompt template) followed by the response and an end-of-text token, and the next-token loss
counts the response tokens only (the end-of-text token included, so the model learns to stop);
the prompt's positions carry the label -100 (``data=sft`` builds the labels). The loss is the
mean over the response tokens of the batch; ``val/loss`` is the exact mean over every response
token of the split and ``val/ppl`` its exponential (response perplexity).

The checkpoint carries the tokenizer, the prompt template (``checkpoint["vitrain_prompt"]``) and
the GPT's configuration as built (``checkpoint["vitrain_gpt_config"]``), so
``python -m vitrain.generate <ckpt> --prompt "..."`` formats an instruction the way the model was
trained and prints the response.
"""

from __future__ import annotations

from dataclasses import asdict

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric

from vitrain.data.finetune import IGNORE_INDEX
from vitrain.tasks.base import OptimizerFactory, SchedulerFactory
from vitrain.tasks.finetune import FinetuneTask

PROMPT_KEY = "vitrain_prompt"
# the GPT's configuration as built (its architecture may come from init_from / hf_weights)
GPT_CONFIG_KEY = "vitrain_gpt_config"


def response_losses(logits: Tensor, labels: Tensor) -> Tensor:
    """Next-token cross-entropy of the response tokens ``(N,)`` (float32): position ``t``'s logits
    ``(B, T, V)`` predict ``labels[:, t + 1]`` ``(B, T)``; labels -100 (prompt, padding) are left out."""
    targets = labels[:, 1:].flatten()
    keep = targets != IGNORE_INDEX
    return F.cross_entropy(logits[:, :-1].flatten(0, 1)[keep].float(), targets[keep], reduction="none")


class InstructionTuningTask(FinetuneTask):
    """Fine-tune a GPT (``(B, T)`` ids -> ``(B, T, V)`` logits) on the responses of instruction records.

    Metrics: ``train/loss`` (mean response-token cross-entropy, nats), ``val/loss`` (monitored),
    ``val/ppl``; ``test/*`` the same on the test split.

    Args:
        net: the GPT (``vitrain.models.create_gpt_sft``).
        optimizer, scheduler, layer_decay: see :class:`vitrain.tasks.base.Task`.
    """

    data_kind = "instructions"
    packing = "causal"
    monitor = "val/loss"
    monitor_mode = "min"

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        layer_decay: float | None = None,
    ) -> None:
        super().__init__(net, optimizer, scheduler, layer_decay)
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"])
        self.val_loss = MeanMetric()  # per-token losses, synced across ranks: an exact mean
        self.prompt: dict | None = None

    def setup(self, stage: str) -> None:
        super().setup(stage)
        data = self.trainer.datamodule if self.trainer else None
        if data is not None and hasattr(data, "prompt_template"):
            self.prompt = data.prompt_template.to_dict()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint[GPT_CONFIG_KEY] = asdict(self.net.config)
        if self.prompt is not None:
            checkpoint[PROMPT_KEY] = self.prompt

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        self.prompt = checkpoint.get(PROMPT_KEY, self.prompt)

    def forward(self, input_ids: Tensor) -> Tensor:
        return self.net(input_ids)

    def tokens_in_batch(self, batch: dict[str, Tensor]) -> int:
        return int(batch["attention_mask"].sum())

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        losses = response_losses(self(batch["input_ids"]), batch["labels"])
        loss = losses.sum() / max(losses.numel(), 1)  # no response token in the batch: 0, not NaN
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        losses = response_losses(self(batch["input_ids"]), batch["labels"])
        if losses.numel():
            self.val_loss.update(losses)
        self.log("val/loss", self.val_loss, prog_bar=True)

    def on_validation_epoch_end(self) -> None:
        if self.val_loss.update_called:
            self.log("val/ppl", torch.exp(self.val_loss.compute().clamp(max=30.0)))
