"""Shared loader settings of the image-classification DataModules."""

from __future__ import annotations

import lightning as L
from torch.utils.data import DataLoader, Dataset

from vitrain.errors import UserError


class ImageClassificationDataModule(L.LightningDataModule):
    """Base class: subclasses set ``train_set``, ``val_set`` and ``classes`` in ``setup``.

    Batches are ``(images (B, in_chans, image_size, image_size) float, labels (B,) int64)``.
    Training batches drop the last incomplete batch (mixup/cutmix need even batches).
    """

    kind = "image_classification"
    wants_net_data_config = True  # the orchestration passes timm's data config of the network

    def __init__(
        self,
        num_classes: int,
        image_size: int,
        in_chans: int,
        batch_size: int = 64,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        net_data_config: dict | None = None,
    ) -> None:
        super().__init__()
        for key, value in (("batch_size", batch_size), ("image_size", image_size)):
            if value < 1:
                raise UserError(f"data.{key}={value}: must be a positive integer.")
        self.num_classes = num_classes
        self.image_size = image_size
        self.in_chans = in_chans
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
        self.net_data_config = net_data_config or {}
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.classes: list[str] = []

    def check_num_classes(self, found: int, where: str) -> None:
        """Fail when the data's class count differs from ``data.num_classes``."""
        if found != self.num_classes:
            raise UserError(
                f"{where} has {found} classes but data.num_classes={self.num_classes}: set "
                f"data.num_classes={found}."
            )

    def _loader(self, dataset: Dataset | None, train: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError("setup() must run before the dataloaders are requested")
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=train,
            drop_last=train,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, train=False)
