"""Text samples of a GPT during training: printed, written to a file and logged."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

from vitrain.errors import UserError, require_positive

log = logging.getLogger(__name__)


class TextSamples(L.Callback):
    """After every ``every_n_epochs`` validation, continue ``prompt`` with the model being trained.

    Sampling uses a fixed ``seed`` (so samples of different epochs differ only by the weights),
    ``temperature`` and ``top_k``. The text is logged (INFO), appended to ``<dirpath>/samples.txt``
    (``dirpath`` defaults to the run directory) and sent to W&B (a table) or TensorBoard (text).
    Rank zero only; needs a causal LM task (``model=gpt*``) on ``data=text``.

    Args:
        prompt: text the samples continue (empty: start from the end-of-text token).
        max_new_tokens: most tokens sampled after the prompt (fewer when end-of-text comes first).
        temperature: softmax temperature of sampling (0: greedy).
        top_k: sample among the k most likely tokens only (None: all; 1: greedy).
        every_n_epochs: sample after every n-th validation epoch (sanity checks skipped).
        seed: seed of the sampling generator, the same every epoch.
        dirpath: folder of ``samples.txt`` (None: the run directory).
    """

    def __init__(
        self,
        prompt: str = "",
        max_new_tokens: int = 64,
        temperature: float = 0.8,
        top_k: int | None = 40,
        every_n_epochs: int = 1,
        seed: int = 0,
        dirpath: str | None = None,
    ) -> None:
        require_positive("callbacks.samples", max_new_tokens=max_new_tokens, every_n_epochs=every_n_epochs)
        self.prompt, self.max_new_tokens = prompt, max_new_tokens
        self.temperature, self.top_k, self.seed = temperature, top_k, seed
        self.every_n_epochs = every_n_epochs
        self.dirpath = Path(dirpath) if dirpath else None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if getattr(pl_module, "packing", None) != "causal":
            raise UserError(
                f"callbacks.samples needs a GPT model (model=gpt*), not {type(pl_module).__name__}: "
                "use callbacks=default with this model."
            )
        if self.dirpath is None:
            self.dirpath = Path(trainer.default_root_dir)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        epoch = trainer.current_epoch
        tokenizer = getattr(trainer.datamodule, "tokenizer", None)
        if (epoch + 1) % self.every_n_epochs or tokenizer is None:
            return
        from vitrain.inference.text import generate_text

        net = pl_module.net
        text = generate_text(
            net, tokenizer, self.prompt, self.max_new_tokens, self.temperature, self.top_k, self.seed
        )
        log.info("Sample after epoch %d (step %d):\n%s", epoch, trainer.global_step, text)
        self.dirpath.mkdir(parents=True, exist_ok=True)
        with open(self.dirpath / "samples.txt", "a", encoding="utf-8") as f:
            f.write(f"=== epoch {epoch} step {trainer.global_step}\n{text}\n\n")
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_text(
                    "samples", columns=["epoch", "step", "text"], data=[[epoch, trainer.global_step, text]]
                )
            elif isinstance(logger, TensorBoardLogger):
                logger.experiment.add_text("samples", text, global_step=trainer.global_step)
