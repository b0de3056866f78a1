"""What every fine-tuning task of a pretrained language model shares (classification, tagging,
instruction tuning): the checks of the data against the network and the tokenizer in checkpoints.

:class:`FinetuneTask` takes batches of ``vitrain.data.finetune`` (see its batch contract). At
``setup`` it checks that the data's packing is the task's, that the tokenizer has exactly as many
tokens as the network's token embedding has rows, that ``data.max_length`` fits the network's
positions and that the label count is the network's; then it keeps the tokenizer, which every
checkpoint carries (``checkpoint["vitrain_tokenizer"]``, as the pretraining tasks do), so a
fine-tuned checkpoint predicts, generates or starts another fine-tuning run on its own.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from vitrain.data.finetune import TOKENIZER_KEY
from vitrain.data.tokenizer import check_checkpoint_tokenizer
from vitrain.errors import UserError
from vitrain.tasks.base import OptimizerFactory, SchedulerFactory, Task


class FinetuneTask(Task):
    """Base class of the fine-tuning tasks; a subclass sets ``data_kind``, ``packing`` (``masked``:
    BERT, ``causal``: GPT; ``data.packing`` follows it), ``monitor`` and ``monitor_mode``."""

    packing = ""
    data_kind = "finetune"
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
        self.tokenizer_json: str | None = None

    def setup(self, stage: str) -> None:
        """Check the data against the network and keep the tokenizer (for checkpoints)."""
        data = self.trainer.datamodule if self.trainer else None
        if data is None or not hasattr(data, "tokenizer_source"):
            return
        check_finetune_data(data, self.net, self.packing)
        self.tokenizer_json = data.tokenizer.to_str()
        if self.trainer.is_global_zero and stage == "fit":
            out = Path(self.trainer.default_root_dir) / "tokenizer.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(self.tokenizer_json)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.tokenizer_json is not None:
            checkpoint[TOKENIZER_KEY] = self.tokenizer_json

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        if (
            self._trainer is not None
        ):  # a fit / test from the checkpoint: the data's tokenizer must be its own
            check_checkpoint_tokenizer(
                checkpoint.get(TOKENIZER_KEY), self.tokenizer_json, self.trainer.default_root_dir
            )
        self.tokenizer_json = checkpoint.get(TOKENIZER_KEY, self.tokenizer_json)


def check_finetune_data(data, net: nn.Module, packing: str) -> None:
    """Fail clearly when the data's packing, tokenizer, lengths or labels do not fit ``net``."""
    if data.packing != packing:
        raise UserError(
            f"data.packing={data.packing} but the model needs packing={packing}: leave data.packing at its "
            "default (it follows the model)."
        )
    vocab, rows = data.vocab_size, net.vocab_size
    if vocab != rows:
        raise UserError(
            f"the tokenizer has {vocab} tokens but the network's token embedding has {rows} rows "
            f"(model.net.vocab_size={rows}): set model.net.vocab_size=null (the tokenizer's size), or use the "
            "tokenizer the network was trained with (data.tokenizer)."
        )
    if data.max_length > net.n_positions:
        raise UserError(
            f"data.max_length={data.max_length} is longer than the network's model.net.n_positions="
            f"{net.n_positions}: lower data.max_length."
        )
    labels = getattr(net, "num_labels", None)
    if labels is not None and labels != data.found_num_labels():
        raise UserError(
            f"model.net.num_labels={labels} but the data has {data.found_num_labels()} labels: set "
            "model.net.num_labels=${data.num_labels} (the default) or data.num_labels to match."
        )
