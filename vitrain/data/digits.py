"""scikit-learn's handwritten digits (1797 8x8 grey images shipped in the package), upscaled."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch.utils.data import Dataset
from torchvision.transforms import v2

from vitrain.data.base import ImageClassificationDataModule
from vitrain.errors import UserError

# Pixel statistics of the digits images scaled to [0, 1] (values 0..16 / 16).
DIGITS_MEAN, DIGITS_STD = 0.3074, 0.3785


class TensorImageDataset(Dataset):
    """Images ``(N, C, H, W)`` float and labels ``(N,)`` held in memory, with a transform."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform=None) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[index]
        if self.transform is not None:
            image = self.transform(image)
        return image, self.labels[index]


class DigitsDataModule(ImageClassificationDataModule):
    """The embedded default: no download, 10 classes, 1 channel.

    A fixed split (a ``split_seed`` permutation of the 1797 images, independent of the
    training seed: its first ``val_fraction`` validates, the next ``test_fraction`` is the
    held-out test split, the rest trains) keeps validation and test numbers comparable across
    runs; the three splits are disjoint. Images are upscaled once with
    bilinear interpolation from 8x8 to ``image_size``; training adds small random affine
    jitter (rotation, shift, scale) when ``augment`` is true.

    Args:
        image_size: side the 8x8 images are upscaled to, pixels.
        val_fraction: share of the images that validates.
        test_fraction: share of the images held out as the test split (0: none).
        split_seed: seed of the permutation that splits the images.
        augment: random affine jitter (rotation, shift, scale) of the training images.
        num_classes: 10, the digits (None: the same).
        in_chans: 1 (the images are grey).
    """

    def __init__(
        self,
        image_size: int = 32,
        val_fraction: float = 0.2,
        test_fraction: float = 0.15,
        split_seed: int = 0,
        augment: bool = True,
        num_classes: int | None = 10,
        in_chans: int = 1,
        **loader_kwargs,
    ) -> None:
        super().__init__(num_classes=num_classes, image_size=image_size, in_chans=in_chans, **loader_kwargs)
        self.check_num_classes(10, "data=digits")
        if in_chans != 1:
            raise UserError(f"data.in_chans={in_chans}: digits images are grey, set data.in_chans=1.")
        self.hold_out(val_fraction, test_fraction, split_seed)
        self.augment = augment
        self.classes = [str(i) for i in range(10)]

    image_mode = "L"
    # the normalisation of the images (per channel), to turn them back into pictures
    mean: tuple[float, ...] = (DIGITS_MEAN,)
    std: tuple[float, ...] = (DIGITS_STD,)

    def eval_transform(self):
        """A grey image file -> ``(1, image_size, image_size)``, scaled like the digits (dark ground)."""
        return v2.Compose(
            [
                v2.ToImage(),
                v2.Resize((self.image_size, self.image_size), antialias=True),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize([DIGITS_MEAN], [DIGITS_STD]),
            ]
        )

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        digits = load_digits()
        images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
        images = F.interpolate(images, size=self.image_size, mode="bilinear", align_corners=False)
        images = (images - DIGITS_MEAN) / DIGITS_STD
        labels = torch.tensor(digits.target, dtype=torch.long)
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(self.split_seed))
        n_val = int(round(self.val_fraction * len(labels)))
        n_test = int(round(self.test_fraction * len(labels)))
        val_idx, test_idx, train_idx = order[:n_val], order[n_val : n_val + n_test], order[n_val + n_test :]
        jitter = None
        if self.augment:
            background = -DIGITS_MEAN / DIGITS_STD  # a normalised 0 pixel
            jitter = v2.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1), fill=background)
        self.train_set = TensorImageDataset(images[train_idx], labels[train_idx], jitter)
        self.val_set = TensorImageDataset(images[val_idx], labels[val_idx])
        if n_test:
            self.test_set = TensorImageDataset(images[test_idx], labels[test_idx])
