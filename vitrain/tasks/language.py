"""Language-model pretraining: causal LM (GPT) and masked LM (BERT, optional NSP).

Both tasks take their batches from ``vitrain.data.TextDataModule`` (``data=text``), whose
``packing`` follows the task (``packing`` class attribute). At ``setup`` they check that the
tokenizer fits the network (vocabulary, sequence length) and keep the tokenizer, which every
checkpoint then carries (``checkpoint["vitrain_tokenizer"]``, a ``tokenizer.json`` string) so
``python -m vitrain.generate`` can decode without the training data.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric

from vitrain.data.tokenizer import TOKENIZER_KEY, check_checkpoint_tokenizer
from vitrain.errors import FRACTION, UserError, require_in
from vitrain.seeding import derive_seed
from vitrain.tasks.base import OptimizerFactory, SchedulerFactory, Task

log = logging.getLogger(__name__)

IGNORE_INDEX = -100


def mask_tokens(
    input_ids: Tensor,
    special: Tensor,
    vocab_size: int,
    mask_id: int,
    generator: torch.Generator | None = None,
    mask_prob: float = 0.15,
) -> tuple[Tensor, Tensor]:
    """BERT's masking: select ``mask_prob`` of the non-special tokens, replace 80% of the selected
    by ``mask_id``, 10% by a random token, leave 10% unchanged.

    Args:
        input_ids: ``(B, T)`` token ids.
        special: ``(B, T)`` bool, True where a token may never be selected ([CLS], [SEP], [PAD]).
        generator: random source (on ``input_ids``' device) that fixes the masks.

    Returns ``(inputs (B, T), labels (B, T))``: labels hold the original id at the selected
    positions and ``-100`` (ignored by the loss) elsewhere.
    """
    shape, device = input_ids.shape, input_ids.device
    selected = (torch.rand(shape, generator=generator, device=device) < mask_prob) & ~special
    action = torch.rand(shape, generator=generator, device=device)
    random_ids = torch.randint(vocab_size, shape, generator=generator, device=device)
    inputs = torch.where(selected & (action < 0.8), torch.full_like(input_ids, mask_id), input_ids)
    inputs = torch.where(selected & (action >= 0.8) & (action < 0.9), random_ids, inputs)
    return inputs, input_ids.masked_fill(~selected, IGNORE_INDEX)


class CarriesTokenizer:
    """For a LightningModule whose checkpoints carry the data's tokenizer (the language tasks):
    :meth:`keep_tokenizer` at ``setup``; every checkpoint then holds it under ``TOKENIZER_KEY`` (a
    ``tokenizer.json`` string) and a checkpoint loaded into a fit or test must hold the data's."""

    tokenizer_json: str | None = None

    def keep_tokenizer(self, tokenizer, stage: str) -> None:
        """Keep ``tokenizer`` for the checkpoints; when fitting, rank zero also writes it to
        ``<run dir>/tokenizer.json``."""
        self.tokenizer_json = tokenizer.to_str()
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


class _LanguageTask(CarriesTokenizer, Task):
    """What both language tasks share: the optimizer, the data checks, the tokenizer."""

    data_kind = "text"
    packing = ""
    monitor = "val/loss"
    monitor_mode = "min"

    def __init__(
        self, net: nn.Module, optimizer: OptimizerFactory, scheduler: SchedulerFactory | None
    ) -> None:
        super().__init__(net, optimizer, scheduler)
        self.special_ids: dict[str, int] = {}
        self.val_loss = MeanMetric()  # per-token losses, synced across ranks: an exact mean

    def setup(self, stage: str) -> None:
        """Check the data against the network and keep the tokenizer (for checkpoints)."""
        data = self.trainer.datamodule if self.trainer else None
        if data is None or not hasattr(data, "tokenizer"):
            return
        check_data_fits(data, self.net, self.packing)
        self.keep_tokenizer(data.tokenizer, stage)
        self.special_ids = data.special_ids

    def on_validation_epoch_end(self) -> None:
        if self.val_loss.update_called:
            self.log("val/ppl", torch.exp(self.val_loss.compute().clamp(max=30.0)))


def check_data_fits(data, net: nn.Module, packing: str) -> None:
    """Fail clearly when the data's packing, vocabulary or sequence length do not fit ``net``."""
    if getattr(data, "packing", packing) != packing:
        raise UserError(
            f"data.packing={data.packing} but the model needs packing={packing}: leave data.packing at "
            "its default (it follows the model)."
        )
    vocab, net_vocab = data.vocab_size, net.vocab_size
    if vocab > net_vocab:
        raise UserError(
            f"the tokenizer has {vocab} tokens but model.net.vocab_size={net_vocab}: set "
            f"model.net.vocab_size=null (it then takes the tokenizer's size) or >= {vocab}, or use a "
            "tokenizer with fewer tokens (data.vocab_size, data.tokenizer)."
        )
    net_nsp = bool(getattr(getattr(net, "config", None), "nsp", False))
    if packing == "masked" and net_nsp != bool(getattr(data, "nsp", False)):
        raise UserError(
            f"model.net.nsp={net_nsp} but data.nsp={data.nsp}: next-sentence prediction needs both "
            "(sentence pairs and the NSP head); set both to true or both to false."
        )
    if data.seq_len > net.n_positions:
        raise UserError(
            f"data.seq_len={data.seq_len} is longer than the model's model.net.n_positions="
            f"{net.n_positions}: lower data.seq_len or raise model.net.n_positions."
        )


class CausalLMTask(_LanguageTask):
    """Train a GPT ``net`` (``(B, T)`` ids -> ``(B, T, V)`` logits) to predict the next token.

    Batches are ``{"tokens": (B, T + 1)}``: inputs ``tokens[:, :-1]``, targets ``tokens[:, 1:]``.
    Metrics: ``train/loss``, ``val/loss`` (mean next-token cross-entropy, nats) and ``val/ppl``
    (its exponential); tokens/s come from the Throughput callback (``tokens_in_batch``).

    Args:
        net: the GPT network.
        optimizer: partial optimizer, called with the parameter groups.
        scheduler: partial schedule (a ``vitrain.tasks.optim`` schedule, e.g. ``warmup_cosine``).
    """

    packing = "causal"

    def __init__(
        self, net: nn.Module, optimizer: OptimizerFactory, scheduler: SchedulerFactory | None = None
    ) -> None:
        super().__init__(net, optimizer, scheduler)
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"])

    def forward(self, idx: Tensor) -> Tensor:
        return self.net(idx)

    def token_losses(self, tokens: Tensor) -> Tensor:
        """``tokens (B, T + 1)`` -> next-token cross-entropy ``(B * T,)`` in float32."""
        logits = self(tokens[:, :-1])
        return F.cross_entropy(logits.float().flatten(0, 1), tokens[:, 1:].flatten(), reduction="none")

    def tokens_in_batch(self, batch: dict[str, Tensor]) -> int:
        tokens = batch["tokens"]
        return tokens.shape[0] * (tokens.shape[1] - 1)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = self.token_losses(batch["tokens"]).mean()
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self.val_loss.update(self.token_losses(batch["tokens"]))
        self.log("val/loss", self.val_loss, prog_bar=True)


class MaskedLMTask(_LanguageTask):
    """Train a BERT ``net`` by masked language modelling (and next-sentence prediction).

    ``mask_prob`` of the non-special tokens of each batch are selected (80% -> [MASK], 10% ->
    random, 10% unchanged; see :func:`mask_tokens`); the loss and accuracy count the selected
    tokens only. Training masks are drawn per batch from ``(mask_seed, epoch, batch, rank)``
    (:func:`vitrain.seeding.derive_seed`, a stream apart from the network's dropout seeds);
    validation masks are fixed (``mask_seed`` and the batch index), so ``val/loss`` of the same
    weights is the same every epoch. With an NSP network and sentence-pair data
    (``data.nsp=true``) the NSP cross-entropy times ``nsp_weight`` is added to the training loss.

    Metrics: ``train/loss``, ``train/mlm_loss``, ``val/loss`` (masked-LM loss), ``val/ppl``,
    ``val/acc`` (masked-LM accuracy), and ``val/nsp_acc`` with NSP.

    Args:
        mask_prob: share of the non-special tokens selected for prediction.
        mask_seed: seed of the token masks (training: per epoch, batch and rank; validation:
            per batch, the same every epoch).
        nsp_weight: weight of the NSP loss in the training loss.
    """

    packing = "masked"

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        mask_prob: float = 0.15,
        mask_seed: int = 0,
        nsp_weight: float = 1.0,
    ) -> None:
        super().__init__(net, optimizer, scheduler)
        require_in("model.mask_prob", mask_prob, FRACTION, "the fraction of tokens masked", "BERT: 0.15")
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"])
        self.mask_prob, self.mask_seed, self.nsp_weight = mask_prob, mask_seed, nsp_weight
        self.val_acc = MeanMetric()
        self.val_nsp_acc = MeanMetric()

    def tokens_in_batch(self, batch: dict[str, Tensor]) -> int:
        return int(batch["input_ids"].numel())

    def mask(self, input_ids: Tensor, seed: int) -> tuple[Tensor, Tensor]:
        """Masked inputs and labels of a batch, fixed by ``seed`` (see :func:`mask_tokens`)."""
        if not self.special_ids:
            raise RuntimeError("MaskedLMTask needs the data's special token ids (set at setup)")
        ids = self.special_ids
        special = torch.isin(
            input_ids,
            torch.tensor([ids["pad"], ids["cls"], ids["sep"], ids["mask"]], device=input_ids.device),
        )
        generator = torch.Generator(device=input_ids.device).manual_seed(seed)
        vocab = self.net.vocab_size
        return mask_tokens(input_ids, special, vocab, ids["mask"], generator, self.mask_prob)

    def losses(self, batch: dict[str, Tensor], seed: int, hits: bool = False) -> dict[str, Tensor]:
        """Per-token MLM losses ``(N,)`` of the N selected tokens and NSP losses ``(B,)``; with
        ``hits`` (validation) also whether each prediction is right (``hits``, ``nsp_hits``: the
        argmax over the vocabulary costs as much as 2% of a small BERT's training step)."""
        inputs, labels = self.mask(batch["input_ids"], seed)
        selected = labels != IGNORE_INDEX
        # through forward (not net.encode) so that compile=true compiles all of it
        logits, nsp_logits = self.net(
            inputs, batch.get("token_type_ids"), batch.get("attention_mask"), selected
        )
        logits = logits.float()  # (N, V)
        target = labels[selected]
        out = {"mlm": F.cross_entropy(logits, target, reduction="none")}
        if hits:
            out["hits"] = (logits.argmax(dim=-1) == target).float()
        if "next_sentence_label" in batch and nsp_logits is not None:
            nsp_logits = nsp_logits.float()
            out["nsp"] = F.cross_entropy(nsp_logits, batch["next_sentence_label"], reduction="none")
            if hits:
                out["nsp_hits"] = (nsp_logits.argmax(dim=-1) == batch["next_sentence_label"]).float()
        return out

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        seed = derive_seed(
            self.mask_seed, self.current_epoch, batch_idx, self.global_rank, stream="mlm masks"
        )
        out = self.losses(batch, seed)
        mlm = out["mlm"].sum() / max(out["mlm"].numel(), 1)  # no selected token: 0, not NaN
        loss = mlm
        if "nsp" in out:
            loss = loss + self.nsp_weight * out["nsp"].mean()
            self.log("train/nsp_loss", out["nsp"].mean())
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/mlm_loss", mlm)
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        seed = derive_seed(self.mask_seed, batch_idx, self.global_rank, stream="mlm validation masks")
        out = self.losses(batch, seed, hits=True)
        if out["mlm"].numel():
            self.val_loss.update(out["mlm"])
            self.val_acc.update(out["hits"])
        self.log("val/loss", self.val_loss, prog_bar=True)
        self.log("val/acc", self.val_acc, prog_bar=True)
        if "nsp" in out:
            self.val_nsp_acc.update(out["nsp_hits"])
            self.log("val/nsp_acc", self.val_nsp_acc)
