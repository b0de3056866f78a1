"""MAE reconstructions: a PNG grid (original / masked / reconstruction) after validation."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
from PIL import Image
from torch import Tensor

from vitrain.errors import UserError, require_positive
from vitrain.loggers import log_images

log = logging.getLogger(__name__)


class Reconstructions(L.Callback):
    """Every ``every_n_epochs`` validation, save what the MAE makes of fixed validation images.

    The first ``num_images`` images of the validation set (always the same ones, so grids are
    comparable across epochs) go through the task's ``reconstruct(images, seed)`` with a fixed
    mask ``seed``. The grid has three rows: the original, the masked input (masked patches at
    the data mean) and the reconstruction (visible patches from the original, masked ones
    predicted; with ``norm_pix_loss`` the predictions are de-normalised with each patch's mean
    and variance). The data normalisation is undone (``mean`` / ``std``: given here, else the
    DataModule's ``mean`` / ``std``, else each original's min-max range), so the rows look like
    images; grey data gives a grey (1-channel) PNG.

    Written to ``<dirpath>/epoch<NNN>.png`` (``NNN`` the 0-based epoch, as checkpoints;
    ``dirpath`` defaults to ``<trainer.default_root_dir>/reconstructions``) on rank zero, and
    logged to the W&B / TensorBoard loggers under ``reconstructions``.

    Args:
        dirpath: folder of the PNG files.
        num_images: images per row (fewer when the validation set is smaller).
        every_n_epochs: write after every n-th validation epoch (sanity checks skipped).
        seed: seed of the masks.
        mean, std: per-channel normalisation of the images, overriding the DataModule's.
        padding: pixels between (and around) the grid cells, white.
    """

    def __init__(
        self,
        dirpath: str | None = None,
        num_images: int = 8,
        every_n_epochs: int = 1,
        seed: int = 0,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        padding: int = 2,
    ) -> None:
        require_positive("callbacks.reconstructions", num_images=num_images, every_n_epochs=every_n_epochs)
        self.dirpath = Path(dirpath) if dirpath else None
        self.num_images = num_images
        self.every_n_epochs = every_n_epochs
        self.seed = seed
        self.mean, self.std = mean, std
        self.padding = padding
        self._images: Tensor | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not callable(getattr(pl_module, "reconstruct", None)):
            raise UserError(
                f"callbacks.reconstructions needs an MAE model (model=mae_*), not "
                f"{type(pl_module).__name__}: use callbacks=default with this model."
            )
        if self.dirpath is None:
            self.dirpath = Path(trainer.default_root_dir) / "reconstructions"

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        epoch = trainer.current_epoch
        if (epoch + 1) % self.every_n_epochs:
            return
        images = self.fixed_images(trainer)
        if images is None:
            return
        modes = {module: module.training for module in pl_module.modules()}
        pl_module.eval()
        try:
            masked, reconstruction = pl_module.reconstruct(images.to(pl_module.device), seed=self.seed)
        finally:
            for module, training in modes.items():
                module.training = training
        rows = [images, masked.float().cpu(), reconstruction.float().cpu()]
        grid = image_grid(self.to_pictures(rows, trainer), padding=self.padding)
        path = self.dirpath / f"epoch{epoch:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(grid).save(path)
        log.info("Reconstructions of epoch %d: %s", epoch, path)
        caption = f"epoch {epoch}: original / masked / reconstruction"
        log_images(trainer.loggers, "reconstructions", [grid], captions=[caption], step=trainer.global_step)

    def fixed_images(self, trainer: L.Trainer) -> Tensor | None:
        """The first ``num_images`` validation images ``(N, C, H, W)``, read once and kept."""
        if self._images is None:
            loaders = trainer.val_dataloaders
            loader = loaders[0] if isinstance(loaders, list | tuple) else loaders
            dataset = getattr(loader, "dataset", None)
            if dataset is None:
                dataset = getattr(trainer.datamodule, "val_set", None)
            if dataset is None or len(dataset) == 0:
                log.warning("callbacks.reconstructions: no validation images, nothing to show")
                return None
            items = [dataset[i] for i in range(min(self.num_images, len(dataset)))]
            images = [item[0] if isinstance(item, tuple | list) else item for item in items]
            self._images = torch.stack([torch.as_tensor(image) for image in images]).float()
        return self._images

    def to_pictures(self, rows: list[Tensor], trainer: L.Trainer) -> list[Tensor]:
        """Undo the data normalisation of each row ``(N, C, H, W)``; values clamped to [0, 1]."""
        mean = self.mean if self.mean is not None else getattr(trainer.datamodule, "mean", None)
        std = self.std if self.std is not None else getattr(trainer.datamodule, "std", None)
        if mean is not None and std is not None:
            shape = (1, -1, 1, 1)
            mean_t, std_t = torch.tensor(mean).view(shape), torch.tensor(std).view(shape)
            return [(row * std_t + mean_t).clamp(0, 1) for row in rows]
        low = rows[0].amin(dim=(1, 2, 3), keepdim=True)
        high = rows[0].amax(dim=(1, 2, 3), keepdim=True)
        return [((row - low) / (high - low).clamp_min(1e-8)).clamp(0, 1) for row in rows]


def image_grid(rows: list[Tensor], padding: int = 2) -> np.ndarray:
    """Rows of images ``(N, C, H, W)`` in [0, 1] -> one uint8 picture with white ``padding``.

    The result is ``(R * (H + padding) + padding, N * (W + padding) + padding)`` for 1-channel
    images (grey) and the same with a trailing 3 (RGB) otherwise.
    """
    n, c, h, w = rows[0].shape
    if any(row.shape != rows[0].shape for row in rows):
        raise ValueError(f"image_grid: rows of different shapes {[tuple(r.shape) for r in rows]}")
    p = padding
    grid = torch.ones(c, len(rows) * (h + p) + p, n * (w + p) + p)
    for r, row in enumerate(rows):
        for i, image in enumerate(row):
            top, left = p + r * (h + p), p + i * (w + p)
            grid[:, top : top + h, left : left + w] = image
    pixels = (grid * 255).round().to(torch.uint8)
    return pixels[0].numpy() if c == 1 else pixels.permute(1, 2, 0).numpy()
