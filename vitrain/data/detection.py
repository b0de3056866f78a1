"""What every detection DataModule shares: the sample format, padding collate and loaders.

A sample is ``(image (3, H, W) float, target)`` with ``target`` holding

* ``boxes (N, 4)`` float32: normalised cxcywh in [0, 1] relative to the (unpadded) image;
* ``labels (N,)`` int64 in ``[0, num_classes)``;
* ``iscrowd (N,)`` bool: crowd regions, kept out of the loss but given to the COCO evaluation;
* ``orig_size (2,)`` int64: (height, width) of the image as read, for boxes in its coordinates;
* ``size (2,)`` int64: (height, width) after the transforms;
* ``image_id`` int64 scalar.

Images without boxes have ``boxes`` of shape ``(0, 4)`` and ``labels`` of shape ``(0,)``.
"""

from __future__ import annotations

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from vitrain.data.base import EpochSampler
from vitrain.data.detection_transforms import IMAGENET_MEAN, IMAGENET_STD
from vitrain.errors import UserError

Batch = tuple[Tensor, Tensor, list[dict[str, Tensor]]]


def collate_detection(samples: list[tuple[Tensor, dict[str, Tensor]]]) -> Batch:
    """Pad a list of samples to one batch: ``(images (B, 3, H, W), mask (B, H, W), targets)``.

    ``H``, ``W`` are the largest height and width in the batch; images are zero-padded at the
    bottom and right (zero is the mean pixel after normalisation) and ``mask`` is True on the
    padding. ``targets`` is the list of the samples' target dicts.
    """
    height = max(image.shape[1] for image, _ in samples)
    width = max(image.shape[2] for image, _ in samples)
    channels = samples[0][0].shape[0]
    images = torch.zeros(len(samples), channels, height, width)
    mask = torch.ones(len(samples), height, width, dtype=torch.bool)
    for i, (image, _) in enumerate(samples):
        images[i, :, : image.shape[1], : image.shape[2]] = image
        mask[i, : image.shape[1], : image.shape[2]] = False
    return images, mask, [target for _, target in samples]


class DetectionDataModule(L.LightningDataModule):
    """Base class: subclasses set ``train_set``, ``val_set`` and ``classes`` in ``setup``.

    Batches are :func:`collate_detection`'s ``(images, mask, targets)``. Each rank gets its share
    of an epoch-seeded permutation (:class:`vitrain.data.base.EpochSampler`): training shards
    are equal in size, validation gives every image to exactly one rank, so the COCO evaluation
    counts each image once.
    """

    kind = "detection"
    # the normalisation of the images (per channel), to turn them back into pictures
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    def __init__(
        self,
        num_classes: int,
        batch_size: int = 2,
        num_workers: int = 0,
        pin_memory: bool = False,
        persistent_workers: bool = False,
        seed: int | None = 0,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise UserError(f"data.batch_size={batch_size}: must be a positive integer.")
        self.num_classes = num_classes
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.persistent_workers = persistent_workers and num_workers > 0
        self.seed = torch.initial_seed() % 2**31 if seed is None else seed
        self._skip_batches = 0
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

    def skip_train_batches(self, count: int) -> None:
        """Make the next training epoch start after its first ``count`` batches (resume)."""
        self._skip_batches = count

    def _loader(self, dataset: Dataset | None, train: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError("setup() must run before the dataloaders are requested")
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        sampler = EpochSampler(
            len(dataset), seed=self.seed, shuffle=train, rank=rank, world=world, even=train
        )
        if train:
            sampler.skip(self._skip_batches * self.batch_size)
            self._skip_batches = 0
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            drop_last=train,
            collate_fn=collate_detection,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
            generator=torch.Generator().manual_seed(self.seed),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, train=False)

    def predict_dataloader(self) -> DataLoader:
        raise UserError(
            "mode=predict writes class probabilities and does not support detection data; "
            "use mode=eval (COCO mAP of ckpt_path) or callbacks=detection for pictures."
        )
