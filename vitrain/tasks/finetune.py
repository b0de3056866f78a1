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

from torch import nn

from vitrain.errors import UserError
from vitrain.tasks.base import Task
from vitrain.tasks.language import CarriesTokenizer


class FinetuneTask(CarriesTokenizer, Task):
    """Base class of the fine-tuning tasks; a subclass sets ``data_kind``, ``packing`` (``masked``:
    BERT, ``causal``: GPT; ``data.packing`` follows it), ``monitor`` and ``monitor_mode``."""

    packing = ""
    data_kind = "finetune"
    monitor = "val/loss"
    monitor_mode = "min"

    def setup(self, stage: str) -> None:
        """Check the data against the network and keep the tokenizer (for checkpoints)."""
        data = self.trainer.datamodule if self.trainer else None
        if data is None or not hasattr(data, "tokenizer_source"):
            return
        check_finetune_data(data, self.net, self.packing)
        self.keep_tokenizer(data.tokenizer, stage)


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
