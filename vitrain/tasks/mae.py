"""Masked-autoencoder pretraining (MAE, He et al. 2021): reconstruct masked patches, no labels."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric

from vitrain.errors import UserError
from vitrain.tasks.base import OptimizerFactory, SchedulerFactory, Task


class MAETask(Task):
    """Train an MAE ``net`` (``vitrain.models.MaskedAutoencoderViT``) on images; labels unused.

    ``net(images (B, C, H, W), mask_ratio, noise)`` returns ``(loss, pred, mask)``; the loss is
    the network's own (mean squared error on the masked patches, in float32). Metrics:
    ``train/loss`` and ``val/loss``. Validation masks are fixed (seeded by the batch index), so
    ``val/loss`` of the same weights is the same in every epoch and epochs compare fairly.

    Args:
        net: the MAE network.
        optimizer: partial optimizer, called with the parameter groups (no weight decay on
            biases and norms; cls and mask tokens decayed as the reference; the fixed position
            tables are frozen).
        scheduler: partial schedule (``vitrain.tasks.optim.warmup_cosine``), called with the
            optimizer, the total optimizer steps and the steps per epoch; stepped every step.
        mask_ratio: fraction of patches masked per image; None keeps the network's own
            (``model.net.mask_ratio``).
    """

    data_kind = "image_classification"  # any image data: the labels are ignored
    monitor = "val/loss"
    monitor_mode = "min"

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerFactory,
        scheduler: SchedulerFactory | None = None,
        mask_ratio: float | None = None,
    ) -> None:
        super().__init__(net, optimizer, scheduler)
        if mask_ratio is not None and not (
            isinstance(mask_ratio, int | float) and 0 <= mask_ratio < 1 and not math.isnan(mask_ratio)
        ):
            raise UserError(f"model.mask_ratio={mask_ratio!r}: must be a number in [0, 1), or null.")
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"])
        self.mask_ratio = net.mask_ratio if mask_ratio is None else mask_ratio
        self.val_loss = MeanMetric()  # weighted by images, synced across ranks: an exact global mean

    def forward(self, images: Tensor, noise: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """``images (B, C, H, W)`` -> ``(loss (), pred (B, L, p*p*C), mask (B, L))``; ``noise
        (B, L)`` fixes the masks (default: random)."""
        return self.net(images, self.mask_ratio, noise)

    def mask_noise(self, batch_size: int, seed: int) -> Tensor:
        """Uniform noise ``(batch_size, L)`` from ``seed``: the same masks on every device."""
        generator = torch.Generator().manual_seed(seed)
        return torch.rand(batch_size, self.net.num_patches, generator=generator).to(self.device)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss, _, _ = self(batch[0])
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        images = batch[0]
        loss, _, _ = self(images, self.mask_noise(images.shape[0], seed=batch_idx))
        self.val_loss.update(loss, weight=images.shape[0])  # every image masks as many patches
        self.log("val/loss", self.val_loss, prog_bar=True)

    @torch.no_grad()
    def reconstruct(self, images: Tensor, seed: int = 0) -> tuple[Tensor, Tensor]:
        """Mask ``images (B, C, H, W)`` with masks fixed by ``seed`` and reconstruct them.

        Returns ``(masked, reconstruction)``, both ``(B, C, H, W)`` float32 in the space of the
        input (normalised like the data): ``masked`` is the input with its masked patches set to
        0 (the data mean); ``reconstruction`` keeps the visible patches of the input and fills the
        masked ones with the predictions, de-normalised with each patch's own mean and variance
        when the network was trained with ``norm_pix_loss``.
        """
        net = self.net
        latent, mask, ids_restore = net.forward_encoder(
            images, self.mask_ratio, self.mask_noise(images.shape[0], seed)
        )
        pred = net.forward_decoder(latent, ids_restore).float()  # (B, L, p*p*C)
        target = net.patchify(images.float())
        if net.norm_pix_loss:  # the inverse of forward_loss's target normalisation
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            pred = pred * (var + 1e-6) ** 0.5 + mean
        masked = mask.unsqueeze(-1).float()  # (B, L, 1), 1 = masked
        visible = target * (1 - masked)
        return net.unpatchify(visible), net.unpatchify(visible + pred * masked)
