"""What every detection DataModule shares: the sample format, padding collate and loaders.

A sample is ``(image (3, H, W) float, target)`` with ``target`` holding

* ``boxes (N, 4)`` float32: normalised cxcywh in [0, 1] relative to the (unpadded) image;
* ``labels (N,)`` int64 in ``[0, num_classes)``;
* ``iscrowd (N,)`` bool: crowd regions, kept out of the loss but given to the COCO evaluation;
* ``area (N,)`` float32 (optional): each object's area in original pixels as the annotation file
  gives it (COCO: the segment's), for the evaluation's small / medium / large split; kept as
  read through the transforms;
* ``orig_size (2,)`` int64: (height, width) of the image as read, for boxes in its coordinates;
* ``size (2,)`` int64: (height, width) after the transforms;
* ``image_id`` int64 scalar.

Images without boxes have ``boxes`` of shape ``(0, 4)`` and ``labels`` of shape ``(0,)``.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from vitrain.data.base import ShardedDataModule
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


class DetectionDataModule(ShardedDataModule):
    """Base class: subclasses set ``train_set``, ``val_set`` and ``classes`` in ``setup``.

    Batches are :func:`collate_detection`'s ``(images, mask, targets)``. Validation gives every
    image to exactly one rank (:class:`vitrain.data.base.ShardedDataModule`), so the COCO
    evaluation counts each image once.
    """

    kind = "detection"
    # the normalisation of the images (per channel), to turn them back into pictures
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    collate_fn = staticmethod(collate_detection)

    def __init__(
        self,
        num_classes: int,
        batch_size: int = 2,
        **loader_kwargs,
    ) -> None:
        super().__init__(batch_size, **loader_kwargs)
        self.num_classes = num_classes
        self.classes: list[str] = []

    def predict_dataloader(self) -> DataLoader:
        raise UserError(
            "mode=predict writes class probabilities and does not support detection data; "
            "use mode=eval (COCO mAP of ckpt_path) or callbacks=detection for pictures."
        )
