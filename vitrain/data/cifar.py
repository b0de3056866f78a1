"""CIFAR-10 / CIFAR-100 through torchvision (downloaded when online)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import Subset
from torchvision import datasets
from torchvision.transforms import v2

from vitrain.data.base import ImageClassificationDataModule
from vitrain.errors import FRACTION, UserError, require_in

CIFAR_STATS = {  # per-channel mean and std of the training images
    10: ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    100: ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}
FOLDERS = {10: "cifar-10-batches-py", 100: "cifar-100-python"}


class CIFARDataModule(ImageClassificationDataModule):
    """CIFAR-``num_classes`` (10 or 100) from ``root``; 32 px images, resized to ``image_size``.

    Training: random crop with 4 px padding and horizontal flip. With ``download`` the files
    are fetched into ``root`` when missing; offline and without the files, a clear error names
    the folder that was expected.

    ``val_fraction`` None validates on the official test images (no held-out test split). A
    fraction holds out that share of the training images (drawn with ``split_seed``) for
    validation and makes the official test images the test split, evaluated once after
    training: the "minival" of "How to train your ViT" (Steiner et al. 2021) is 2%.

    Args:
        root: the folder that holds (or receives) ``cifar-10-batches-py`` / ``cifar-100-python``.
        num_classes: 10 (CIFAR-10) or 100 (CIFAR-100).
        image_size: side the 32 px images are resized to.
        in_chans: 3 (the images are RGB).
        download: fetch the files into ``root`` when they are missing.
        val_fraction: share of the training images held out for validation (None: validate on
            the official test images).
        split_seed: seed of the draw of the held-out training images.
        mean, std: per-channel normalisation (None: CIFAR's own statistics).
    """

    def __init__(
        self,
        root: str,
        num_classes: int = 10,
        image_size: int = 32,
        in_chans: int = 3,
        download: bool = True,
        val_fraction: float | None = None,
        split_seed: int = 0,
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
        **loader_kwargs,
    ) -> None:
        super().__init__(num_classes=num_classes, image_size=image_size, in_chans=in_chans, **loader_kwargs)
        if num_classes not in CIFAR_STATS:
            raise UserError(f"data.num_classes={num_classes}: CIFAR has 10 or 100 classes.")
        if val_fraction is not None:
            require_in(
                "data.val_fraction", val_fraction, FRACTION, fix="or null: validate on the test images"
            )
        self.root = Path(root)
        self.download = download
        self.val_fraction, self.split_seed = val_fraction, split_seed
        stats = CIFAR_STATS[num_classes]
        # null: CIFAR's own statistics; released weights want their own (timm augreg: 0.5)
        self._stats = (tuple(mean or stats[0]), tuple(std or stats[1]))

    def _transform(self, train: bool) -> v2.Compose:
        mean, std = self._stats
        steps: list = [v2.ToImage()]
        if train:
            steps += [v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip()]
        if self.image_size != 32:
            steps.append(v2.Resize(self.image_size, antialias=True))
        return v2.Compose([*steps, v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])

    def eval_transform(self):
        return self._transform(train=False)

    @property
    def mean(self) -> tuple[float, ...]:
        """Per-channel mean the images are normalised with."""
        return self._stats[0]

    @property
    def std(self) -> tuple[float, ...]:
        """Per-channel standard deviation the images are normalised with."""
        return self._stats[1]

    def _dataset(self, train: bool):
        cls = datasets.CIFAR10 if self.num_classes == 10 else datasets.CIFAR100
        try:
            return cls(str(self.root), train=train, transform=self._transform(train), download=self.download)
        except (RuntimeError, OSError) as err:  # not found offline, or a failed download
            expected = self.root / FOLDERS[self.num_classes]
            raise UserError(
                f"CIFAR-{self.num_classes} not found at {expected} ({err}). Put the extracted "
                f"python-version files there, or set data.root=<folder that holds "
                f"{FOLDERS[self.num_classes]}>, or run once with internet and data.download=true."
            ) from err

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        train, official_test = self._dataset(train=True), self._dataset(train=False)
        self.classes = list(train.classes)
        if self.val_fraction is None:
            self.train_set, self.val_set = train, official_test
            return
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(self.split_seed)).tolist()
        n_val = max(1, int(round(self.val_fraction * len(train))))
        held_out = self._dataset(train=True)  # the same images with the evaluation transform
        held_out.transform = self._transform(train=False)
        self.train_set = Subset(train, order[n_val:])
        self.val_set = Subset(held_out, order[:n_val])
        self.test_set = official_test
